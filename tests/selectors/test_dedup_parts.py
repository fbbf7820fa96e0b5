"""The building blocks of run_dedup against plain-Python references."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.selectors.dedup import HashFamily, shingle_set
from curation.selectors.dedup.clean import clean_batch
from curation.selectors.dedup.components import find, union_pairs
from curation.selectors.dedup.exact import ExactIndex
from curation.selectors.dedup.lsh import bucket_pairs, union_buckets, unique_pairs
from curation.selectors.dedup.verify import FingerprintStore

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def test_exact_index_matches_a_dict_across_growth():
    rng = np.random.default_rng(0)
    index, reference = ExactIndex(capacity=16), {}
    for _ in range(5):  # several batches, forcing rehashes
        n = 3000
        scope = rng.integers(0, 3, size=n).astype(np.int32)
        digest = rng.integers(0, 400, size=n).astype(np.uint64)
        lo, hi = digest * np.uint64(0x9E3779B97F4A7C15), digest ^ np.uint64(7)
        eligible = rng.random(n) > 0.1
        got = index.assign(scope, lo, hi, eligible)
        first = index.docs - n
        for t in range(n):
            if not eligible[t]:
                assert got[t] == -1
                continue
            key = (int(scope[t]), int(lo[t]), int(hi[t]))
            assert got[t] == reference.setdefault(key, first + t)


def test_buckets_join_only_members_of_the_same_scope():
    keys = np.array([3, 3, 3, 3, 9, 9], dtype=np.uint64)  # equal keys: one bucket
    nodes = np.array([10, 11, 12, 13, 14, 15], dtype=np.int64)
    scope = np.array([0, 1, 0, 1, 2, 2], dtype=np.int32)  # a clash across scopes
    parent = np.arange(16, dtype=np.int64)
    union_buckets(keys, nodes, scope, parent)
    roots = [find(parent, x) for x in range(10, 16)]
    assert roots == [10, 11, 10, 11, 14, 14]
    u, v = bucket_pairs(keys, nodes, scope, max_bucket=8)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(10, 12), (11, 13), (14, 15)]


def test_large_buckets_give_star_pairs_and_unique_pairs_dedups():
    keys = np.zeros(5, dtype=np.uint64)
    nodes = np.arange(5, dtype=np.int64)
    scope = np.zeros(5, dtype=np.int32)
    all_pairs = bucket_pairs(keys, nodes, scope, max_bucket=5)
    star = bucket_pairs(keys, nodes, scope, max_bucket=4)
    assert len(all_pairs[0]) == 10 and sorted(star[1].tolist()) == [1, 2, 3, 4]
    u, v = unique_pairs([all_pairs[0], star[0]], [all_pairs[1], star[1]])
    assert len(u) == 10 and np.all(u < v)
    parent = np.arange(5, dtype=np.int64)
    union_pairs(parent, star[0], star[1])
    assert {find(parent, x) for x in range(5)} == {0}


def test_fingerprint_jaccard_equals_python_sets(tmp_path):
    texts = [(STDLIB / name).read_text(encoding="utf-8")[:3000] for name in ("textwrap.py", "bisect.py")]
    texts += [texts[0][:2500] + texts[1][:500], texts[0][100:], "short"]
    batch = clean_batch(pa.array(texts))
    store = FingerprintStore(tmp_path / "sets.bin")
    store.add(batch, np.array([3, 1, 0]), np.array([103, 101, 100]), HashFamily.from_seed(1, 16, 13))
    store.add(batch, np.array([2, 4]), np.array([102, 104]), HashFamily.from_seed(1, 16, 13))
    u = np.array([100, 100, 100, 101, 102, 100])
    v = np.array([101, 102, 103, 102, 104, 100])
    got = store.jaccard(u, v)
    for (a, b), value in zip(zip(u - 100, v - 100, strict=True), got, strict=True):
        x, y = shingle_set(texts[a]), shingle_set(texts[b])
        assert value == len(x & y) / len(x | y)
