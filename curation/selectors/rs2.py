"""RS2: repeated random subsets of the data, one per round (Okanovic et al., ICLR 2024).

Each round trains on r*N examples. Without replacement (the default) the
sampler shuffles once, walks consecutive chunks of the permutation and
reshuffles when it is used up, so every example is seen once before any is
seen twice. With replacement each round is a fresh uniform subset. The
baseline the paper beats is a static random subset of r*N examples, reshuffled
each round.

A trainer asked for R rounds runs `steps_run` steps, R * r*N / batch, and its
learning-rate schedule spans those steps; inside a mixture RS2 runs in each
source and a round is every source's r*N_i (reference: PatrikOkanovic/RS2,
src/DeepCore/main.py: a new subset each epoch, the cosine schedule over
len(train_loader) * epochs, the last partial batch dropped for
deepcore/methods/uniform_no_replacement.py).

Every round's indices are a pure function of (seed, round), so a sampler's
state is just (round, cursor): resuming from `state_dict()` mid-round gives
exactly the same order as never stopping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("without_replacement", "with_replacement", "static")
_BLOCK_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class RS2Config:
    """Fields:
    fraction: r, the share of the N examples used per round (the paper's 10%).
    mode: "without_replacement" (RS2 default), "with_replacement", or "static"
        (the fixed-subset baseline).
    seed: all randomness derives from it.
    rounds: for a trainer, how many rounds to train; the steps follow
        (`steps_run`). None: the trainer's own step count decides.
    """

    fraction: float = 0.1
    mode: str = "without_replacement"
    seed: int = 0
    rounds: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float):
            raise ValueError(f"fraction must be a number in (0, 1], got {self.fraction!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        _check_seed(self.seed)
        if self.rounds is not None and (
            isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1
        ):
            raise ValueError(f"rounds must be an integer >= 1, got {self.rounds!r}")

    def build(self, num_examples: int) -> RoundSampler:
        kinds = {
            "without_replacement": RS2WithoutReplacement,
            "with_replacement": RS2WithReplacement,
            "static": StaticSubset,
        }
        return kinds[self.mode](num_examples, self.fraction, self.seed)


def per_round(num_examples: int, fraction: float) -> int:
    """r*N, rounded, and at least one example."""
    return max(1, round(fraction * num_examples))


def steps_run(
    num_examples: int | Sequence[int],
    fraction: float,
    rounds: int,
    batch_size: int,
    drop_last: bool = False,
) -> int:
    """Optimizer steps that `rounds` RS2 rounds take: the span the LR schedule
    must cover (rounds * r*N / batch), not the full-data epochs. Several counts
    (RS2 inside each source of a mixture): a round is every source's r*N_i.
    `drop_last`: a round's last partial batch is not a step (the reference's
    loader for RS2 without replacement)."""
    if rounds < 0 or batch_size < 1:
        raise ValueError(f"rounds must be >= 0 and batch_size >= 1, got {rounds}, {batch_size}")
    counts = [num_examples] if isinstance(num_examples, int | np.integer) else list(num_examples)
    size = sum(per_round(n, fraction) for n in counts)
    per = size // batch_size if drop_last else math.ceil(size / batch_size)
    return rounds * per


class RoundSampler:
    """Indices into N examples, round after round; subclasses define `round_indices`."""

    mode = ""

    def __init__(self, num_examples: int, fraction: float = 0.1, seed: int = 0):
        if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
            raise ValueError(f"num_examples must be an integer, got {num_examples!r}")
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        RS2Config(fraction=fraction, mode=self.mode, seed=seed)  # validates
        self.num_examples = int(num_examples)
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.per_round = per_round(self.num_examples, self.fraction)
        self.round = 0  # the round the next index comes from
        self.cursor = 0  # position inside that round
        self._cached: tuple[int, np.ndarray] | None = None

    def round_indices(self, round_index: int) -> np.ndarray:
        raise NotImplementedError

    def current_round(self) -> np.ndarray:
        if self._cached is None or self._cached[0] != self.round:
            self._cached = (self.round, self.round_indices(self.round))
        return self._cached[1]

    def take(self, count: int) -> np.ndarray:
        """The next `count` indices of the stream, crossing rounds as needed."""
        if count <= self.per_round - self.cursor:  # the common case: inside one round
            out = self.current_round()[self.cursor : self.cursor + count]
            self._advance(count)
            return out
        parts = []
        while count > 0:
            step = min(count, self.per_round - self.cursor)
            parts.append(self.current_round()[self.cursor : self.cursor + step])
            self._advance(step)
            count -= step
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def next_round(self) -> np.ndarray:
        """What is left of the current round; the next call starts the following round."""
        return self.take(self.per_round - self.cursor)

    def _advance(self, count: int) -> None:
        self.cursor += count
        if self.cursor == self.per_round:
            self.round, self.cursor = self.round + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "num_examples": self.num_examples,
            "fraction": self.fraction,
            "seed": self.seed,
            "round": self.round,
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("mode", "num_examples", "fraction", "seed"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"state was saved by a sampler with {key}={state.get(key)!r}, this one has "
                    f"{getattr(self, key)!r}"
                )
        if not 0 <= state["cursor"] < self.per_round or state["round"] < 0:
            raise ValueError(f"state position round={state['round']} cursor={state['cursor']} is invalid")
        self.round, self.cursor = int(state["round"]), int(state["cursor"])


class RS2WithoutReplacement(RoundSampler):
    """Consecutive chunks of one permutation; a new permutation once it is used up.

    Rounds are read off the endless sequence perm_0 + perm_1 + ..., so a round
    may end one epoch and start the next: every example comes once before any
    comes twice, and every round has exactly r*N examples.
    """

    mode = "without_replacement"

    def __init__(self, num_examples: int, fraction: float = 0.1, seed: int = 0):
        super().__init__(num_examples, fraction, seed)
        # Small datasets go through many epochs: shuffle a block of them at once.
        self.epochs_per_block = max(1, _BLOCK_ELEMENTS // self.num_examples)
        self._blocks: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        block, row = divmod(epoch, self.epochs_per_block)
        if block not in self._blocks:
            if len(self._blocks) >= 2:  # memory stays at two blocks
                self._blocks.pop(min(self._blocks))
            rng = np.random.default_rng([self.seed, block])
            # int32 while it fits: half the memory of a permutation of a large dataset.
            dtype = np.int32 if self.num_examples < 2**31 else np.int64
            rows = np.tile(np.arange(self.num_examples, dtype=dtype), (self.epochs_per_block, 1))
            rng.permuted(rows, axis=1, out=rows)
            self._blocks[block] = rows
        return self._blocks[block][row]

    def round_indices(self, round_index: int) -> np.ndarray:
        return self.stream(round_index * self.per_round, self.per_round)

    def stream(self, start: int, count: int) -> np.ndarray:
        """Positions [start, start + count) of perm_0 + perm_1 + ..."""
        end = start + count
        parts = []
        while start < end:
            epoch, offset = divmod(start, self.num_examples)
            step = min(end - start, self.num_examples - offset)
            parts.append(self.permutation(epoch)[offset : offset + step])
            start += step
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def take(self, count: int) -> np.ndarray:
        # Rounds are consecutive pieces of one stream, so read the stream directly
        # (many rounds at once when rounds are small).
        out = self.stream(self.round * self.per_round + self.cursor, count)
        self.round, self.cursor = divmod(self.round * self.per_round + self.cursor + count, self.per_round)
        return out


class RS2WithReplacement(RoundSampler):
    """A fresh uniform subset of r*N distinct examples every round."""

    mode = "with_replacement"

    def round_indices(self, round_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, round_index])
        return rng.choice(self.num_examples, size=self.per_round, replace=False)


class StaticSubset(RoundSampler):
    """The baseline: one random subset of r*N examples, in a new order each round."""

    mode = "static"

    def __init__(self, num_examples: int, fraction: float = 0.1, seed: int = 0):
        super().__init__(num_examples, fraction, seed)
        # A different seed stream from the per-round shuffles.
        rng = np.random.default_rng([self.seed, 2**32])
        self.subset = np.sort(rng.choice(self.num_examples, size=self.per_round, replace=False))

    def round_indices(self, round_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, round_index])
        return self.subset[rng.permutation(self.per_round)]


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
