"""kMQ: exact budgets, the split across clusters, quality weighting, refinement rounds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.embeddings import HashedEncoder, KMeansConfig, assign, fit_kmeans
from curation.selectors.allocation import allocate
from curation.selectors.diversity import KMQ, KMQConfig, split_budget


@pytest.fixture(scope="module")
def clustered():
    from tests.conftest import stdlib_docstrings

    texts = stdlib_docstrings(600)
    x = HashedEncoder(dim=64).encode(texts)
    labels, _ = assign(x, fit_kmeans(x, 12, KMeansConfig(seed=0)))
    tokens = np.array([max(1, len(t) // 4) for t in texts])
    return labels, tokens


@pytest.mark.parametrize("budget", [0, 1, 37, 250, 599])
def test_document_budget_is_exact(clustered, budget):
    labels, _ = clustered
    n = len(labels)
    chosen = KMQ(KMQConfig(budget=budget)).fit(labels).select()
    assert len(chosen) == min(budget, n) == len(np.unique(chosen))


def test_budget_larger_than_the_pool_takes_everything(clustered):
    labels, _ = clustered
    assert len(KMQ(KMQConfig(budget=10**6)).fit(labels).select()) == len(labels)


def test_proportional_split(clustered):
    labels, _ = clustered
    budget = 150
    chosen = KMQ(KMQConfig(budget=budget)).fit(labels).select()
    sizes = np.bincount(labels)
    got = np.bincount(labels[chosen], minlength=len(sizes))
    assert np.all(np.abs(got - budget * sizes / sizes.sum()) < 1)


def test_even_split_gives_small_clusters_surplus_away():
    labels = np.repeat([0, 1, 2, 3], [2, 50, 50, 50])
    chosen = KMQ(KMQConfig(budget=60, split="even")).fit(labels).select()
    assert np.bincount(labels[chosen]).tolist() == [2, 20, 19, 19]  # the spare unit: lowest cluster
    assert len(chosen) == 60


def test_same_seed_same_selection(clustered):
    labels, _ = clustered
    runs = [KMQ(KMQConfig(budget=100, seed=s)).fit(labels).select() for s in (5, 5, 6)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_quality_steers_the_draw(clustered):
    labels, _ = clustered
    rng = np.random.default_rng(1)
    quality = np.where(rng.random(len(labels)) < 0.3, 8.0, 0.0)  # exp(8): about 3000x the weight
    chosen = KMQ(KMQConfig(budget=90)).fit(labels, quality=quality).select()
    per_cluster = np.bincount(labels[chosen], minlength=labels.max() + 1)
    high_available = np.bincount(labels[quality > 0], minlength=len(per_cluster))
    high_chosen = int((quality[chosen] > 0).sum())
    # inside each cluster the heavy documents come first, until the quota or they run out
    assert high_chosen >= np.minimum(per_cluster, high_available).sum() - 2


def test_token_budget_is_never_exceeded_and_filled(clustered):
    labels, tokens = clustered
    budget = 9_000
    kmq = KMQ(KMQConfig(budget=budget, unit="tokens")).fit(labels, tokens=tokens)
    chosen = kmq.select()
    used = int(tokens[chosen].sum())
    assert used <= budget
    assert tokens[~kmq.selected_].min() > budget - used  # nothing left would still fit


def test_token_unit_needs_counts(clustered):
    with pytest.raises(ValueError, match="token counts"):
        KMQ(KMQConfig(budget=10, unit="tokens")).fit(clustered[0])


def test_refinement_draws_from_the_unselected_pool(clustered):
    labels, _ = clustered
    k = labels.max() + 1
    shares = split_budget(240, 3)
    kmq = KMQ(KMQConfig(budget=240)).fit(labels)
    first = kmq.select(shares[0])
    scores = np.zeros(k)
    scores[[0, 1]] = 3.0  # the model still has most to learn in clusters 0 and 1
    second = kmq.refine(scores, shares[1])
    assert len(first) == len(second) == 80 and not np.intersect1d(first, second).size
    favoured = np.isin(labels[second], [0, 1]).mean()
    assert favoured > np.isin(labels[first], [0, 1]).mean()
    third = kmq.refine(np.zeros(k), shares[2])
    assert kmq.selected_.sum() == 240 and len(third) == 80
    assert sorted(set(kmq.round_.tolist())) == [0, 1, 2, 3]


def test_expected_refinement_follows_the_softmax():
    labels = np.repeat(np.arange(3), 100)
    kmq = KMQ(KMQConfig(budget=0, refine_draw="expected")).fit(labels)
    chosen = kmq.refine(np.log([1.0, 2.0, 7.0]), 50)
    assert np.bincount(labels[chosen]).tolist() == [5, 10, 35]


def test_state_dict_resumes_the_rounds(clustered):
    labels, _ = clustered
    k = labels.max() + 1
    scores = np.linspace(0, 2, k)
    whole = KMQ(KMQConfig(budget=200)).fit(labels)
    whole.select(100)
    state = whole.state_dict()
    expected = whole.refine(scores, 100)
    resumed = KMQ(KMQConfig(budget=200)).fit(labels)
    resumed.load_state_dict(state)
    assert np.array_equal(resumed.refine(scores, 100), expected)


def test_decision_table(clustered):
    from curation.storage.decisions import DECISION_SCHEMA

    labels, _ = clustered
    n = len(labels)
    kmq = KMQ(KMQConfig(budget=40)).fit(labels)
    chosen = kmq.select()
    ids = pa.array([f"doc-{i}" for i in range(n)])
    table = kmq.decisions(ids, pa.array(["stdlib"] * n))
    assert table.schema == DECISION_SCHEMA
    kept = np.flatnonzero(table.column("kept").to_numpy(zero_copy_only=False))
    assert np.array_equal(kept, chosen)
    assert set(table.column("reason").to_pylist()) == {"selected", "not_selected"}


def test_allocate_is_exact_and_capped():
    capacity = np.array([3, 100, 100, 0])
    quota = allocate(101, np.array([10.0, 1.0, 1.0, 5.0]), capacity)
    assert quota.sum() == 101 and quota[0] == 3 and quota[3] == 0
    assert abs(int(quota[1]) - int(quota[2])) <= 1
    assert allocate(1000, np.ones(4), capacity).tolist() == [3, 100, 100, 0]
    assert split_budget(10, 3) == [4, 3, 3]


def test_bad_config():
    with pytest.raises(ValueError, match="budget"):
        KMQConfig(budget=-1)
    with pytest.raises(ValueError, match="split"):
        KMQConfig(budget=1, split="random")
    with pytest.raises(ValueError, match="one score per cluster"):
        KMQ(KMQConfig(budget=1)).fit(np.array([0, 1])).refine(np.zeros(3), 1)


def test_scoring_split_is_fixed_sized_and_never_selected(clustered):
    from curation.selectors.diversity import SCORING_DOCS, scoring_split

    labels, _ = clustered
    n = len(labels)
    ids = [f"doc-{i}" for i in range(n)]
    held = scoring_split(ids, labels, per_cluster=8)
    sizes = np.bincount(labels)
    assert np.bincount(labels[held], minlength=len(sizes)).tolist() == np.minimum(8, sizes // 4).tolist()
    order = np.random.default_rng(3).permutation(n)  # the same documents in another order
    assert np.array_equal(scoring_split([ids[i] for i in order], labels[order], 8), held[order])
    assert held.sum() < scoring_split(ids, labels).sum() <= SCORING_DOCS * len(sizes)
    kmq = KMQ(KMQConfig(budget=n)).fit(labels, held_out=held)
    for share in split_budget(n, 3):
        kmq.refine(np.zeros(len(sizes)), share)
    assert not (kmq.selected_ & held).any() and kmq.selected_.sum() == n - held.sum()
    reasons = kmq.decisions(pa.array(ids), pa.array(["s"] * n)).column("reason").to_pylist()
    assert {r for r, h in zip(reasons, held, strict=True) if h} == {"held_out_for_scoring"}


def test_paper_defaults():
    assert KMQConfig(budget=1).rounds == 3  # Diversify and Conquer: N = 3
    assert KMeansConfig.kmq() == KMeansConfig(niter=300, nredo=5)  # 300 iterations, best of 5
