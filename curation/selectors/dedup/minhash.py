"""MinHash signatures of character n-gram sets, and LSH band hashes.

Hash family (all arithmetic mod 2**64):

1. Shingle fingerprint. Each window of `ngram` code points c_0..c_{n-1} gets
   the polynomial P = sum c_j * B**(n-1-j) with a random odd base B, updated in
   O(1) per step as the window rolls, then f = fmix64(P ^ salt) (Murmur3's
   finaliser). A text shorter than `ngram` has one shingle, the whole text.
2. Permutation k maps the top 32 bits x of f to h_k(x) = ((a_k * x + b_k)
   mod 2**64) >> 32 with a_k, b_k uniform 64-bit values drawn from the seed.
   This is Dietzfelbinger's multiply-add-shift scheme, which is 2-independent
   for 32-bit keys. The signature value k is min over shingles of h_k.

Because a minimum ignores repeats, the signature is that of the shingle SET.

Speed, none of which changes a signature:
- Shifting is monotone, so min over x of (h >> 32) = (min over x of h) >> 32:
  the minima keep the full 64-bit values and shift once at the end.
- A direct-mapped cache of recent keys (sized to the document, up to 64K)
  skips most repeated shingles; what it misses only costs time.
- Each document is read as four contiguous stretches rolled side by side,
  so four independent multiply chains keep the core busy, and every four
  new keys are folded into the minima at once (one load and store of the
  minima per four keys; the scalar hashing and the AVX-512 folding overlap).
- Documents are handed to threads longest first, so one long document does
  not finish alone at the end of a batch.
Signatures are uint32; band t hashes rows [t*r, (t+1)*r) to one uint64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from .clean import CleanBatch
from .hashing import fmix64

_U32 = np.uint64(32)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # minima hold unshifted 64-bit values
_CACHE_MIN, _CACHE_MAX = 1024, 1 << 16
_LANE_MIN = 16  # documents with fewer shingles per lane are rolled in one stretch
_BAND_SALT = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class HashFamily:
    """Everything drawn from the seed: shingle hashing and the permutations."""

    ngram: int
    base: np.uint64
    base_pow: np.uint64  # base ** ngram, to drop the char leaving the window
    salt: np.uint64
    a: np.ndarray  # uint64, one multiplier per permutation
    b: np.ndarray  # uint64, one offset per permutation
    band_seed: np.uint64

    @classmethod
    def from_seed(cls, seed: int, num_perm: int, ngram: int) -> HashFamily:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D696E68]))
        words = rng.integers(0, 2**64, size=3 + 2 * num_perm, dtype=np.uint64, endpoint=False)
        base = words[0] | np.uint64(1)
        return cls(
            ngram=ngram,
            base=base,
            base_pow=_power(base, ngram),
            salt=words[1],
            a=words[3 : 3 + num_perm].copy(),
            b=words[3 + num_perm :].copy(),
            band_seed=words[2],
        )

    @property
    def num_perm(self) -> int:
        return int(self.a.size)


def _power(base: np.uint64, n: int) -> np.uint64:
    return np.uint64(pow(int(base), n, 2**64))


def signatures(batch: CleanBatch, docs: np.ndarray, family: HashFamily) -> np.ndarray:
    """MinHash signatures (len(docs) x num_perm, uint32) of the chosen documents."""
    docs = np.ascontiguousarray(docs, dtype=np.int64)
    out = np.empty((docs.size, family.num_perm), dtype=np.uint32)
    if docs.size:
        rows = np.argsort(-batch.lengths[docs], kind="stable")  # longest first
        _signature_kernel(
            batch.codepoints, batch.starts, batch.lengths, docs[rows], rows, family.ngram,
            family.base, family.base_pow, family.salt, family.a, family.b, out,
        )  # fmt: skip
    return out


def band_hashes(sigs: np.ndarray, bands: int, rows: int, family: HashFamily) -> np.ndarray:
    """One uint64 per (document, band): a hash of the band's `rows` signature values."""
    if sigs.shape[1] < bands * rows:
        raise ValueError(f"signatures have {sigs.shape[1]} values, need {bands * rows}")
    out = np.empty((sigs.shape[0], bands), dtype=np.uint64)
    _band_kernel(np.ascontiguousarray(sigs), rows, family.band_seed, out)
    return out


