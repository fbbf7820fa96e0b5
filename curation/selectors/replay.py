"""Loss-ranked mini-batch replay ("Can we learn better with hard samples?", papers §7).

Batch membership is fixed. The first pass visits every batch once in a
shuffled order; after that, each pass revisits only the top `delta` fraction
of batches ranked by their last recorded loss. Losses of batches not revisited
stay stale, as in the paper. The caller owns the step budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ReplayConfig:
    delta: float = 0.5  # fraction of batches replayed after the first pass
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.delta <= 1:
            raise ValueError(f"delta must be in (0, 1], got {self.delta}")


class LossRankedReplay:
    def __init__(self, num_batches: int, config: ReplayConfig = ReplayConfig()):
        if num_batches < 1:
            raise ValueError("num_batches must be positive")
        self.config = config
        self.losses = np.full(num_batches, np.inf)  # unseen batches rank first
        self.rng = np.random.default_rng(config.seed)
        self.passes = 0
        self.queue = self.rng.permutation(num_batches).tolist()

    def next_batch_id(self) -> int:
        if not self.queue:
            self._plan_pass()
        return self.queue.pop(0)

    def observe(self, batch_id: int, loss: float) -> None:
        self.losses[batch_id] = loss

    def _plan_pass(self) -> None:
        self.passes += 1
        count = max(1, round(self.config.delta * len(self.losses)))
        # stable sort on -loss: ties keep batch order, so a seed fixes the plan
        top = np.argsort(-self.losses, kind="stable")[:count]
        self.queue = self.rng.permutation(top).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "losses": [float(x) for x in self.losses],
            "rng": self.rng.bit_generator.state,
            "passes": self.passes,
            "queue": list(map(int, self.queue)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = np.array(state["losses"], dtype=float)
        self.rng.bit_generator.state = state["rng"]
        self.passes = state["passes"]
        self.queue = list(state["queue"])
