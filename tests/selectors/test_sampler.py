"""The mixture sampler: sources by the schedule, RS2 inside each, deterministic and resumable."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curation.selectors.mixture import Mixture, MixtureConfig, scalarization_weights, temperature_weights
from curation.selectors.rs2 import RS2Config
from curation.selectors.sampler import MixtureSampler

SEQUENCES = {"code": 5000, "docs": 800, "news": 120, "license": 7}


def make(config=None, total=400, batch=32, seed=0, inner=None, sequences=SEQUENCES, sizes=None):
    mixture = Mixture(config or MixtureConfig()).fit(sizes or sequences, total)
    return MixtureSampler(mixture, sequences, batch, seed=seed, inner=inner)


def draws(sampler, steps):
    return [sampler.next_batch() for _ in range(steps)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.step == y.step
        np.testing.assert_array_equal(x.source_ids, y.source_ids)
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.loss_weights, y.loss_weights)


@pytest.mark.parametrize("mode", ["without_replacement", "with_replacement", "static"])
def test_resume_mid_round_gives_the_identical_stream(mode):
    inner = RS2Config(fraction=0.3, mode=mode, seed=0)
    reference = make(inner=inner, seed=9)
    draws(reference, 13)  # 416 draws: inside a round of the larger sources
    state = json.loads(json.dumps(reference.state_dict()))
    expected = draws(reference, 300)  # crosses the Cooldown switch at step 200
    resumed = make(inner=inner, seed=9)
    resumed.load_state_dict(state)
    assert_same(draws(resumed, 300), expected)


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    first = draws(a, 20)
    assert_same(first, draws(b, 20))
    other = draws(c, 20)
    assert any(not np.array_equal(x.indices, y.indices) for x, y in zip(first, other, strict=True))


def test_blocks_give_the_same_draws_as_single_batches():
    single = draws(make(total=700, seed=4), 700)  # crosses 256-step random blocks and the switch
    blocked = make(total=700, seed=4)
    got = []
    for size in [1, 5, 250, 3, 17, 300, 124]:
        block = blocked.next_block(size)
        got.extend(block.batch(i) for i in range(len(block)))
    assert_same(got, single)


def shares(batches, n_sources):
    counts = np.bincount(np.concatenate([b.source_ids for b in batches]), minlength=n_sources)
    return counts / counts.sum(), counts.sum()


def test_source_shares_follow_the_cooldown_schedule():
    sampler = make(total=4000, batch=64, seed=3)
    batches = draws(sampler, 4000)
    names = sampler.sources
    for part, temperature in ((batches[:2000], 5.0), (batches[2000:], 1.0)):
        observed, total = shares(part, len(names))
        expected = temperature_weights(SEQUENCES, temperature)
        for i, name in enumerate(names):
            p = expected[name]
            tolerance = 6 * math.sqrt(p * (1 - p) / total) + 1e-9
            assert abs(observed[i] - p) < tolerance, (name, temperature, observed[i], p)


def test_inside_a_source_every_sequence_comes_once_before_any_repeats():
    sampler = make(config=MixtureConfig(schedule="constant", temperature=1e9), batch=50, seed=2)
    batches = draws(sampler, 400)
    ids = np.concatenate([b.source_ids for b in batches])
    indices = np.concatenate([b.indices for b in batches])
    for position, name in enumerate(sampler.sources):
        drawn = indices[ids == position]
        n = SEQUENCES[name]
        for epoch in range(min(len(drawn) // n, 3)):
            assert sorted(drawn[epoch * n : (epoch + 1) * n].tolist()) == list(range(n)), name
        assert drawn.max() < n


def test_rs2_inside_a_source_uses_only_its_round_subset():
    inner = RS2Config(fraction=0.1, mode="static", seed=0)
    sampler = make(config=MixtureConfig(schedule="constant", temperature=1.0), inner=inner)
    batches = draws(sampler, 200)
    code = sampler.sources.index("code")
    used = {int(i) for b in batches for s, i in zip(b.source_ids, b.indices, strict=True) if s == code}
    assert len(used) == round(0.1 * SEQUENCES["code"])


def test_zero_weight_sources_are_never_drawn_and_missing_sequences_are_refused():
    sizes = {"code": 100, "docs": 0, "news": 50}
    sampler = make(sizes=sizes, sequences={"code": 10, "docs": 4, "news": 6})
    docs = sampler.sources.index("docs")
    assert all(docs not in b.source_ids for b in draws(sampler, 200))
    with pytest.raises(ValueError, match="'news' has weight > 0 but no sequences"):
        make(sizes={"code": 100, "news": 50}, sequences={"code": 10})


def test_scalarized_mixture_puts_loss_weights_on_each_slot():
    config = MixtureConfig(schedule="constant", temperature=5.0, mode="scalarize")
    sampler = make(config=config)
    expected = scalarization_weights(SEQUENCES, 5.0)
    batch = sampler.next_batch()
    for source_id, weight in zip(batch.source_ids, batch.loss_weights, strict=True):
        assert weight == pytest.approx(expected[sampler.sources[source_id]], rel=1e-6)


def test_slots_are_grouped_by_source():
    for batch in draws(make(), 30):
        assert np.all(np.diff(batch.source_ids) >= 0)


def test_state_from_another_sampler_is_refused():
    state = make(seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        make(seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        make(seed=1, batch=8).load_state_dict(state)


def test_iteration_stops_at_total_steps():
    assert len(list(make(total=37))) == 37
