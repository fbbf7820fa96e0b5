"""RS2 round samplers: without replacement, with replacement, the static baseline; resuming."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from curation.selectors.rs2 import (
    RS2Config,
    RS2WithoutReplacement,
    RS2WithReplacement,
    StaticSubset,
    per_round,
    steps_run,
)

MODES = ["without_replacement", "with_replacement", "static"]


@pytest.mark.parametrize(("n", "fraction"), [(103, 0.1), (50, 0.3), (7, 0.5), (3, 1.0), (1, 0.1)])
def test_without_replacement_visits_every_example_once_before_any_repeats(n, fraction):
    sampler = RS2WithoutReplacement(n, fraction, seed=4)
    stream = np.concatenate([sampler.next_round() for _ in range(math.ceil(3 * n / sampler.per_round))])
    for epoch in range(3):
        chunk = stream[epoch * n : (epoch + 1) * n]
        assert sorted(chunk.tolist()) == list(range(n)), f"epoch {epoch} is not a permutation"


def test_without_replacement_rounds_are_consecutive_chunks_and_epochs_reshuffle():
    sampler = RS2WithoutReplacement(1000, 0.1, seed=1)
    rounds = [sampler.round_indices(k) for k in range(20)]
    assert all(len(r) == 100 for r in rounds)
    first, second = np.concatenate(rounds[:10]), np.concatenate(rounds[10:])
    assert not np.array_equal(first, second)  # a new permutation, not the same order again
    # Rounds of one epoch never overlap.
    assert len(set(first.tolist())) == 1000


def test_with_replacement_draws_a_fresh_uniform_subset_each_round():
    n, fraction, rounds = 50, 0.2, 3000
    sampler = RS2WithReplacement(n, fraction, seed=7)
    subsets = [sampler.next_round() for _ in range(rounds)]
    size = per_round(n, fraction)
    assert all(len(set(s.tolist())) == size for s in subsets)  # distinct inside a round
    # Independent rounds: consecutive overlaps follow the hypergeometric mean size*size/n.
    overlaps = [len(set(a.tolist()) & set(b.tolist())) for a, b in itertools.pairwise(subsets)]
    expected = size * size / n
    assert abs(np.mean(overlaps) - expected) < 0.15 * expected
    # Uniform: every example appears about rounds * size / n times.
    counts = np.bincount(np.concatenate(subsets), minlength=n)
    mean = rounds * size / n
    assert np.all(np.abs(counts - mean) < 6 * math.sqrt(mean))


def test_without_replacement_rounds_do_not_overlap_where_with_replacement_ones_do():
    without = RS2WithoutReplacement(200, 0.1, seed=3)
    with_ = RS2WithReplacement(200, 0.1, seed=3)
    overlap_without = sum(
        len(set(without.round_indices(k)) & set(without.round_indices(k + 1))) for k in range(9)
    )
    overlap_with = sum(len(set(with_.round_indices(k)) & set(with_.round_indices(k + 1))) for k in range(9))
    assert overlap_without == 0 and overlap_with > 0


def test_static_subset_repeats_one_subset_in_new_orders():
    sampler = StaticSubset(300, 0.1, seed=2)
    rounds = [sampler.next_round() for _ in range(6)]
    assert all(sorted(r.tolist()) == sorted(rounds[0].tolist()) for r in rounds)
    assert len({tuple(r.tolist()) for r in rounds}) > 1
    assert len(set(rounds[0].tolist())) == per_round(300, 0.1)


@pytest.mark.parametrize("mode", MODES)
def test_resume_mid_round_gives_the_same_order(mode):
    config = RS2Config(fraction=0.1, mode=mode, seed=11)
    reference = config.build(97)
    reference.take(23)  # mid-round (rounds of 10)
    state = json.loads(json.dumps(reference.state_dict()))
    expected = reference.take(250)
    resumed = config.build(97)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.take(250), expected)


@pytest.mark.parametrize("mode", MODES)
def test_take_matches_the_rounds_whatever_the_chunk_sizes(mode):
    config = RS2Config(fraction=0.25, mode=mode, seed=5)
    whole = config.build(41)
    rounds = np.concatenate([whole.round_indices(k) for k in range(12)])
    pieces = config.build(41)
    rng = np.random.default_rng(0)
    got = []
    while sum(map(len, got)) < len(rounds):
        got.append(pieces.take(int(rng.integers(0, 30))))
    np.testing.assert_array_equal(np.concatenate(got)[: len(rounds)], rounds)


def test_seed_changes_the_order_and_the_same_seed_repeats_it():
    a, b, c = (RS2WithoutReplacement(500, 0.2, seed=s) for s in (1, 1, 2))
    first = a.take(300)
    np.testing.assert_array_equal(first, b.take(300))
    assert not np.array_equal(first, c.take(300))


def test_state_from_another_sampler_is_refused():
    state = RS2WithoutReplacement(100, 0.1, seed=1).state_dict()
    with pytest.raises(ValueError, match="num_examples"):
        RS2WithoutReplacement(101, 0.1, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="mode"):
        RS2WithReplacement(100, 0.1, seed=1).load_state_dict(state)


@pytest.mark.parametrize(
    ("n", "fraction", "batch"), [(1000, 0.1, 32), (999, 0.25, 64), (10, 0.5, 8), (5, 1.0, 10)]
)
@pytest.mark.parametrize("drop_last", [False, True])
def test_steps_run_counts_the_batches_the_rounds_make(n, fraction, batch, drop_last):
    rounds = 4
    sampler = RS2WithoutReplacement(n, fraction, seed=0)
    batches = 0
    for _ in range(rounds):
        indices = sampler.next_round()
        for start in range(0, len(indices), batch):
            if len(indices[start : start + batch]) == batch or not drop_last:
                batches += 1
    assert steps_run(n, fraction, rounds, batch, drop_last) == batches


def test_steps_run_is_a_fraction_of_full_data_epochs():
    full = steps_run(10_000, 1.0, 10, 100)
    assert steps_run(10_000, 0.1, 10, 100) * 10 == full


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fraction": 0}, r"fraction must be in \(0, 1\]"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": "half"}, "fraction must be a number"),
        ({"mode": "sometimes"}, "mode must be one of"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_bad_config_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RS2Config(**fields)


def test_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="num_examples must be >= 1"):
        RS2WithoutReplacement(0)


def test_steps_run_inside_a_mixture_counts_every_sources_round():
    """RS2 per source: a round is the sum of each source's r*N_i (each at least one)."""
    assert steps_run([1000, 300, 7], 0.1, 3, 16) == 3 * math.ceil((100 + 30 + 1) / 16)
    assert steps_run([1000, 300, 7], 0.1, 3, 16, drop_last=True) == 3 * ((100 + 30 + 1) // 16)
    assert steps_run([1000], 0.1, 3, 16) == steps_run(1000, 0.1, 3, 16)


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True])
def test_bad_rounds_are_refused(rounds):
    with pytest.raises(ValueError, match="rounds"):
        RS2Config(rounds=rounds)
