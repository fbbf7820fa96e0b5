"""The training-time reader: a mixture sampler's batches, read from a shard set (storage reads the shards).

`ShardLoader` draws `read_ahead` steps at once (`MixtureSampler.next_block`)
and reads them with one copy per source, which keeps the per-step Python cost
small next to the copy itself. Its state is the sampler's state at the start
of the current block plus the position inside it, so a resumed loader gives
exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.selectors.mixture import Mixture, MixtureConfig
from curation.selectors.rs2 import RS2Config
from curation.selectors.sampler import Block, MixtureSampler
from curation.storage.fs import Location
from curation.storage.shards import ShardReader


@dataclass(frozen=True)
class LoadedBatch:
    step: int
    tokens: np.ndarray  # (batch, seq_len); inputs are tokens[:, :-1], targets tokens[:, 1:]
    source_ids: np.ndarray  # position in the loader's `sources`
    loss_weights: np.ndarray  # per row; all 1 unless the mixture scalarizes


class ShardLoader:
    """Iterates batches of token rows until the mixture's total_steps."""

    def __init__(self, reader: ShardReader, sampler: MixtureSampler, read_ahead: int = 16):
        if read_ahead < 1:
            raise ValueError(f"read_ahead must be >= 1, got {read_ahead}")
        missing = [s for s in sampler.mixture.drawn_sources() if s not in reader.sources]
        if missing:
            raise ValueError(f"{reader.folder}: sources {missing} are in the mixture but not in the shards")
        self.reader, self.sampler, self.read_ahead = reader, sampler, read_ahead
        self.sources = sampler.sources
        self._block: Block | None = None
        self._rows: np.ndarray | None = None
        self._block_state = sampler.state_dict()
        self._offset = 0

    @property
    def step(self) -> int:
        return self._block_state["step"] + self._offset

    def next(self) -> LoadedBatch:
        if self._block is None or self._offset >= len(self._block):
            self._draw(self.read_ahead)
        i = self._offset
        self._offset += 1
        block = self._block
        return LoadedBatch(block.first_step + i, self._rows[i], block.source_ids[i], block.loss_weights[i])

    def __iter__(self) -> Iterator[LoadedBatch]:
        while self.step < self.sampler.mixture.total_steps:
            yield self.next()

    def _draw(self, steps: int) -> None:
        if self._block is not None:
            self._block_state, self._offset = self.sampler.state_dict(), 0
        left = self.sampler.mixture.total_steps - self.sampler.step
        self._block = self.sampler.next_block(min(steps, left) if left > 0 else steps)
        self._rows = self.reader.read_batch(self.sources, self._block.source_ids, self._block.indices)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self._block_state, "offset": self._offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self._block_state, self._block, self._offset = state["sampler"], None, 0
        offset = int(state["offset"])
        if offset:
            # The draws do not depend on the block size, so one block covering the offset is exact.
            self._draw(max(self.read_ahead, offset))
            self._offset = offset


def open_loader(
    shards: str | Location,
    batch_size: int,
    total_steps: int,
    mixture: MixtureConfig | None = None,
    inner: RS2Config | None = None,
    seed: int = 0,
    read_ahead: int = 16,
    verify: str = "open",
) -> ShardLoader:
    """A loader over a shard set whose mixture weighs sources by their size in
    `mixture.unit` from index.json: tokens by default (in proportion to the
    packed sequences drawn), or documents."""
    reader = ShardReader(shards, verify=verify)
    mixture = mixture or MixtureConfig()
    sizes = {name: reader.index["sources"][name][mixture.unit] for name in reader.sources}
    fitted = Mixture(mixture).fit(sizes, total_steps)
    counts = {name: reader.num_sequences(name) for name in reader.sources}
    sampler = MixtureSampler(fitted, counts, batch_size, seed=seed, inner=inner)
    return ShardLoader(reader, sampler, read_ahead)
