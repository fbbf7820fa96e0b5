"""Temperature weights, scalarization and Cooldown schedules (Upsample or Upweight?)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.plots import weights_over_steps_png
from curation.selectors.mixture import (
    Mixture,
    MixtureConfig,
    scalarization_weights,
    temperature_weights,
)

SIZES = {"en": 9_000_000, "it": 600_000, "zh": 250_000, "sw": 4_000}


def test_temperature_one_is_proportional():
    weights = temperature_weights(SIZES, 1.0)
    total = sum(SIZES.values())
    for name, n in SIZES.items():
        assert weights[name] == pytest.approx(n / total, rel=1e-12)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 5.0, 37.0])
def test_weights_follow_n_to_the_one_over_t(temperature):
    weights = temperature_weights(SIZES, temperature)
    assert sum(weights.values()) == pytest.approx(1.0)
    names = list(SIZES)
    for a in names:
        for b in names:
            expected = (SIZES[a] / SIZES[b]) ** (1 / temperature)
            assert weights[a] / weights[b] == pytest.approx(expected, rel=1e-9)


def test_large_temperature_is_near_uniform_and_infinity_is_uniform():
    near = temperature_weights(SIZES, 1e6)
    assert max(abs(w - 0.25) for w in near.values()) < 1e-4
    assert temperature_weights(SIZES, math.inf) == pytest.approx(dict.fromkeys(SIZES, 0.25))


def test_higher_temperature_moves_weight_to_small_sources():
    previous = None
    for temperature in (1.0, 2.0, 5.0, 20.0):
        share = temperature_weights(SIZES, temperature)["sw"]
        assert previous is None or share > previous
        previous = share


def test_empty_sources_get_nothing_and_bad_sizes_are_refused():
    weights = temperature_weights({"a": 10, "b": 0, "c": 30}, 5.0)
    assert weights["b"] == 0.0 and weights["a"] > 0
    with pytest.raises(ValueError, match="every source is empty"):
        temperature_weights({"a": 0, "b": 0}, 1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        temperature_weights({"a": -1, "b": 3}, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        temperature_weights(SIZES, 0.0)


def test_huge_sizes_do_not_overflow():
    weights = temperature_weights({"a": 1e300, "b": 1e10}, 0.01)
    assert weights["a"] == pytest.approx(1.0) and np.isfinite(list(weights.values())).all()


def test_scalarization_has_the_same_expected_gradient():
    rng = np.random.default_rng(0)
    gradients = {name: rng.normal(size=8) for name in SIZES}
    loss_weights = scalarization_weights(SIZES, 5.0)
    proportional = temperature_weights(SIZES, 1.0)
    hot = temperature_weights(SIZES, 5.0)
    upweighted = sum(proportional[n] * loss_weights[n] * gradients[n] for n in SIZES)
    upsampled = sum(hot[n] * gradients[n] for n in SIZES)
    np.testing.assert_allclose(upweighted, upsampled, rtol=1e-10)


@pytest.mark.parametrize(("total_steps", "switch_at"), [(1000, 0.5), (7, 0.5), (101, 0.37), (3, 0.9)])
def test_cooldown_switches_exactly_once_at_the_configured_step(total_steps, switch_at):
    config = MixtureConfig(
        schedule="cooldown", temperature=5.0, cooldown_temperature=1.0, switch_at=switch_at
    )
    mixture = Mixture(config).fit(SIZES, total_steps)
    temperatures = [mixture.temperature(step) for step in range(total_steps)]
    changes = [step for step in range(1, total_steps) if temperatures[step] != temperatures[step - 1]]
    expected = min(round(switch_at * total_steps), total_steps - 1)  # a short run still switches
    assert changes == [expected] == mixture.switch_steps()
    assert temperatures[0] == 5.0 and temperatures[-1] == 1.0
    before, after = changes[0] - 1, changes[0]
    assert mixture.weights(before) == pytest.approx(temperature_weights(SIZES, 5.0))
    assert mixture.weights(after) == pytest.approx(temperature_weights(SIZES, 1.0))


def test_default_config_is_the_papers_cooldown():
    config = MixtureConfig()
    assert (config.schedule, config.temperature, config.cooldown_temperature, config.switch_at) == (
        "cooldown",
        5.0,
        1.0,
        0.5,
    )


def test_constant_schedule_never_changes():
    mixture = Mixture(MixtureConfig(schedule="constant", temperature=3.0)).fit(SIZES, 50)
    assert mixture.switch_steps() == []
    assert all(mixture.weights(s) == mixture.weights(0) for s in range(0, 80, 7))
    assert mixture.weights(0) == pytest.approx(temperature_weights(SIZES, 3.0))


def test_piecewise_schedule_uses_each_phase_in_turn():
    config = MixtureConfig(schedule="piecewise", phases=((0.0, 1.0), (0.25, 3.0), (0.75, 10.0)))
    mixture = Mixture(config).fit(SIZES, 200)
    assert [mixture.temperature(s) for s in (0, 49, 50, 149, 150, 199, 500)] == [1, 1, 3, 3, 10, 10, 10]
    assert mixture.switch_steps() == [50, 150]


def test_average_weights_are_the_time_average_of_the_schedule():
    mixture = Mixture(MixtureConfig(switch_at=0.25)).fit(SIZES, 400)
    hot, cold = temperature_weights(SIZES, 5.0), temperature_weights(SIZES, 1.0)
    expected = {n: 0.25 * hot[n] + 0.75 * cold[n] for n in SIZES}
    assert mixture.average_weights() == pytest.approx(expected)


def test_scalarize_mode_samples_proportionally_and_reweights_the_loss():
    mixture = Mixture(MixtureConfig(schedule="constant", temperature=5.0, mode="scalarize")).fit(SIZES, 10)
    assert mixture.weights(3) == pytest.approx(temperature_weights(SIZES, 1.0))
    assert mixture.loss_weights(3) == pytest.approx(scalarization_weights(SIZES, 5.0))
    sampled = Mixture(MixtureConfig(schedule="constant", temperature=5.0)).fit(SIZES, 10)
    assert sampled.loss_weights(3) == dict.fromkeys(SIZES, 1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"temperature": 0}, "temperature must be a number > 0"),
        ({"temperature": float("nan")}, "temperature must be a number > 0"),
        ({"cooldown_temperature": -1.0}, "cooldown_temperature"),
        ({"switch_at": 0.0}, r"switch_at must be a fraction in \(0, 1\)"),
        ({"switch_at": 1.0}, "switch_at"),
        ({"unit": "bytes"}, "unit must be one of"),
        ({"mode": "both"}, "mode must be one of"),
        ({"schedule": "piecewise"}, "needs phases"),
        ({"schedule": "piecewise", "phases": ((0.1, 1.0),)}, "first phase must start at 0"),
        ({"schedule": "piecewise", "phases": ((0.0, 1.0), (0.5, 2.0), (0.5, 3.0))}, "increase strictly"),
        ({"schedule": "piecewise", "phases": ((0.0, 1.0), (1.0, 2.0))}, r"in \[0, 1\)"),
        ({"schedule": "constant", "phases": ((0.0, 1.0),)}, "only used by the piecewise"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(fields, message):
    with pytest.raises(ValueError, match=message):
        MixtureConfig(**fields)


def test_weights_need_a_fit_and_a_valid_step():
    mixture = Mixture()
    with pytest.raises(RuntimeError, match="fit"):
        mixture.weights(0)
    mixture.fit(SIZES, 10)
    with pytest.raises(ValueError, match="step must be >= 0"):
        mixture.weights(-1)
    with pytest.raises(ValueError, match="total_steps"):
        Mixture().fit(SIZES, 0)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=8).filter(any),
    temperature=st.floats(min_value=0.05, max_value=1e4),
)
def test_weights_are_a_distribution_ordered_like_the_sizes(sizes, temperature):
    named = {f"s{i}": n for i, n in enumerate(sizes)}
    weights = temperature_weights(named, temperature)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(w >= 0 for w in weights.values())
    order = sorted(named, key=named.get)
    values = [weights[n] for n in order]
    assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(values))


def test_weights_plot_is_a_png():
    mixture = Mixture(MixtureConfig()).fit(SIZES, 1000)
    steps, table = mixture.weights_over_steps(points=50)
    assert steps[0] == 0 and steps[-1] == 999 and all(len(v) == len(steps) for v in table.values())
    png = weights_over_steps_png(steps, table)
    assert png.startswith(b"\x89PNG")
