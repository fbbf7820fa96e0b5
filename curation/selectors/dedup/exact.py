"""Exact-duplicate groups: an open-addressing table keyed by (scope, 128-bit digest).

Every document that passes the short filter is looked up by its scope (its
source in local mode, 0 in global mode) and the fingerprint of its cleaned
text. The first document seen with a key becomes the group's "owner": only
owners get a MinHash signature, since the other members have the very same
shingle set. The table stores document indices and compares full keys, so
two different texts are never merged unless all 128 bits agree.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .hashing import fmix64

_EMPTY = -1


class ExactIndex:
    """Maps (scope, digest) to the index of the first document seen with it."""

    def __init__(self, capacity: int = 1 << 12):
        self.slots = np.full(capacity, _EMPTY, dtype=np.int64)
        self.scope = np.zeros(0, dtype=np.int32)  # per document, grown as we go
        self.lo = np.zeros(0, dtype=np.uint64)
        self.hi = np.zeros(0, dtype=np.uint64)
        self.used = 0
        self.docs = 0

    def assign(self, scope: np.ndarray, lo: np.ndarray, hi: np.ndarray, eligible: np.ndarray):
        """Owners for the next len(scope) documents; -1 where not eligible (too short)."""
        n = scope.size
        first = self.docs
        self._append(scope, lo, hi)
        need = self.used + int(eligible.sum())
        if 2 * need > self.slots.size:
            capacity = self.slots.size
            while 2 * need > capacity:
                capacity *= 2
            self.slots = _rehash(self.slots, capacity, self.scope, self.lo, self.hi)
        owners = np.empty(n, dtype=np.int64)
        self.used += _assign(
            self.slots, self.scope, self.lo, self.hi, first, eligible.astype(np.bool_), owners
        )
        return owners

    def _append(self, scope, lo, hi) -> None:
        # Digests live in document order so the table only stores indices.
        total = self.docs + scope.size
        if total > self.scope.size:
            capacity = max(total, 2 * self.scope.size, 1024)
            self.scope = _grow(self.scope, capacity)
            self.lo = _grow(self.lo, capacity)
            self.hi = _grow(self.hi, capacity)
        self.scope[self.docs : total] = scope
        self.lo[self.docs : total] = lo
        self.hi[self.docs : total] = hi
        self.docs = total


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    out = np.empty(capacity, dtype=array.dtype)
    out[: array.size] = array
    return out


@nb.njit(cache=True, inline="always")
def _home(scope, lo, mask):
    return np.int64(fmix64(lo ^ (np.uint64(scope) * np.uint64(0x9E3779B97F4A7C15))) & mask)


@nb.njit(cache=True)
def _assign(slots, scope, lo, hi, first, eligible, owners):
    mask = np.uint64(slots.size - 1)
    added = 0
    for t in range(owners.size):
        d = first + t
        if not eligible[t]:
            owners[t] = -1
            continue
        s = _home(scope[d], lo[d], mask)
        while True:
            o = slots[s]
            if o == _EMPTY:
                slots[s] = d
                owners[t] = d
                added += 1
                break
            if lo[o] == lo[d] and hi[o] == hi[d] and scope[o] == scope[d]:
                owners[t] = o
                break
            s = (s + 1) & np.int64(mask)
    return added


@nb.njit(cache=True)
def _rehash(slots, capacity, scope, lo, hi):
    out = np.full(capacity, _EMPTY, dtype=np.int64)
    mask = np.uint64(capacity - 1)
    for o in slots:
        if o == _EMPTY:
            continue
        s = _home(scope[o], lo[o], mask)
        while out[s] != _EMPTY:
            s = (s + 1) & np.int64(mask)
        out[s] = o
    return out
