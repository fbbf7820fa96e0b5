"""Small 64-bit hash building blocks shared by the kernels.

All arithmetic is on uint64 and wraps modulo 2**64. Constants are np.uint64
globals so numba never promotes a mixed int/uint expression to float.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_K1 = np.uint64(0x87C37B91114253D5)
_K2 = np.uint64(0x4CF5AD432745937F)
_K3 = np.uint64(0x52DCE729)
_K4 = np.uint64(0x38495AB5)
_S31 = np.uint64(31)
_S33 = np.uint64(33)
_S27 = np.uint64(27)
_S37 = np.uint64(37)
_FIVE = np.uint64(5)

FP_SEED_A = np.uint64(0x243F6A8885A308D3)  # digits of pi: arbitrary, fixed
FP_SEED_B = np.uint64(0x13198A2E03707344)


@nb.njit(cache=True, inline="always")
def fmix64(k):
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    k ^= k >> _S33
    k *= _C1
    k ^= k >> _S33
    k *= _C2
    k ^= k >> _S33
    return k


@nb.njit(cache=True, inline="always")
def mix_step(h, c):
    """Fold one value into lane A of the content fingerprint (Murmur3-style round)."""
    c *= _K1
    c = (c << _S31) | (c >> _S33)
    c *= _K2
    h ^= c
    h = (h << _S27) | (h >> _S37)
    return h * _FIVE + _K3


@nb.njit(cache=True, inline="always")
def mix_step_b(h, c):
    """Lane B: the same round with the multipliers swapped and another offset."""
    c *= _K2
    c = (c << _S31) | (c >> _S33)
    c *= _K1
    h ^= c
    h = (h << _S31) | (h >> _S33)
    return h * _FIVE + _K4
