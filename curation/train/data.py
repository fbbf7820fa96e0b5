"""What the loop reads: batches of token sequences with their sources and loss weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from curation.selectors.mixture import Mixture, MixtureConfig
from curation.selectors.replay import LossRankedReplay, ReplayConfig
from curation.selectors.rs2 import RS2Config
from curation.selectors.sampler import MixtureSampler, source_rounds
from curation.storage.shards import ShardReader
from curation.train.loader import ShardLoader


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


class ShardSource:
    """Batches from a shard set through the mixture sampler (temperature or
    Cooldown, scalarization weights, RS2 inside each source), with the last
    `holdout` sequences of each source kept out of training for validation."""

    def __init__(
        self,
        shards: str,
        batch_size: int,
        steps: int,
        mixture: MixtureConfig,
        rs2: RS2Config | None = None,
        seed: int = 0,
        holdout: int = 16,
        verify: str = "open",
    ):
        reader = ShardReader(shards, verify=verify)
        self.train_counts = train_counts(reader, holdout)
        self.holdout = {name: reader.num_sequences(name) - n for name, n in self.train_counts.items()}
        sizes = {name: reader.index["sources"][name][mixture.unit] for name in reader.sources}
        fitted = Mixture(mixture).fit(sizes, steps)
        sampler = MixtureSampler(fitted, self.train_counts, batch_size, seed=seed, inner=rs2)
        self.reader, self.mixture, self.batch_size, self.rs2 = reader, fitted, batch_size, rs2
        self.loader = ShardLoader(reader, sampler)
        self.sources = list(sampler.sources)

    @property
    def context(self) -> int:
        """Model context: a shard row holds context + 1 tokens (inputs and shifted targets)."""
        return int(self.reader.index["seq_len"]) - 1

    @property
    def vocab_size(self) -> int:
        return self.reader.tokenizer().get_vocab_size()

    def next_batch(self, step: int, size: int) -> Batch:
        if size != self.batch_size:
            raise ValueError(f"the sampler was built for batches of {self.batch_size}, not {size}")
        loaded = self.loader.next()
        return Batch(
            torch.from_numpy(loaded.tokens.astype(np.int64)),
            [self.sources[i] for i in loaded.source_ids],
            torch.from_numpy(loaded.loss_weights.astype(np.float32)),
        )

    def rs2_rounds(self, steps: int) -> dict[str, float] | None:
        """With RS2: the rounds each source's sampler goes through in `steps` steps."""
        if self.rs2 is None:
            return None
        return source_rounds(self.mixture, self.train_counts, self.rs2.fraction, self.batch_size, steps)

    def validation(self) -> dict[str, torch.Tensor]:
        held = {}
        for name, count in self.holdout.items():
            if count:
                total = self.reader.num_sequences(name)
                rows = self.reader.get_many(name, np.arange(total - count, total))
                held[name] = torch.from_numpy(np.array(rows, dtype=np.int64))
        return held

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


