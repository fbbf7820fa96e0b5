"""Encoders: the offline MiniLM model and the hashed n-gram encoder (static: test_static.py)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from curation.embeddings.encoders import HashedEncoder, MiniLMEncoder, bundled_minilm_path

# Docstrings from shutil, fractions and textwrap, each with a paraphrase.
PAIRS = [
    (
        "Copy data from src to dst in the most efficient way possible.",
        "Copy the data from src to dst as efficiently as possible.",
    ),
    (
        "Closest Fraction to self with denominator at most max_denominator.",
        "The closest fraction to self whose denominator is at most max_denominator.",
    ),
    (
        "Remove any common leading whitespace from every line in text.",
        "Remove the leading whitespace common to all lines of the text.",
    ),
]


def _refuse(*args, **kwargs):
    raise OSError("network access attempted in an offline test")


@pytest.fixture(scope="module")
def minilm():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        mp.setattr(socket, "getaddrinfo", _refuse)
        return MiniLMEncoder(micro_batch=2)


def test_minilm_paraphrases_close_and_topics_apart(minilm):
    texts = [t for pair in PAIRS for t in pair]
    vectors = minilm.encode(texts)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    for i in range(3):
        assert sims[2 * i, 2 * i + 1] > 0.85
        for j in range(3):
            if j != i:
                assert sims[2 * i, 2 * j] < 0.3 and sims[2 * i + 1, 2 * j + 1] < 0.3


def test_minilm_matches_sentence_transformers(minilm, real_texts):
    from sentence_transformers import SentenceTransformer

    texts = [real_texts[0], real_texts[5][:80], real_texts[9]]
    reference = SentenceTransformer(str(bundled_minilm_path()), device="cpu", local_files_only=True)
    expected = reference.encode(texts, normalize_embeddings=True)
    cosines = (minilm.encode(texts) * expected).sum(axis=1)
    assert cosines.min() > 0.999


def test_minilm_restores_input_order_after_sorting(minilm, real_texts):
    texts = [real_texts[3], real_texts[1][:60], real_texts[7][:200]]  # long, short, middle
    together = minilm.encode(texts)
    alone = np.concatenate([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_minilm_truncation_length_is_used(minilm, real_texts):
    long_text = max(real_texts, key=len)
    short = MiniLMEncoder(max_tokens=16, model_path=minilm.model_path)
    assert (short.encode([long_text]) @ minilm.encode([long_text]).T)[0, 0] < 0.99
    assert short.config()["max_tokens"] == 16 and short.config()["max_chars"] == 128


def test_minilm_reads_a_bounded_window(minilm, real_texts):
    text = " ".join(real_texts[:20])
    huge = text * (2_000_000 // len(text))  # 2 MB: tokenised whole, this took seconds and 100s of MB
    assert minilm.max_chars == 2048 and minilm.config()["max_chars"] == 2048
    np.testing.assert_allclose(minilm.encode([huge]), minilm.encode([huge[:2048]]), atol=1e-6)


def test_minilm_empty_input(minilm):
    assert minilm.encode([]).shape == (0, 384)


def test_hashed_is_normalised_and_deterministic(real_texts):
    a = HashedEncoder(seed=3).encode(real_texts[:50])
    b = HashedEncoder(seed=3).encode(real_texts[:50])
    assert a.shape == (50, 256) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b)
    assert not np.allclose(a, HashedEncoder(seed=4).encode(real_texts[:50]))


def test_hashed_rows_do_not_depend_on_the_batch(real_texts):
    encoder = HashedEncoder()
    together = encoder.encode(real_texts[:8])
    alone = np.concatenate([encoder.encode([t]) for t in real_texts[:8]])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_hashed_near_copies_close_unrelated_apart(real_texts):
    texts = [t for t in real_texts if len(t) > 300][:20]
    edited = [t.replace(" the ", " a ", 1) + " (see also)" for t in texts]
    encoder = HashedEncoder()
    a, b = encoder.encode(texts), encoder.encode(edited)
    assert (a * b).sum(axis=1).min() > 0.9
    sims = a @ a.T
    np.fill_diagonal(sims, 0)
    assert np.median(sims) < 0.5


def test_hashed_empty_text_is_zero():
    vectors = HashedEncoder().encode(["", "   ", "some words here"])
    assert not vectors[:2].any() and abs(np.linalg.norm(vectors[2]) - 1) < 1e-5


def test_hashed_reads_a_bounded_window(real_texts):
    encoder = HashedEncoder(max_chars=300)
    text = max(real_texts, key=len)
    assert len(text) > 300 and encoder.config()["max_chars"] == 300
    np.testing.assert_array_equal(encoder.encode([text * 1000]), encoder.encode([text[:300]]))
    assert not np.allclose(HashedEncoder().encode([text]), encoder.encode([text]))


def test_hashed_groups_do_not_change_the_vectors(real_texts):
    """Texts are hashed a few at a time to bound memory; the grouping is invisible."""
    one_group = HashedEncoder().encode(real_texts[:60])
    many = HashedEncoder(chars_per_group=500)
    assert len(many._groups(real_texts[:60])) > 10
    np.testing.assert_allclose(many.encode(real_texts[:60]), one_group, atol=1e-6)


def test_hashed_encoder_travels_to_workers_without_its_projection(real_texts):
    import pickle

    encoder = HashedEncoder()
    expected = encoder.encode(real_texts[:20])  # builds the 64 MB projection here
    sent = pickle.dumps(encoder)
    assert len(sent) < 10_000  # what a Ray worker receives once: the settings, not the matrix
    assert np.array_equal(pickle.loads(sent).encode(real_texts[:20]), expected)
