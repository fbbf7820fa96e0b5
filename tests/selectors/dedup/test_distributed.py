"""Distributed dedup without Ray: its pieces, and the whole algorithm on the local
engine's frames against the streaming `run_dedup`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.engine import LocalEngine
from curation.selectors.dedup import DedupConfig, dedup_distributed, dedup_documents
from curation.selectors.dedup import distributed as ops
from curation.selectors.dedup.clean import clean_batch
from curation.selectors.dedup.minhash import HashFamily, band_hashes, signatures
from curation.storage import Dataset
from curation.storage.ranges import file_spans, plan_ranges, read_rows


def components_of(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest node of each node's component (scipy as the reference)."""
    graph = coo_matrix((np.ones(u.size), (u, v)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, n)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


def star_labels(n: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, int]:
    centres, leaves, rounds = ops.star_components(u, v)
    labels = np.arange(n)
    labels[leaves] = centres
    return labels, rounds


@pytest.mark.parametrize("seed", range(6))
def test_star_rounds_find_the_components_of_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = 400
    edges = int(rng.integers(50, 600))
    u, v = rng.integers(0, n, edges), rng.integers(0, n, edges)
    labels, _ = star_labels(n, u, v)
    assert np.array_equal(labels, components_of(n, u, v))


def test_star_rounds_on_a_long_shuffled_chain():
    # The worst shape for label propagation: a path whose node numbers are shuffled.
    rng = np.random.default_rng(1)
    n = 5000
    path = rng.permutation(n)
    labels, rounds = star_labels(n, path[:-1], path[1:])
    assert np.all(labels == 0)
    assert rounds < 40  # logarithmic-ish rounds, not one per link


def test_converged_edges_are_stars_around_the_smallest_node():
    u = np.array([5, 6, 7, 1, 9])
    v = np.array([6, 7, 8, 2, 1])
    centres, leaves, _ = ops.star_components(u, v)
    pairs = sorted(zip(leaves.tolist(), centres.tolist(), strict=True))
    assert pairs == [(2, 1), (6, 5), (7, 5), (8, 5), (9, 1)]


def test_bucket_edges_star_each_bucket_and_keep_bands_and_scopes_apart():
    table = pa.table(
        {
            "band": pa.array([0, 0, 0, 1, 0, 0], pa.int8()),
            "scope": pa.array([0, 0, 0, 0, 7, 0], pa.int64()),
            "hash": pa.array([5, 5, 5, 5, 5, 6], pa.uint64()),
            "node": pa.array([9, 3, 4, 8, 1, 2], pa.int64()),
        }
    )
    edges = ops.bucket_edges(table)
    # bucket (band 0, scope 0, hash 5) = {3, 4, 9}: star around 3; node 8 (band 1)
    # and node 1 (scope 7) and node 2 (other hash) are alone
    assert sorted(zip(edges["u"].to_pylist(), edges["v"].to_pylist(), strict=True)) == [(3, 4), (3, 9)]


def test_exact_edges_link_members_to_the_first_row():
    table = pa.table(
        {
            "row": pa.array([10, 2, 7, 4], pa.int64()),
            "scope": pa.array([0, 0, 0, 1], pa.int64()),
            "lo": pa.array([1, 1, 1, 1], pa.uint64()),
            "hi": pa.array([2, 2, 3, 2], pa.uint64()),
        }
    )
    edges = ops.exact_edges(table)
    assert list(zip(edges["u"].to_pylist(), edges["v"].to_pylist(), strict=True)) == [(2, 10)]


def test_signature_rows_match_the_library_kernels(small_corpus):
    data = Dataset.open(small_corpus)
    spans = file_spans(data)
    table = read_rows(spans, 900, 1300, ["id", "source", "text"])  # crosses a file boundary
    config = DedupConfig(mode="local")
    rows = ops.signature_rows(table, 900, config)
    assert rows["row"].to_pylist() == list(range(900, 1300))
    assert rows["id"].to_pylist() == data.read_table(["id"]).column("id").to_pylist()[900:1300]
    cleaned = clean_batch(table["text"])
    eligible = cleaned.short_lengths(config.short_count) >= config.min_chars
    assert rows["eligible"].to_pylist() == eligible.tolist()
    family = HashFamily.from_seed(config.seed, config.num_perm, config.ngram)
    sig = np.flatnonzero(rows["sig"].to_numpy(zero_copy_only=False))
    assert sig.size > 100
    expected = band_hashes(signatures(cleaned, sig, family), config.bands, config.rows, family)
    got = np.stack([rows[f"b{t}"].to_numpy()[sig] for t in range(config.bands)], axis=1)
    assert np.array_equal(got, expected)
    # local mode: the scope is the source's stable code; global mode: one scope
    assert rows["scope"].to_pylist() == [ops.source_scope(s) for s in table["source"].to_pylist()]
    assert set(ops.signature_rows(table, 900, DedupConfig())["scope"].to_pylist()) == {0}


def test_row_ranges_cover_the_dataset_once_and_respect_files_and_alignment(small_corpus):
    data = Dataset.open(small_corpus)
    spans = file_spans(data)
    ranges = plan_ranges(spans, 700, align=256)
    covered = np.concatenate([np.arange(r.start, r.stop) for r in ranges])
    assert np.array_equal(covered, np.arange(data.rows))
    for r in ranges:
        span = next(s for s in spans if s.first <= r.start < s.first + s.rows)
        assert r.stop <= span.first + span.rows
        assert (r.start - span.first) % 256 == 0
    whole = data.read_table(["id"]).column("id").to_pylist()
    assert read_rows(spans, 1500, 2700, ["id"]).column("id").to_pylist() == whole[1500:2700]


@pytest.mark.parametrize(
    "config",
    [DedupConfig(), DedupConfig(mode="local", source_priority=("docstrings", "modules"))],
    ids=["global", "local"],
)
def test_the_distributed_algorithm_on_local_frames_decides_as_run_dedup(corpus, config, tmp_path):
    engine = LocalEngine()
    streamed = dedup_documents(corpus, config, str(tmp_path), None, engine)
    # star rounds until the edges are stars, not union-find on the driver
    run = dedup_distributed(corpus, config, engine, local_edges=0)
    assert run.rounds >= 2
    assert run.decisions.equals(streamed)
    reasons = set(streamed.column("reason").to_pylist())
    assert {"too_short", "exact_duplicate", "near_duplicate", "unique", "representative"} <= reasons
