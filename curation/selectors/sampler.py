"""The mixture sampler: which sequence of which source goes into each batch.

At step t every slot of the batch picks a source with the mixture's
probabilities for step t, then takes that source's next index from its own
round sampler (RS2 inside each source; plain reshuffled epochs by default).

Randomness for step t comes from a Generator seeded by (seed, t // 256), so
the state is the step plus each source's (round, cursor): resuming from
`state_dict()` gives the identical stream.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.selectors.mixture import Mixture
from curation.selectors.rs2 import RoundSampler, RS2Config, per_round

_BLOCK = 256  # steps whose random numbers are drawn at once


def _cdf(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the sources with weight > 0, and their cumulative weights ending at exactly 1."""
    live = np.flatnonzero(weights > 0)
    cdf = np.cumsum(weights[live])
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # so a uniform draw in [0, 1) never falls past the last live source
    return live, cdf


@dataclass(frozen=True)
class Batch:
    """One step's draw: slot j holds sequence `indices[j]` of source `sources[source_ids[j]]`.

    Slots come grouped by source (the order inside a batch means nothing to a
    gradient step, and grouped slots read as contiguous runs)."""

    step: int
    source_ids: np.ndarray  # int32, position in MixtureSampler.sources
    indices: np.ndarray  # int64, sequence index inside its source
    loss_weights: np.ndarray  # float32, per slot; all 1 unless the mixture scalarizes


@dataclass(frozen=True)
class Block:
    """Consecutive batches drawn at once; arrays are (steps, batch_size), row i is step first_step + i."""

    first_step: int
    source_ids: np.ndarray
    indices: np.ndarray
    loss_weights: np.ndarray

    def __len__(self) -> int:
        return len(self.source_ids)

    def batch(self, i: int) -> Batch:
        return Batch(self.first_step + i, self.source_ids[i], self.indices[i], self.loss_weights[i])


