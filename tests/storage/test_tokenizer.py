"""Byte-level BPE: trained on a documents sample, saved, loaded, hashed; no downloads."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from curation.errors import CurationError
from curation.storage.dataset import Dataset
from curation.storage.tokenizer import (
    EOS,
    TokenizerConfig,
    eos_id,
    load_tokenizer,
    sample_texts,
    token_dtype,
    tokenizer_hash,
    train_tokenizer,
)
from tests.storage.shard_helpers import write_documents

SMALL = TokenizerConfig(vocab_size=600)


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    return write_documents(tmp_path_factory.mktemp("tok"), {"big": 150, "small": 30})


@pytest.fixture(scope="module")
def trained(documents, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokfile") / "tokenizer.json"
    return train_tokenizer(documents, path, SMALL), path


def test_trains_to_the_asked_vocabulary_with_eos(trained):
    tokenizer, _ = trained
    assert tokenizer.get_vocab_size() == SMALL.vocab_size
    assert tokenizer.encode(EOS).ids == [eos_id(tokenizer)]


def test_any_text_round_trips_bytes_included(trained, real_texts):
    tokenizer, _ = trained
    texts = [*real_texts[:20], "naïve café — ünïcode ✓ 日本語", "tabs\tand\nnewlines  ", ""]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_learns_merges_from_the_text(trained, real_texts):
    tokenizer, _ = trained
    text = real_texts[0]
    assert len(tokenizer.encode(text).ids) < len(text.encode()) / 2


def test_saved_file_loads_to_the_same_tokenizer(trained, real_texts):
    tokenizer, path = trained
    loaded = load_tokenizer(path)
    assert tokenizer_hash(loaded) == tokenizer_hash(tokenizer)
    assert loaded.encode(real_texts[3]).ids == tokenizer.encode(real_texts[3]).ids
    assert tokenizer_hash(load_tokenizer(path.parent)) == tokenizer_hash(tokenizer)  # folder form


def test_training_is_deterministic(documents, trained):
    again = train_tokenizer(documents, config=SMALL)
    assert tokenizer_hash(again) == tokenizer_hash(trained[0])


def test_sample_is_seeded_and_respects_the_mask(documents):
    dataset = Dataset.open(documents)
    config = TokenizerConfig(sample_documents=40, seed=3)
    first = list(sample_texts(dataset, config))
    assert first == list(sample_texts(dataset, config))
    assert first != list(sample_texts(dataset, TokenizerConfig(sample_documents=40, seed=4)))
    keep = np.zeros(dataset.rows, dtype=bool)
    keep[:10] = True
    allowed = set(dataset.read_table(["text"]).column("text").to_pylist()[:10])
    masked = list(sample_texts(dataset, TokenizerConfig(sample_documents=10_000), keep))
    assert set(masked) == allowed


def test_sample_stops_at_the_character_cap(documents):
    texts = list(sample_texts(Dataset.open(documents), TokenizerConfig(sample_chars=2000)))
    assert sum(map(len, texts[:-1])) < 2000 <= sum(map(len, texts))


def test_missing_or_broken_files_are_refused_by_name(tmp_path):
    with pytest.raises(CurationError, match=r"nothere\.json: no such tokenizer file"):
        load_tokenizer(tmp_path / "nothere.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CurationError, match=r"broken\.json: not a readable tokenizer"):
        load_tokenizer(broken)
    no_eos = tmp_path / "noeos.json"
    no_eos.write_text(Tokenizer(models.BPE()).to_str())
    with pytest.raises(CurationError, match=r"noeos\.json: the tokenizer has no <\|endoftext\|>"):
        load_tokenizer(no_eos)


def test_token_dtype_widens_past_65536_ids():
    def word_level(size):
        vocab = {f"w{i}": i for i in range(size)}
        return Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))

    assert token_dtype(word_level(65536)) == np.uint16
    assert token_dtype(word_level(65537)) == np.uint32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"vocab_size": 256}, r"vocab_size must be an integer in \[257"),
        ({"min_frequency": 0}, "min_frequency"),
        ({"sample_documents": 0}, "sample_documents"),
        ({"seed": -2}, "seed"),
    ],
)
def test_bad_config_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TokenizerConfig(**fields)


def test_estimated_tokens_is_a_quarter_of_the_characters_rounded_up():
    from curation.storage.tokenizer import estimated_tokens

    assert estimated_tokens(0) == 0 and estimated_tokens(1) == 1 and estimated_tokens(8) == 2
    assert estimated_tokens(np.array([3, 4, 5])).tolist() == [1, 1, 2]
