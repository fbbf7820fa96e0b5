"""What the loop reads: batches of token sequences with their sources and loss weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class Batch:
    sequences: torch.Tensor  # (n, context + 1) token ids
    sources: list[str]
    loss_weights: torch.Tensor  # (n,), 1 unless scalarization weighs sources


class BatchSource(Protocol):
    """Anything the loop can draw from; resumable through its state dict."""

    def next_batch(self, step: int, size: int) -> Batch: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ArraySource:
    """Uniform draws over in-memory sequences per source: for tests and small runs."""

    def __init__(self, sequences: dict[str, np.ndarray], seed: int = 0):
        self.sources = sorted(sequences)
        self.data = np.concatenate([sequences[s] for s in self.sources])
        self.labels = np.concatenate([[s] * len(sequences[s]) for s in self.sources])
        self.rng = np.random.default_rng(seed)

    def next_batch(self, step: int, size: int) -> Batch:
        rows = self.rng.integers(0, len(self.data), size=size)
        return Batch(
            torch.from_numpy(self.data[rows].astype(np.int64)),
            [str(s) for s in self.labels[rows]],
            torch.ones(size),
        )

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