class MixtureSampler:
    """Draws (source, sequence index) pairs batch by batch, following a fitted Mixture.

    `num_sequences` is how many sequences each source has in the shards;
    `inner` picks the per-source round sampler (default: full reshuffled
    epochs, i.e. RS2 without replacement at r = 1).
    """

    def __init__(
        self,
        mixture: Mixture,
        num_sequences: Mapping[str, int],
        batch_size: int,
        seed: int = 0,
        inner: RS2Config | None = None,
    ):
        if not mixture.sources:
            raise ValueError("fit the mixture (sizes, total_steps) before building a sampler")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.mixture = mixture
        self.sources = list(mixture.sources)
        self.batch_size, self.seed = batch_size, seed
        self.inner_config = inner or RS2Config(fraction=1.0)
        self.samplers = [self._inner(name, num_sequences) for name in self.sources]
        self.step = 0
        self._positions = np.arange(len(self.sources), dtype=np.int32)
        starts = mixture.phase_starts()
        self._starts = np.array(starts, dtype=np.int64)
        self._cdfs = [_cdf(mixture.weight_array(start)) for start in starts]
        self._loss = [mixture.loss_weight_array(start).astype(np.float32) for start in starts]
        self._block: tuple[int, np.ndarray] | None = None

    def _inner(self, name: str, num_sequences: Mapping[str, int]) -> RoundSampler | None:
        count = int(num_sequences.get(name, 0))
        if count == 0:
            if name in self.mixture.drawn_sources():
                raise ValueError(f"source {name!r} has weight > 0 but no sequences in the shards")
            return None
        # Each source's seed stream is keyed by its name, so adding a source leaves the others' orders alone.
        config = self.inner_config
        seed = int(np.random.SeedSequence([self.seed, zlib.crc32(name.encode())]).generate_state(1)[0])
        return RS2Config(config.fraction, config.mode, seed).build(count)

    def next_batch(self) -> Batch:
        step = self.step
        phase = self.mixture.phase(step)
        live, cdf = self._cdfs[phase]
        # Inverse-CDF draw over the sources with weight > 0: one categorical per slot.
        picks = np.searchsorted(cdf, self._uniforms(step, 1)[0], side="right")
        counts = np.zeros(len(self.sources), dtype=np.int64)
        counts[live] = np.bincount(picks, minlength=len(live))
        parts = [self.samplers[p].take(int(counts[p])) for p in np.flatnonzero(counts)]
        indices = np.concatenate(parts).astype(np.int64, copy=False)
        source_ids = np.repeat(self._positions, counts)
        loss = np.repeat(self._loss[phase], counts)
        self.step += 1
        return Batch(step, source_ids, indices, loss)

    def next_block(self, steps: int) -> Block:
        """The next `steps` batches drawn at once: the same draws as that many
        `next_batch()` calls, for a loader that reads ahead."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        first = self.step
        uniforms = self._uniforms(first, steps)
        source_ids = np.empty((steps, self.batch_size), dtype=np.int32)
        loss = np.empty((steps, self.batch_size), dtype=np.float32)
        runs = self._phase_runs(first, steps)
        for phase, a, b in runs:
            live, cdf = self._cdfs[phase]
            source_ids[a:b] = live[np.searchsorted(cdf, uniforms[a:b], side="right")]
        source_ids.sort(axis=1)  # grouped by source inside each batch, as next_batch gives
        for phase, a, b in runs:
            loss[a:b] = self._loss[phase][source_ids[a:b]]
        indices = np.empty((steps, self.batch_size), dtype=np.int64)
        flat_ids, flat_indices = source_ids.ravel(), indices.ravel()
        # Row-major order is step order, so each source's stream is consumed as next_batch would.
        for position in np.unique(flat_ids):
            slots = flat_ids == position
            flat_indices[slots] = self.samplers[position].take(int(slots.sum()))
        self.step += steps
        return Block(first, source_ids, indices, loss)

    def _phase_runs(self, first: int, steps: int) -> list[tuple[int, int, int]]:
        """(phase, first row, end row) for the steps first .. first + steps - 1."""
        phases = np.searchsorted(self._starts, np.arange(first, first + steps), side="right") - 1
        cuts = [0, *(np.flatnonzero(np.diff(phases)) + 1).tolist(), steps]
        return [(int(phases[a]), a, b) for a, b in itertools.pairwise(cuts)]

    def _uniforms(self, first: int, steps: int) -> np.ndarray:
        # One Generator per block of 256 steps, seeded by (seed, block): cheap per
        # step, and any step's draw can be recomputed from the seed alone.
        rows = []
        step, end = first, first + steps
        while step < end:
            block, row = divmod(step, _BLOCK)
            if self._block is None or self._block[0] != block:
                rng = np.random.Generator(np.random.PCG64([self.seed, block]))
                self._block = (block, rng.random((_BLOCK, self.batch_size)))
            take = min(end - step, _BLOCK - row)
            rows.append(self._block[1][row : row + take])
            step += take
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def __iter__(self) -> Iterator[Batch]:
        """Batches until the mixture's total_steps."""
        while self.step < self.mixture.total_steps:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "sources": list(self.sources),
            "step": self.step,
            "inner": [s.state_dict() if s is not None else None for s in self.samplers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_size", "sources"):
            if state.get(key) != getattr(self, key):
                have = getattr(self, key)
                raise ValueError(f"state was saved with {key}={state.get(key)!r}, this sampler has {have!r}")
        for sampler, inner in zip(self.samplers, state["inner"], strict=True):
            if sampler is not None:
                sampler.load_state_dict(inner)
        self.step = int(state["step"])


def source_rounds(
    mixture: Mixture, counts: Mapping[str, int], fraction: float, batch_size: int, steps: int
) -> dict[str, float]:
    """RS2 inside each source: the rounds each source's sampler goes through in
    the first `steps` steps, expected (its draws under the schedule over its
    r*N_i). Equal across sources only when the mixture is proportional to them."""
    starts = mixture.phase_starts()
    draws = np.zeros(len(mixture.sources))
    for start, end in zip(starts, [*starts[1:], max(steps, starts[-1])], strict=True):
        draws += max(0, min(end, steps) - start) * batch_size * mixture.weight_array(start)
    return {
        name: float(draws[i] / per_round(int(counts[name]), fraction))
        for i, name in enumerate(mixture.sources)
        if counts.get(name, 0) > 0
    }
