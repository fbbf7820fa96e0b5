"""Byte-level BPE tokenizers: trained on a sample of a documents dataset, or loaded.

Byte-level means every string encodes (no unknown token) and decodes back
exactly. The one special token is EOS, which separates packed documents.
Nothing is downloaded: a tokenizer is trained here or read from a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from curation.errors import CurationError
from curation.storage.dataset import Dataset
from curation.storage.fs import Location, resolve, write_bytes_atomic

EOS = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
CHARS_PER_TOKEN = 4  # the estimate before a tokenizer exists (or has counted a source)


def estimated_tokens(n_chars):
    """Tokens a text of `n_chars` characters is estimated to take: n_chars / 4,
    rounded up (an int or an array of them)."""
    return -(-np.asarray(n_chars) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class TokenizerConfig:
    """Fields:
    vocab_size: final vocabulary, bytes and EOS included (>= 257).
    min_frequency: a pair must occur this often to be merged.
    sample_documents: documents drawn (uniformly, seeded) to train on.
    sample_chars: stop adding documents once the sample holds this many characters.
    seed: picks the sample.
    """

    vocab_size: int = 8192
    min_frequency: int = 2
    sample_documents: int = 50_000
    sample_chars: int = 50_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        # 256 byte symbols plus EOS is the smallest vocabulary that can encode anything.
        if not isinstance(self.vocab_size, int) or not 257 <= self.vocab_size <= 2**32 - 1:
            raise ValueError(f"vocab_size must be an integer in [257, 2**32), got {self.vocab_size!r}")
        for name in ("min_frequency", "sample_documents", "sample_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


def new_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def sample_texts(
    documents: Dataset, config: TokenizerConfig, keep: np.ndarray | None = None
) -> Iterator[str]:
    """A seeded uniform sample of texts, streamed; `keep` masks rows out first."""
    available = documents.rows if keep is None else int(keep.sum())
    rate = min(1.0, config.sample_documents / max(available, 1))
    rng = np.random.default_rng(config.seed)
    offset, chars = 0, 0
    for batch in documents.iter_batches(["text"], batch_size=8192):
        draw = rng.random(batch.num_rows) < rate
        if keep is not None:
            draw &= keep[offset : offset + batch.num_rows]
        offset += batch.num_rows
        for text in batch.column(0).filter(pa.array(draw)).to_pylist():
            yield text
            chars += len(text)
            if chars >= config.sample_chars:
                return


def train_tokenizer(
    documents: str | Location | Dataset,
    out: str | Location | None = None,
    config: TokenizerConfig | None = None,
    keep: np.ndarray | None = None,
) -> Tokenizer:
    """Train a byte-level BPE on a sample of `documents`; save it to `out` if given."""
    config = config or TokenizerConfig()
    dataset = documents if isinstance(documents, Dataset) else Dataset.open(documents)
    tokenizer = tokenizer_from_texts(sample_texts(dataset, config, keep), config)
    if out is not None:
        save_tokenizer(tokenizer, out)
    return tokenizer


def tokenizer_from_texts(texts: Iterable[str], config: TokenizerConfig) -> Tokenizer:
    """A byte-level BPE trained on `texts` (all of them: no sampling here)."""
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out: str | Location) -> None:
    write_bytes_atomic(resolve(out), tokenizer_bytes(tokenizer))


def tokenizer_bytes(tokenizer: Tokenizer) -> bytes:
    return tokenizer.to_str(pretty=True).encode()


def load_tokenizer(path: str | Location) -> Tokenizer:
    """Read a tokenizer.json (a file, or a folder holding one); it must know EOS."""
    loc = resolve(path)
    if loc.is_dir():
        loc = loc.join(TOKENIZER_FILE)
    if not loc.exists():
        raise CurationError(f"{loc}: no such tokenizer file")
    with loc.fs.open_input_stream(loc.path) as handle:
        data = handle.read()
    try:
        tokenizer = Tokenizer.from_str(data.decode())
    except Exception as exc:  # the library raises a bare Exception for bad JSON
        raise CurationError(f"{loc}: not a readable tokenizer.json ({exc})") from exc
    if tokenizer.token_to_id(EOS) is None:
        raise CurationError(f"{loc}: the tokenizer has no {EOS} token to separate documents")
    return tokenizer


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON: equal hashes, equal token ids."""
    return hashlib.sha256(tokenizer_bytes(tokenizer)).hexdigest()


def eos_id(tokenizer: Tokenizer) -> int:
    token = tokenizer.token_to_id(EOS)
    if token is None:
        raise CurationError(f"the tokenizer has no {EOS} token")
    return token


def token_dtype(tokenizer: Tokenizer) -> np.dtype:
    """uint16 while every id fits, else uint32."""
    return np.dtype(np.uint16) if tokenizer.get_vocab_size() <= 65536 else np.dtype(np.uint32)