def fingerprint_sets(batch: CleanBatch, docs: np.ndarray, family: HashFamily):
    """Sorted distinct 64-bit shingle fingerprints of each chosen document, as one
    flat array and offsets: document t owns flat[offsets[t]:offsets[t+1]]."""
    docs = np.ascontiguousarray(docs, dtype=np.int64)
    bounds = np.maximum(batch.lengths[docs] - family.ngram + 1, 1)
    slots = np.zeros(docs.size + 1, dtype=np.int64)
    np.cumsum(bounds, out=slots[1:])
    flat = np.empty(int(slots[-1]), dtype=np.uint64)
    counts = np.empty(docs.size, dtype=np.int64)
    _fingerprint_sets_kernel(
        batch.codepoints, batch.starts, batch.lengths, docs, slots, family.ngram,
        family.base, family.base_pow, family.salt, flat, counts,
    )  # fmt: skip
    offsets = np.zeros(docs.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _compact(flat, slots, counts, offsets), offsets


def shingle_fingerprints(batch: CleanBatch, doc: int, family: HashFamily) -> np.ndarray:
    """Sorted distinct 64-bit shingle fingerprints of one document (for exact Jaccard)."""
    flat, _ = fingerprint_sets(batch, np.array([doc]), family)
    return flat


def signature_of_fingerprints(fingerprints: np.ndarray, family: HashFamily) -> np.ndarray:
    """The MinHash signature of a set given by its 64-bit fingerprints (used by tests)."""
    out = np.empty(family.num_perm, dtype=np.uint64)
    _min_over(np.ascontiguousarray(fingerprints, dtype=np.uint64), family.a, family.b, out)
    return (out >> _U32).astype(np.uint32)


@nb.njit(cache=True, inline="always")
def _fold1(x, a, b, mins):
    for k in range(a.size):
        mins[k] = min(mins[k], a[k] * x + b[k])


@nb.njit(cache=True, inline="always")
def _fold4_128(x0, x1, x2, x3, a, b, mins):
    # A literal trip count lets LLVM unroll into whole AVX registers.
    for k in range(128):
        ak, bk = a[k], b[k]
        v = min(ak * x0 + bk, ak * x1 + bk)
        w = min(ak * x2 + bk, ak * x3 + bk)
        mins[k] = min(mins[k], min(v, w))


@nb.njit(cache=True, inline="always")
def _fold4_any(x0, x1, x2, x3, a, b, mins):
    for k in range(a.size):
        ak, bk = a[k], b[k]
        v = min(ak * x0 + bk, ak * x1 + bk)
        w = min(ak * x2 + bk, ak * x3 + bk)
        mins[k] = min(mins[k], min(v, w))


@nb.njit(cache=True, inline="always")
def _fold4(keys, a, b, mins):
    """Fold keys[0:4] into the minima; four keys per sweep of the minima."""
    if a.size == 128:
        _fold4_128(keys[0], keys[1], keys[2], keys[3], a, b, mins)
    else:
        _fold4_any(keys[0], keys[1], keys[2], keys[3], a, b, mins)


@nb.njit(cache=True)
def _fold_many(xs, count, a, b, mins):
    """mins[k] = min(mins[k], a[k] * x + b[k]) over xs[:count] (unshifted)."""
    n4 = count - count % 4
    for i in range(0, n4, 4):
        _fold4(xs[i : i + 4], a, b, mins)
    for i in range(n4, count):
        _fold1(xs[i], a, b, mins)


@nb.njit(cache=True)
def _min_over(fingerprints, a, b, mins):
    mins[:] = _EMPTY
    xs = fingerprints >> _U32
    _fold_many(xs, xs.size, a, b, mins)


@nb.njit(cache=True, parallel=True)
def _fingerprint_sets_kernel(cps, starts, lengths, docs, slots, ngram, base, base_pow, salt,
                             flat, counts):  # fmt: skip
    for t in nb.prange(docs.size):
        d = docs[t]
        start, n, o = starts[d], lengths[d], slots[t]
        width = min(ngram, n)
        p = np.uint64(0)
        j = 0
        for i in range(n):
            p = p * base + np.uint64(cps[start + i])
            if i >= ngram:
                p -= np.uint64(cps[start + i - ngram]) * base_pow
            if i >= width - 1:
                flat[o + j] = fmix64(p ^ salt)
                j += 1
        if n == 0:
            flat[o] = fmix64(salt)
            j = 1
        flat[o : o + j] = np.sort(flat[o : o + j])
        m = 0
        for i in range(j):
            if i == 0 or flat[o + i] != flat[o + m - 1]:
                flat[o + m] = flat[o + i]
                m += 1
        counts[t] = m


@nb.njit(cache=True)
def _compact(flat, slots, counts, offsets):
    out = np.empty(offsets[-1], dtype=np.uint64)
    for t in range(counts.size):
        out[offsets[t] : offsets[t + 1]] = flat[slots[t] : slots[t] + counts[t]]
    return out


@nb.njit(cache=True, inline="always")
def _window(cps, at, width, base):
    """The polynomial of the `width` code points starting at `at`."""
    p = np.uint64(0)
    for i in range(at, at + width):
        p = p * base + np.uint64(cps[i])
    return p


@nb.njit(cache=True, inline="always")
def _push(p, salt, cache, mask, keys, count):
    """Append the shingle's key unless the cache saw it last in its slot (no branch)."""
    x = fmix64(p ^ salt) >> _U32
    slot = x & mask
    keys[count] = x
    fresh = cache[slot] != np.uint32(x)
    cache[slot] = np.uint32(x)
    return count + fresh


@nb.njit(cache=True, inline="always")
def _roll(p, cps, leaving, entering, base, base_pow):
    return p * base + np.uint64(cps[entering]) - np.uint64(cps[leaving]) * base_pow


@nb.njit(cache=True, parallel=True)
def _signature_kernel(cps, starts, lengths, docs, rows, ngram, base, base_pow, salt, a, b, out):
    for t in nb.prange(docs.size):
        d = docs[t]
        start, n = starts[d], lengths[d]
        mins = np.full(a.size, _EMPTY, dtype=np.uint64)
        size = _CACHE_MIN
        while size < min(n, _CACHE_MAX):
            size *= 2
        cache = np.arange(size, dtype=np.uint32) ^ np.uint32(1)  # slot s never holds a key of slot s
        mask = np.uint64(size - 1)
        keys = np.empty(8, dtype=np.uint64)
        count = 0
        width = min(ngram, n)
        shingles = n - width + 1 if n > 0 else 0
        q = shingles // 4 if shingles // 4 >= _LANE_MIN else 0
        # Lanes 0-2 take q shingles each, lane 3 the rest; each starts at its first window.
        s0, s1, s2, s3 = start, start + q, start + 2 * q, start + 3 * q
        p0, p1 = _window(cps, s0, width, base), _window(cps, s1, width, base)
        p2, p3 = _window(cps, s2, width, base), _window(cps, s3, width, base)
        last = start + n  # one past the document
        for j in range(q):
            count = _push(p0, salt, cache, mask, keys, count)
            count = _push(p1, salt, cache, mask, keys, count)
            count = _push(p2, salt, cache, mask, keys, count)
            count = _push(p3, salt, cache, mask, keys, count)
            if count >= 4:
                _fold4(keys, a, b, mins)
                keys[0], keys[1], keys[2] = keys[4], keys[5], keys[6]
                count -= 4
            p0 = _roll(p0, cps, s0 + j, s0 + j + width, base, base_pow)
            p1 = _roll(p1, cps, s1 + j, s1 + j + width, base, base_pow)
            p2 = _roll(p2, cps, s2 + j, s2 + j + width, base, base_pow)
            if s3 + j + width < last:
                p3 = _roll(p3, cps, s3 + j, s3 + j + width, base, base_pow)
        for j in range(q, shingles - 3 * q):
            count = _push(p3, salt, cache, mask, keys, count)
            if count >= 4:
                _fold4(keys, a, b, mins)
                count = 0
            if s3 + j + width < last:
                p3 = _roll(p3, cps, s3 + j, s3 + j + width, base, base_pow)
        if n == 0:
            keys[count] = fmix64(salt) >> _U32
            count += 1
        _fold_many(keys, count, a, b, mins)
        for k in range(a.size):
            out[rows[t], k] = np.uint32(mins[k] >> _U32)


@nb.njit(cache=True, parallel=True)
def _band_kernel(sigs, rows, seed, out):
    bands = out.shape[1]
    for i in nb.prange(sigs.shape[0]):
        for t in range(bands):
            h = fmix64(seed + np.uint64(t) * _BAND_SALT)
            for r in range(t * rows, (t + 1) * rows):
                h = fmix64(h ^ np.uint64(sigs[i, r]))
            out[i, t] = h
