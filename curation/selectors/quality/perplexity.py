"""Reference-model perplexity ("Perplexed by Perplexity", Ankner et al. 2024,
arXiv 2405.20541): train a small language model on a random slice of the pool
with the bundled trainer, score every document by its mean next-token loss
(nats per token, over its first `max_tokens` tokens), and keep a band of the
ranking: the low, middle or high `fraction`. The paper's best band depends on
the domain; bands are cut inside each source, whose losses differ in scale
(code is easier to predict than prose).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from curation.device import CPU, Device
from curation.storage.tokenizer import EOS, TokenizerConfig, save_tokenizer, tokenizer_from_texts
from curation.train.data import ArraySource
from curation.train.loop import TrainConfig, Trainer
from curation.train.model import GPTConfig
from curation.train.schedules import Schedule

BANDS = ("low", "middle", "high")


@dataclass(frozen=True)
class PerplexityConfig:
    """Fields:
    slice_documents: pool documents (a seeded random slice) the reference model learns from.
    vocab_size, context, layers, heads, width: the reference GPT and its BPE tokenizer.
    steps, batch_size, lr: its training (sequences of `context` + 1 tokens).
    max_tokens: each document is scored on its first `max_tokens` tokens.
    band: low, middle or high: keep that band of each source's ranking (None: score only).
    fraction: the band's share of each source's documents.
    seed: the slice, the model's initialisation and its batches.
    threads: torch threads while training and scoring (a model this small runs
        fastest on one, and a shared machine stays responsive).
    """

    slice_documents: int = 2000
    vocab_size: int = 1024
    context: int = 128
    layers: int = 2
    heads: int = 2
    width: int = 64
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3
    max_tokens: int = 256
    band: str | None = None
    fraction: float = 0.5
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        if self.band is not None and self.band not in BANDS:
            raise ValueError(f"band {self.band!r}: use low, middle or high")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction {self.fraction} must be in (0, 1]")
        if min(self.slice_documents, self.steps, self.batch_size, self.max_tokens, self.context) < 1:
            raise ValueError("slice_documents, steps, batch_size, max_tokens and context must be positive")

    def train_config(self, vocab_size: int) -> TrainConfig:
        shape = {"layers": self.layers, "heads": self.heads, "width": self.width}
        model = GPTConfig(vocab_size=vocab_size, context=self.context, **shape)
        warmup = min(20, self.steps // 10)
        return TrainConfig(
            model=model,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            schedule=Schedule(warmup=warmup),
            eval_every=self.steps,
            checkpoint_every=self.steps,
            seed=self.seed,
        )


class ReferenceModel:
    """fit(slice texts, folder) trains the tokenizer and the GPT (checkpoint in
    `folder`); score(texts) gives each text's mean token loss."""

    def __init__(self, config: PerplexityConfig | None = None, device: Device = CPU):
        self.config = config or PerplexityConfig()
        self.device = device
        self.tokenizer = None
        self.model = None

    def fit(self, texts: Sequence[str], folder: str | Path) -> ReferenceModel:
        with torch_threads(self.config.threads):
            return self._fit(texts, Path(folder))

    def _fit(self, texts: Sequence[str], folder: Path) -> ReferenceModel:
        c = self.config
        tokenizer = tokenizer_from_texts(texts, TokenizerConfig(vocab_size=c.vocab_size))
        eos = tokenizer.token_to_id(EOS)
        stream = np.fromiter(
            (t for e in tokenizer.encode_batch(list(texts)) for t in (*e.ids, eos)), dtype=np.int64
        )
        rows = len(stream) // (c.context + 1)
        if rows < 1:
            raise ValueError(f"the slice has {len(stream)} tokens: not one sequence of {c.context + 1}")
        sequences = stream[: rows * (c.context + 1)].reshape(rows, c.context + 1)
        data = ArraySource({"slice": sequences}, seed=c.seed)
        trainer = Trainer(c.train_config(tokenizer.get_vocab_size()), data, folder, device=self.device)
        trainer.train()
        save_tokenizer(tokenizer, str(folder / "tokenizer.json"))
        self.tokenizer, self.model = tokenizer, trainer.model.eval()
        return self

    def on(self, device: Device) -> ReferenceModel:
        """This model with its weights moved to `device` (for a worker of another kind)."""
        self.device = device
        if self.model is not None:
            self.model.to(device.torch_device)
        return self

    def score(self, texts: Sequence[str], batch_windows: int = 64) -> np.ndarray:
        """Mean next-token loss (nats) of each text's first `max_tokens` tokens,
        predicted from an EOS (the document boundary the model trained on)."""
        if self.model is None:
            raise ValueError("fit the reference model first")
        with torch_threads(self.config.threads), torch.no_grad():
            return self._score(texts, batch_windows)

    def _score(self, texts: Sequence[str], batch_windows: int) -> np.ndarray:
        c = self.config
        eos = self.tokenizer.token_to_id(EOS)
        windows, owners = [], []
        # A token spans a few characters: the first 32 per token wanted always suffice.
        openings = [t[: 32 * c.max_tokens] for t in texts]
        for i, encoding in enumerate(self.tokenizer.encode_batch(openings)):
            tokens = [eos, *encoding.ids[: c.max_tokens]]
            for start in range(0, len(tokens) - 1, c.context):
                windows.append(tokens[start : start + c.context + 1])
                owners.append(i)
        if not windows:
            return np.zeros(len(texts))
        total = np.zeros(len(texts))
        count = np.zeros(len(texts))
        order = sorted(range(len(windows)), key=lambda w: len(windows[w]))
        for k in range(0, len(order), batch_windows):
            chunk = order[k : k + batch_windows]
            losses, lengths = self._losses([windows[w] for w in chunk], eos)
            for w, loss, length in zip(chunk, losses, lengths, strict=True):
                total[owners[w]] += loss
                count[owners[w]] += length
        return total / np.maximum(count, 1)

    def _losses(self, windows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
        """Summed loss and predicted-token count of each window."""
        lengths = np.array([len(w) for w in windows])
        tokens = np.full((len(windows), lengths.max()), pad, dtype=np.int64)
        for row, window in enumerate(windows):
            tokens[row, : len(window)] = window
        mask = torch.from_numpy(np.arange(lengths.max() - 1)[None, :] < (lengths - 1)[:, None])
        batch = torch.from_numpy(tokens).to(self.device.torch_device)
        with self.device.autocast():
            logits = self.model(batch[:, :-1])
        losses = F.cross_entropy(logits.float().transpose(1, 2), batch[:, 1:], reduction="none").cpu()
        return (losses * mask).sum(dim=1).numpy(), lengths - 1


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def band_mask(scores: np.ndarray, groups: np.ndarray, band: str, fraction: float) -> np.ndarray:
    """Whether each document lies in `band` (low, middle, high) of its group's
    ranking by score; the band holds round(fraction * group size) documents."""
    if band not in BANDS:
        raise ValueError(f"band {band!r}: use low, middle or high")
    keep = np.zeros(len(scores), dtype=bool)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        ranked = rows[np.argsort(scores[rows], kind="stable")]
        size = round(fraction * len(rows))
        start = {"low": 0, "middle": (len(rows) - size) // 2, "high": len(rows) - size}[band]
        keep[ranked[start : start + size]] = True
    return keep