def holdout_size(sequences: int, wanted: int) -> int:
    """Validation rows for one source: `wanted`, but never more than a fifth of it."""
    return min(wanted, sequences // 5)


def train_counts(reader: ShardReader, holdout: int) -> dict[str, int]:
    """Training rows per source: its sequences less the validation rows held out."""
    counts = {name: reader.num_sequences(name) for name in reader.sources}
    return {name: n - holdout_size(n, holdout) for name, n in counts.items()}


class ReplaySource:
    """Loss-ranked replay over fixed batches of a shard set's training rows.

    Batch membership is drawn once (seeded); `LossRankedReplay` picks which
    batch each step trains on, fed by the loop's `observe`.
    """

    def __init__(self, shards: ShardSource, config: ReplayConfig):
        rows = [(i, n) for i, name in enumerate(shards.sources) for n in range(shards.train_counts[name])]
        order = np.random.default_rng(config.seed).permutation(len(rows))
        size = shards.batch_size
        self.batches = [
            np.array([rows[j] for j in order[k : k + size]]) for k in range(0, len(order) - size + 1, size)
        ]
        if not self.batches:
            raise ValueError(f"fewer training rows ({len(rows)}) than one batch ({size})")
        self.shards, self.replay = shards, LossRankedReplay(len(self.batches), config)
        self.current = -1

    def next_batch(self, step: int, size: int) -> Batch:
        self.current = self.replay.next_batch_id()
        pairs = self.batches[self.current]
        reader, sources = self.shards.reader, self.shards.sources
        tokens = np.stack([reader.get(sources[s], int(n)) for s, n in pairs]).astype(np.int64)
        return Batch(torch.from_numpy(tokens), [sources[s] for s, _ in pairs], torch.ones(len(pairs)))

    def observe(self, step: int, loss: float) -> None:
        self.replay.observe(self.current, loss)

    def validation(self) -> dict[str, torch.Tensor]:
        return self.shards.validation()

    def state_dict(self) -> dict:
        return {"replay": self.replay.state_dict(), "current": self.current}

    def load_state_dict(self, state: dict) -> None:
        self.replay.load_state_dict(state["replay"])
        self.current = state["current"]


@dataclass(frozen=True)
class TopicConfig:
    """One-cluster batches (TAS-Balanced, papers §8): the training sequences are
    clustered once (hashed n-gram embeddings of their text, FAISS k-means) and
    each batch is filled from one cluster drawn in proportion to its size; a
    cluster too small for a batch is topped up from the next cluster drawn."""

    clusters: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.clusters < 1:
            raise ValueError("clusters must be positive")


class TopicSource:
    def __init__(self, shards: ShardSource, config: TopicConfig):
        from curation.embeddings import HashedEncoder, KMeansConfig, assign, fit_kmeans

        self.shards, self.config = shards, config
        pairs = [(i, n) for i, name in enumerate(shards.sources) for n in range(shards.train_counts[name])]
        self.pairs = np.array(pairs, dtype=np.int64)
        tokenizer, reader = shards.reader.tokenizer(), shards.reader
        texts = tokenizer.decode_batch([reader.get(shards.sources[s], int(n)).tolist() for s, n in pairs])
        vectors = HashedEncoder(seed=config.seed).encode(texts)
        k = min(config.clusters, len(pairs))
        model = fit_kmeans(vectors, k, KMeansConfig(niter=20, seed=config.seed))
        labels, _ = assign(vectors, model)
        self.members = [np.flatnonzero(labels == c) for c in range(k)]
        sizes = np.array([len(m) for m in self.members], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.rng = np.random.default_rng(config.seed)
        self.cursor = np.zeros(k, dtype=np.int64)  # position in each cluster's endless shuffled order

    def _take(self, cluster: int, count: int) -> np.ndarray:
        members = self.members[cluster]
        out = []
        for _ in range(count):
            epoch, position = divmod(int(self.cursor[cluster]), len(members))
            order = np.random.default_rng([self.config.seed, cluster, epoch]).permutation(len(members))
            out.append(members[order[position]])
            self.cursor[cluster] += 1
        return np.array(out, dtype=np.int64)

    def next_batch(self, step: int, size: int) -> Batch:
        chosen: list[np.ndarray] = []
        while sum(len(c) for c in chosen) < size:
            cluster = int(self.rng.choice(len(self.members), p=self.weights))
            room = size - sum(len(c) for c in chosen)
            chosen.append(self._take(cluster, min(room, len(self.members[cluster]))))
        self.last_rows = np.concatenate(chosen)  # positions in `pairs`, for inspection
        rows = self.pairs[self.last_rows]
        reader, sources = self.shards.reader, self.shards.sources
        tokens = np.stack([reader.get(sources[s], int(n)) for s, n in rows]).astype(np.int64)
        return Batch(torch.from_numpy(tokens), [sources[s] for s, _ in rows], torch.ones(len(rows)))

    def validation(self) -> dict[str, torch.Tensor]:
        return self.shards.validation()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "cursor": self.cursor.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.cursor = np.array(state["cursor"], dtype=np.int64)
