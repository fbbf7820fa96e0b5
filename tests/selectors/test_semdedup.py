"""SemDeDup: planted near-copies go, the target fraction is met, keep rules order the survivors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.embeddings import HashedEncoder, KMeansConfig, assign, fit_kmeans
from curation.selectors.semdedup import (
    SemDeDup,
    SemDeDupConfig,
    keep_order,
    max_similarity_to_earlier,
    threshold_for_fraction,
)
from curation.storage.decisions import DECISION_SCHEMA


def near_copy(text: str, rng: np.random.Generator) -> str:
    """The same docstring with one word dropped and a note appended."""
    words = text.split()
    del words[int(rng.integers(len(words)))]
    return " ".join(words) + " (copied)"


@pytest.fixture(scope="module")
def corpus():
    from tests.conftest import stdlib_docstrings

    texts = [t for t in stdlib_docstrings(400) if len(t) > 250][:150]
    rng = np.random.default_rng(0)
    planted = list(range(0, 150, 5))  # 30 originals get a near-copy at the end
    all_texts = texts + [near_copy(texts[i], rng) for i in planted]
    x = HashedEncoder().encode(all_texts)
    labels, distance = assign(x, fit_kmeans(x, 6, KMeansConfig(seed=0)))
    ids = pa.array([f"doc-{i:04d}" for i in range(len(all_texts))])
    sources = pa.array(["stdlib"] * len(all_texts))
    return x, labels, distance, ids, sources, planted, len(texts)


def naive_duplicates(x, labels, distance, epsilon):
    """The paper's rule written out slowly: farthest first, compare with every earlier item."""
    dup = np.zeros(len(x), dtype=bool)
    for c in np.unique(labels):
        rows = sorted(np.flatnonzero(labels == c), key=lambda r: (-distance[r], r))
        for j, row in enumerate(rows):
            dup[row] = any(float(x[row] @ x[other]) > 1 - epsilon for other in rows[:j])
    return dup


def test_planted_near_copies_are_removed(corpus):
    x, labels, distance, ids, sources, planted, n_orig = corpus
    table = SemDeDup(SemDeDupConfig(epsilon=0.1)).fit(x, labels, distance).select(ids, sources)
    kept = np.array(table.column("kept").to_pylist())
    cluster = table.column("cluster").to_pylist()
    for copy_row, orig_row in enumerate(planted, start=n_orig):
        pair = [orig_row, copy_row]
        assert kept[pair].sum() == 1, f"pair {pair} not collapsed"
        survivor = ids[pair[int(np.argmax(kept[pair]))]].as_py()
        assert cluster[orig_row] == cluster[copy_row] == survivor
    others_dropped = (~kept[:n_orig]).sum() - (~kept[planted]).sum()
    assert others_dropped <= 0.1 * n_orig  # distinct docstrings mostly survive


def test_matches_the_rule_written_out(corpus):
    x, labels, distance, *_ = corpus
    for epsilon in (0.05, 0.3):
        fitted = SemDeDup(SemDeDupConfig(epsilon=epsilon)).fit(x, labels, distance)
        assert np.array_equal(~fitted.kept_, naive_duplicates(x, labels, distance, epsilon))


@pytest.mark.parametrize("fraction", [0.95, 0.8, 0.6, 0.4])
def test_target_fraction_is_met(corpus, fraction):
    x, labels, distance, ids, sources, *_ = corpus
    fitted = SemDeDup(SemDeDupConfig(target_fraction=fraction)).fit(x, labels, distance)
    table = fitted.select(ids, sources)
    kept_share = np.mean(table.column("kept").to_pylist())
    assert abs(kept_share - fraction) <= 0.02
    again = SemDeDup(SemDeDupConfig(epsilon=fitted.epsilon_)).fit(x, labels, distance)
    assert abs(again.kept_fraction_ - kept_share) <= 1 / len(x)  # the epsilon it reports is the one used


def test_decision_table_shape(corpus):
    x, labels, distance, ids, sources, *_ = corpus
    table = SemDeDup().fit(x, labels, distance).select(ids, sources)
    assert table.schema == DECISION_SCHEMA
    assert table.column("id").equals(pa.chunked_array([ids]))
    assert set(table.column("stage").to_pylist()) == {"semantic"}
    rows = table.to_pylist()
    targets = {r["cluster"] for r in rows if not r["kept"]}
    for r in rows:
        if not r["kept"]:
            assert r["reason"] == "semantic_duplicate" and r["cluster"] in targets
        elif r["id"] in targets:
            assert r["reason"] == "representative" and r["cluster"] == r["id"]
        else:
            assert r["reason"] == "unique" and r["cluster"] is None
    kept_ids = {r["id"] for r in rows if r["kept"]}
    assert targets <= kept_ids


def two_copies(distances):
    """Two identical unit vectors and one unrelated, all in cluster 0."""
    x = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    return x, np.zeros(3, dtype=np.int64), np.array(distances, dtype=np.float32)


@pytest.mark.parametrize(("keep", "survivor"), [("hard", 1), ("easy", 0)])
def test_keep_rule_picks_the_copy(keep, survivor):
    x, labels, distance = two_copies([0.1, 0.4, 0.9])
    fitted = SemDeDup(SemDeDupConfig(epsilon=0.01, keep=keep)).fit(x, labels, distance)
    assert fitted.kept_.tolist() == [survivor == 0, survivor == 1, True]


def test_random_keep_is_seeded(corpus):
    x, labels, distance, *_ = corpus
    runs = [
        SemDeDup(SemDeDupConfig(keep="random", seed=1, epsilon=0.1)).fit(x, labels, distance) for _ in (1, 2)
    ]
    assert np.array_equal(runs[0].kept_, runs[1].kept_)
    orders = [keep_order(labels, distance, "random", seed) for seed in (1, 1, 2)]
    assert np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], orders[2])
    assert np.all(np.diff(labels[orders[2]]) >= 0)  # still grouped by cluster


def test_blocks_do_not_change_the_answer(corpus):
    x = corpus[0]
    whole = max_similarity_to_earlier(x[:90])
    blocked = max_similarity_to_earlier(x[:90], block_elements=200)  # two rows per block
    np.testing.assert_allclose(whole[0], blocked[0], atol=1e-6)
    assert np.array_equal(whole[1], blocked[1])
    assert whole[0][0] == -np.inf and whole[1][0] == -1


def test_threshold_edges():
    values = np.array([-np.inf, -np.inf, 0.2, 0.5, 0.5, 0.9], dtype=np.float32)
    assert (values <= threshold_for_fraction(values, 1.0)).sum() == 6
    assert (values <= threshold_for_fraction(values, 0.1)).sum() == 2  # first items always stay
    assert (values <= threshold_for_fraction(values, 0.5)).sum() == 3
    assert (values <= threshold_for_fraction(values, 4 / 6)).sum() == 5  # the tie keeps both
    assert threshold_for_fraction(np.array([]), 0.5) == 1.0


def test_bad_config_and_shapes():
    with pytest.raises(ValueError, match="keep"):
        SemDeDupConfig(keep="hardest")
    with pytest.raises(ValueError, match="target_fraction"):
        SemDeDupConfig(target_fraction=0)
    x, labels, distance = two_copies([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="cluster labels"):
        SemDeDup().fit(x, labels[:2], distance)
