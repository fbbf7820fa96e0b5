"""Shared inputs: a documents dataset of real text, a tokenizer, and a shard set."""

from __future__ import annotations

import pytest

from curation.storage.shards import ShardConfig, write_shards
from curation.storage.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer
from tests.storage.shard_helpers import write_documents

SOURCES = {"alpha": 150, "beta": 90}
SHARDS = ShardConfig(seq_len=33, sequences_per_shard=40, batch_documents=16)


@pytest.fixture(scope="session")
def documents(tmp_path_factory):
    """240 distinct stdlib docstrings in two sources, ingested."""
    return write_documents(tmp_path_factory.mktemp("documents"), SOURCES)


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory, documents):
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    save_tokenizer(train_tokenizer(documents, config=TokenizerConfig(vocab_size=512)), str(path))
    return path


@pytest.fixture(scope="session")
def shards(tmp_path_factory, documents, tokenizer_file):
    from curation.storage.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("shards") / "shards"
    write_shards(documents, out, load_tokenizer(str(tokenizer_file)), ShardConfig(seq_len=33))
    return out
