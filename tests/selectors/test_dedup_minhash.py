"""MinHash and LSH: the kernels compute the MinHash of the shingle SET, the
estimator is unbiased, and bands collide as 1 - (1 - s**r)**b predicts."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.selectors.dedup import HashFamily, band_hashes, signatures
from curation.selectors.dedup.clean import clean_batch
from curation.selectors.dedup.minhash import shingle_fingerprints, signature_of_fingerprints

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FAMILY = HashFamily.from_seed(42, 128, 13)


def _texts() -> list[str]:
    names = ["textwrap.py", "fractions.py", "bisect.py", "colorsys.py", "this.py", "keyword.py"]
    texts = [(STDLIB / name).read_text(encoding="utf-8") for name in names]
    return [*texts, "tiny", ""]


def test_kernel_signature_is_minhash_of_the_fingerprint_set():
    texts = _texts()
    batch = clean_batch(pa.array(texts))
    sigs = signatures(batch, np.arange(len(texts)), FAMILY)
    for i in range(len(texts)):
        expected = signature_of_fingerprints(shingle_fingerprints(batch, i, FAMILY), FAMILY)
        np.testing.assert_array_equal(sigs[i], expected)


def test_signature_ignores_order_and_repeats_of_shingles():
    rng = np.random.default_rng(1)
    items = rng.integers(0, 2**64, size=300, dtype=np.uint64)
    shuffled = np.concatenate([rng.permutation(items), items[:50]])
    np.testing.assert_array_equal(
        signature_of_fingerprints(items, FAMILY), signature_of_fingerprints(shuffled, FAMILY)
    )


def test_repeated_text_has_the_signature_of_its_shingle_set():
    unit = (STDLIB / "this.py").read_text(encoding="utf-8")[:400]
    batch = clean_batch(pa.array([unit + " " + unit, unit + " " + unit + " " + unit]))
    sigs = signatures(batch, np.arange(2), FAMILY)
    np.testing.assert_array_equal(sigs[0], sigs[1])  # the same 13-gram set


def test_seed_changes_the_family():
    items = np.arange(1, 200, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    other = HashFamily.from_seed(7, 128, 13)
    assert not np.array_equal(
        signature_of_fingerprints(items, FAMILY), signature_of_fingerprints(items, other)
    )


def _pairs_with_jaccard(rng, similarity: float, union: int, count: int):
    shared = round(similarity * union)
    own = (union - shared) // 2
    for _ in range(count):
        items = rng.integers(0, 2**64, size=shared + 2 * own, dtype=np.uint64)
        common = items[:shared]
        yield (
            np.concatenate([common, items[shared : shared + own]]),
            np.concatenate([common, items[shared + own :]]),
            shared / (shared + 2 * own),
        )


@pytest.mark.parametrize("similarity", [0.5, 0.7, 0.8, 0.9])
def test_lsh_collision_rate_matches_the_formula(similarity):
    rng = np.random.default_rng(int(similarity * 100))
    trials, agree, hits, exact = 1500, 0.0, 0, []
    for a, b, s in _pairs_with_jaccard(rng, similarity, union=400, count=trials):
        sa, sb = signature_of_fingerprints(a, FAMILY), signature_of_fingerprints(b, FAMILY)
        agree += float(np.mean(sa == sb))
        ba, bb = band_hashes(np.stack([sa, sb]), 9, 13, FAMILY)
        hits += bool(np.any(ba == bb))
        exact.append(s)
    s = float(np.mean(exact))
    expected = 1 - (1 - s**13) ** 9
    rate = hits / trials
    sd = np.sqrt(expected * (1 - expected) / trials)
    assert abs(rate - expected) < 4 * sd + 0.01, (rate, expected)
    # Each of the 128 values agrees with probability s: the estimator is unbiased.
    assert abs(agree / trials - s) < 0.01


def test_band_hash_depends_only_on_its_rows():
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 2**32, size=(1, 128), dtype=np.uint32)
    changed = sig.copy()
    changed[0, 20] ^= 1  # row 20 is in band 1 (rows 13..25)
    a, b = band_hashes(np.concatenate([sig, changed]), 9, 13, FAMILY)
    assert [bool(x) for x in a == b] == [True, False] + [True] * 7
    changed[0, 120] ^= 1  # beyond bands * rows = 117: unused
    np.testing.assert_array_equal(band_hashes(changed, 9, 13, FAMILY)[0], b)


def _numpy_signature(fingerprints: np.ndarray, family: HashFamily) -> np.ndarray:
    """The recipe's formula written out in numpy, independent of the kernels:
    value k = min over shingles of ((a_k * x + b_k) mod 2**64) >> 32, x = f >> 32."""
    x = (fingerprints >> np.uint64(32))[None, :]
    with np.errstate(over="ignore"):
        h = (family.a[:, None] * x + family.b[:, None]) >> np.uint64(32)
    return h.min(axis=1).astype(np.uint32)


@pytest.mark.parametrize("num_perm", [128, 20])
def test_kernel_equals_the_formula_at_every_length(num_perm):
    # Lengths around the four-lane split (4 x 16 shingles), the cache sizes
    # (1024 up to 64K slots) and a document longer than the largest cache.
    family = HashFamily.from_seed(5, num_perm, 13)
    source = " ".join(_texts()[:4]) * 3
    lengths = [0, 1, 12, 13, 14, 50, 75, 76, 77, 78, 79, 80, 140, 1023, 1025, 5000, 70_000, 140_000]
    texts = [source[:n] for n in lengths] + ["abcdefghijklmnop" * 9000]  # repeats: cache hits
    batch = clean_batch(pa.array(texts))
    sigs = signatures(batch, np.arange(len(texts)), family)
    for i in range(len(texts)):
        expected = _numpy_signature(shingle_fingerprints(batch, i, family), family)
        np.testing.assert_array_equal(sigs[i], expected, err_msg=f"text {i}, {len(texts[i])} chars")


def test_signatures_follow_the_order_asked_for():
    texts = _texts()
    batch = clean_batch(pa.array(texts))
    order = np.array([3, 0, 7, 5, 1])
    np.testing.assert_array_equal(
        signatures(batch, order, FAMILY), signatures(batch, np.arange(len(texts)), FAMILY)[order]
    )
