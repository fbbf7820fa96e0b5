"""Per-source mixture weights: temperature sampling, scalarization and Cooldown.

From "Upsample or Upweight?" (arXiv 2410.04579): source i is sampled with
probability p_i(T) proportional to n_i^(1/T). T = 1 is proportional to size,
large T approaches uniform. Scalarization samples proportionally instead and
weighs each example's loss by p_i(T) / p_i(1); averaged over the batch,
sum(w*l)/B, that is the same expected gradient. Cooldown trains at T = 5 for
the first half, then at T = 1 (one switch).

Sizes n_i count tokens by default: the trainer's sampler draws packed
sequences, and a source's sequences are its tokens / seq_len. Documents are
the option for document-level budgets.

A schedule is a list of phases (start fraction of training, T); constant,
Cooldown and piecewise schedules are all written that way.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SCHEDULES = ("constant", "cooldown", "piecewise")
UNITS = ("documents", "tokens")
MODES = ("sample", "scalarize")
NORMALISE = ("batch", "weights")


@dataclass(frozen=True)
class MixtureConfig:
    """How per-source weights move over training. Defaults: the paper's Cooldown.

    Fields:
        schedule: "constant" (T = temperature throughout), "cooldown" (T =
            temperature before `switch_at`, then `cooldown_temperature`), or
            "piecewise" (the `phases` given).
        temperature: T of a constant schedule, or before a Cooldown's switch.
            math.inf means uniform over non-empty sources.
        cooldown_temperature: T after the Cooldown switch.
        switch_at: fraction of training steps at which Cooldown switches, in (0, 1).
        phases: for "piecewise": (start fraction, T) pairs, the first starting
            at 0, starts strictly increasing and below 1.
        unit: what n_i counts: "tokens" (default; proportional to the packed
            sequences the trainer draws) or "documents" (for document budgets);
            the caller supplies sizes in that unit.
        mode: "sample" draws sources by p_i(T); "scalarize" draws proportionally
            (T = 1) and returns loss weights p_i(T) / p_i(1).
        normalise: how the trainer averages weighted losses: "batch" (default,
            sum(w*l) / B, the paper's unbiased estimator) or "weights"
            (sum(w*l) / sum(w), self-normalised: biased toward large sources).
    """

    schedule: str = "cooldown"
    temperature: float = 5.0
    cooldown_temperature: float = 1.0
    switch_at: float = 0.5
    phases: tuple[tuple[float, float], ...] = ()
    unit: str = "tokens"
    mode: str = "sample"
    normalise: str = "batch"

    def __post_init__(self) -> None:
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("unit", self.unit, UNITS)
        _check_choice("mode", self.mode, MODES)
        _check_choice("normalise", self.normalise, NORMALISE)
        _check_temperature("temperature", self.temperature)
        _check_temperature("cooldown_temperature", self.cooldown_temperature)
        if not _is_number(self.switch_at) or not 0.0 < self.switch_at < 1.0:
            raise ValueError(f"switch_at must be a fraction in (0, 1), got {self.switch_at!r}")
        if self.schedule == "piecewise":
            _check_phases(self.phases)
        elif self.phases:
            raise ValueError(f"phases are only used by the piecewise schedule, not {self.schedule!r}")

    def phase_list(self) -> tuple[tuple[float, float], ...]:
        """The schedule as (start fraction, T) pairs."""
        if self.schedule == "constant":
            return ((0.0, float(self.temperature)),)
        if self.schedule == "cooldown":
            return ((0.0, float(self.temperature)), (float(self.switch_at), float(self.cooldown_temperature)))
        return tuple((float(start), float(t)) for start, t in self.phases)


def temperature_weights(sizes: Mapping[str, float], temperature: float) -> dict[str, float]:
    """p_i proportional to n_i^(1/T); sources of size 0 get 0."""
    _check_temperature("temperature", temperature)
    names = list(sizes)
    n = np.array([sizes[name] for name in names], dtype=np.float64)
    if n.size == 0 or np.any(~np.isfinite(n)) or np.any(n < 0):
        raise ValueError(f"source sizes must be finite and >= 0, got {dict(sizes)}")
    if not np.any(n > 0):
        raise ValueError(f"every source is empty: {dict(sizes)}")
    p = _temperature_probs(n, temperature)
    return {name: float(w) for name, w in zip(names, p, strict=True)}


def scalarization_weights(sizes: Mapping[str, float], temperature: float) -> dict[str, float]:
    """Loss weights p_i(T) / p_i(1), used with proportional sampling; 0 for empty sources."""
    hot = temperature_weights(sizes, temperature)
    flat = temperature_weights(sizes, 1.0)
    return {name: (hot[name] / flat[name] if flat[name] > 0 else 0.0) for name in sizes}


def _temperature_probs(n: np.ndarray, temperature: float) -> np.ndarray:
    # In log space, so huge sizes and large T neither overflow nor underflow.
    present = n > 0
    logits = np.full(n.shape, -np.inf)
    logits[present] = np.log(n[present]) / temperature
    logits -= logits[present].max()
    p = np.exp(logits)
    return p / p.sum()


class Mixture:
    """Weights per source at each training step, from a MixtureConfig.

    `fit(sizes, total_steps)` records the source sizes (in `config.unit`) and
    the run length; then `weights(step)` gives sampling probabilities and
    `loss_weights(step)` the per-source loss multipliers (all 1 unless the
    mode is "scalarize").
    """

    def __init__(self, config: MixtureConfig | None = None):
        self.config = config or MixtureConfig()
        self.sources: list[str] = []
        self.total_steps = 0
        self._starts: list[int] = []
        self._temperatures: list[float] = []
        self._sample: list[np.ndarray] = []
        self._loss: list[np.ndarray] = []

    def fit(self, sizes: Mapping[str, float], total_steps: int) -> Mixture:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int | np.integer) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        self.sources = list(sizes)
        self.total_steps = int(total_steps)
        self._starts, self._temperatures = [], []
        for start, temperature in self.config.phase_list():
            # A later phase starts at step 1 or after, and before the last step, so
            # that even a very short run sees every switch.
            step = (
                0
                if start == 0
                else min(max(round(start * self.total_steps), 1), max(self.total_steps - 1, 1))
            )
            if self._starts and step == self._starts[-1]:
                self._temperatures[-1] = temperature  # a phase shorter than one step
                continue
            self._starts.append(step)
            self._temperatures.append(temperature)
        proportional = np.array(list(temperature_weights(sizes, 1.0).values()))
        self._sample, self._loss = [], []
        for temperature in self._temperatures:
            hot = np.array(list(temperature_weights(sizes, temperature).values()))
            if self.config.mode == "sample":
                self._sample.append(hot)
                self._loss.append(np.ones_like(hot))
            else:
                self._sample.append(proportional)
                self._loss.append(
                    np.divide(hot, proportional, out=np.zeros_like(hot), where=proportional > 0)
                )
        return self

    def phase(self, step: int) -> int:
        """Index of the phase `step` falls in; steps past the end stay in the last."""
        self._check_fitted()
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return bisect.bisect_right(self._starts, step) - 1

    def temperature(self, step: int) -> float:
        return self._temperatures[self.phase(step)]

    def phase_starts(self) -> list[int]:
        """First step of each phase."""
        self._check_fitted()
        return list(self._starts)

    def switch_steps(self) -> list[int]:
        """Steps at which the temperature changes."""
        self._check_fitted()
        return self._starts[1:]

    def weights(self, step: int) -> dict[str, float]:
        """Sampling probability of each source at `step`."""
        return dict(zip(self.sources, self.weight_array(step).tolist(), strict=True))

    def loss_weights(self, step: int) -> dict[str, float]:
        return dict(zip(self.sources, self._loss[self.phase(step)].tolist(), strict=True))

    def weight_array(self, step: int) -> np.ndarray:
        """`weights(step)` as an array in `sources` order (for samplers)."""
        return self._sample[self.phase(step)]

    def loss_weight_array(self, step: int) -> np.ndarray:
        return self._loss[self.phase(step)]

    def drawn_sources(self) -> list[str]:
        """Sources with a sampling weight above 0 in some phase."""
        self._check_fitted()
        return [name for i, name in enumerate(self.sources) if any(w[i] > 0 for w in self._sample)]

    def average_weights(self) -> dict[str, float]:
        """Share of all draws each source gets over the whole run: what a fixed
        subset must hold for training to follow the schedule."""
        self._check_fitted()
        ends = [*self._starts[1:], self.total_steps]
        total = np.zeros(len(self.sources))
        for start, end, weights in zip(self._starts, ends, self._sample, strict=True):
            total += max(end - start, 0) * weights
        total /= total.sum()
        return dict(zip(self.sources, total.tolist(), strict=True))

    def weights_over_steps(self, points: int = 200) -> tuple[list[int], dict[str, list[float]]]:
        """(steps, {source: weight at each step}) for plots."""
        self._check_fitted()
        steps = sorted(set(np.linspace(0, self.total_steps - 1, points).round().astype(int).tolist()))
        table = {name: [] for name in self.sources}
        for step in steps:
            for name, w in zip(self.sources, self.weight_array(step), strict=True):
                table[name].append(float(w))
        return steps, table

    def _check_fitted(self) -> None:
        if not self._starts:
            raise RuntimeError("call fit(sizes, total_steps) before asking for weights")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.floating | np.integer)


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_temperature(name: str, value) -> None:
    if not _is_number(value) or math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0 (math.inf for uniform), got {value!r}")


def _check_phases(phases) -> None:
    if not phases:
        raise ValueError("a piecewise schedule needs phases: ((0.0, T0), (start1, T1), ...)")
    previous = None
    for item in phases:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValueError(f"each phase must be (start fraction, temperature), got {item!r}")
        start, temperature = item
        if not _is_number(start) or not 0.0 <= start < 1.0:
            raise ValueError(f"phase start must be a fraction in [0, 1), got {start!r}")
        _check_temperature("phase temperature", temperature)
        if previous is None and start != 0:
            raise ValueError(f"the first phase must start at 0, got {start}")
        if previous is not None and start <= previous:
            raise ValueError(f"phase starts must increase strictly, got {previous} then {start}")
        previous = start
