"""Byte-level sequences of real text per source, for training tests that need no tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import stdlib_docstrings

CONTEXT = 32


def byte_sequences(texts: list[str], context: int = CONTEXT) -> np.ndarray:
    stream = np.frombuffer("\n".join(texts).encode("utf-8"), dtype=np.uint8).astype(np.int64)
    count = len(stream) // (context + 1)
    return stream[: count * (context + 1)].reshape(count, context + 1)


@pytest.fixture(scope="session")
def sources() -> dict[str, np.ndarray]:
    """Three sources of very different sizes, as in any real mixture."""
    texts = stdlib_docstrings(limit=600)
    assert len(texts) >= 400
    return {
        "big": byte_sequences(texts[:300]),
        "mid": byte_sequences(texts[300:370]),
        "tiny": byte_sequences(texts[370:385]),
    }


@pytest.fixture(scope="session")
def validation(sources) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(rows[-8:]) for name, rows in sources.items()}
