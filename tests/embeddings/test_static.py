"""The static encoder: distilled offline from the bundled MiniLM, cached soundly, semantic.

Building tests use a tiny vocabulary (the first 1,100 entries: specials and
punctuation, about 100 tokens), so a build costs seconds; quality tests use
the session's small model (tests/conftest.py: the first 6,000 entries).
"""

from __future__ import annotations

import pickle
import shutil
import socket

import numpy as np
import pytest

from curation.device import CPU
from curation.embeddings import StaticEncoder
from curation.embeddings.encoders import bundled_minilm_path
from curation.embeddings.static import (
    RECORD,
    DistillSettings,
    cache_problem,
    ensure_built,
    file_sha256,
    read_record,
    source_fingerprint,
    static_model_path,
)
from curation.errors import CurationError
from curation.stages import make_encoder
from tests.embeddings.test_encoders import PAIRS

TINY = DistillSettings(vocabulary=1100, pca_dims=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny build with the network refused; every attempt to connect is recorded."""
    attempts, messages = [], []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted while building offline")

    folder = tmp_path_factory.mktemp("cache") / "models" / TINY.folder_name()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        for name in ("create_connection", "getaddrinfo"):
            mp.setattr(socket, name, refuse)
        mp.setattr(socket.socket, "connect", refuse)
        ensure_built(folder, TINY, CPU, messages.append)
    return folder, attempts, messages


def test_builds_from_the_bundled_model_without_the_network(tiny):
    folder, attempts, messages = tiny
    assert attempts == []
    assert "building the static encoder" in messages[0] and "built in" in messages[-1]
    record = read_record(folder)
    assert record["settings"] == TINY.record()
    assert record["source"]["sha256"] == source_fingerprint(bundled_minilm_path())["sha256"]
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(record["files"])
    encoder = StaticEncoder(folder)
    assert encoder.dim == 32
    assert encoder.config()["distill"] == TINY.record()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_sound_cache_is_reused(tiny):
    folder, _, _ = tiny
    before = (folder / "model.safetensors").stat().st_mtime_ns
    messages = []
    assert ensure_built(folder, TINY, CPU, messages.append) == folder
    assert messages == [] and (folder / "model.safetensors").stat().st_mtime_ns == before


def test_a_damaged_model_is_refused_and_rebuilt(tiny, tmp_path):
    folder, _, _ = tiny
    copy = tmp_path / "models" / folder.name
    shutil.copytree(folder, copy)
    (copy.parent / f".{folder.name}.123.tmp").mkdir()  # what a killed build leaves behind
    model = copy / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(CurationError, match=r"model\.safetensors is damaged"):
        StaticEncoder(copy)
    messages = []
    ensure_built(copy, TINY, CPU, messages.append)
    assert "damaged" in messages[0] and "rebuilding" in messages[0]
    assert file_sha256(model) == read_record(copy)["files"]["model.safetensors"]
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")]
    texts = ["a, b; c!", "1 + 2 = 3?"]
    np.testing.assert_array_equal(StaticEncoder(copy).encode(texts), StaticEncoder(folder).encode(texts))


@pytest.mark.parametrize("breakage", ["no record", "bad record", "file missing", "other settings"])
def test_a_partial_or_foreign_cache_is_not_used(tiny, tmp_path, breakage):
    folder, _, _ = tiny
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    source = read_record(folder)["source"]
    if breakage == "no record":
        (copy / RECORD).unlink()
    elif breakage == "bad record":
        (copy / RECORD).write_text('{"settings": ')
    elif breakage == "file missing":
        (copy / "tokenizer.json").unlink()
    settings = DistillSettings(vocabulary=1100, pca_dims=16) if breakage == "other settings" else TINY
    assert cache_problem(copy, settings, source) is not None
    assert cache_problem(folder, TINY, source) is None


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    with pytest.raises(CurationError, match="holds no static model"):
        ensure_built(folder, TINY, CPU, print)
    assert (folder / "notes.txt").read_text() == "not a model"


def test_a_changed_source_is_noticed(tiny, tmp_path):
    folder, _, _ = tiny
    source = read_record(folder)["source"]
    changed = {**source, "sha256": "0" * 64}
    assert "source model changed" in cache_problem(folder, TINY, changed)
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "weights.bin").write_bytes(b"\x00" * 64)
    first = source_fingerprint(fake)
    known = {**first, "sha256": "f" * 64}  # unchanged sizes and times: the known hash is trusted
    assert source_fingerprint(fake, known)["sha256"] == "f" * 64
    (fake / "weights.bin").write_bytes(b"\x01" * 65)
    assert source_fingerprint(fake, known)["sha256"] not in (first["sha256"], "f" * 64)


def test_the_environment_names_the_model_folder(static_model, monkeypatch, tmp_path):
    assert static_model_path() == static_model
    monkeypatch.setenv("CURATION_STATIC_MODEL", str(tmp_path / "nothing"))
    with pytest.raises(CurationError, match="not found"):
        StaticEncoder()


# ---------------------------------------------------------------- encoding


@pytest.fixture(scope="module")
def static():
    return StaticEncoder()  # the session's small model, through CURATION_STATIC_MODEL


def test_paraphrases_close_unrelated_apart(static):
    texts = [t for pair in PAIRS for t in pair]
    vectors = static.encode(texts)
    assert vectors.shape == (6, 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    partner = np.arange(6) ^ 1  # 0<->1, 2<->3, 4<->5
    assert (sims.argmax(axis=1) == partner).all()
    for i in range(6):
        unrelated = np.delete(sims[i], [i, partner[i]])
        assert sims[i, partner[i]] > 0.85 and unrelated.max() < 0.65


def test_deterministic_and_independent_of_the_batch(static, real_texts):
    again = StaticEncoder(static.model_path)
    together = static.encode(real_texts[:40])
    np.testing.assert_array_equal(together, again.encode(real_texts[:40]))
    alone = np.concatenate([static.encode([t]) for t in real_texts[:40]])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(static)).encode(real_texts[:5]), together[:5])


def test_reads_a_bounded_window(static, real_texts):
    text = max(real_texts, key=len)
    long = text * (2_000_000 // len(text))  # 2 MB: only the window is read
    assert np.array_equal(static.encode([long]), static.encode([long[: static.max_chars]]))
    short = StaticEncoder(static.model_path, max_tokens=8)
    assert (short.encode([text]) @ static.encode([text]).T)[0, 0] < 0.99
    assert short.config()["max_tokens"] == 8 and short.max_chars < static.max_chars
    config = static.config()
    assert config["max_tokens"] == 256 and config["max_chars"] == static.max_chars


def test_text_with_no_known_token_is_zero(static):
    vectors = static.encode(["", "   ", "some words here"])
    assert not vectors[:2].any() and abs(np.linalg.norm(vectors[2]) - 1) < 1e-5
    assert static.encode([]).shape == (0, 256)


def test_auto_is_static_on_a_cpu_and_hashed_stays_explicit():
    assert isinstance(make_encoder("auto", CPU), StaticEncoder)
    assert make_encoder("hashed", CPU, max_chars=100).config()["max_chars"] == 100
    assert make_encoder("static", CPU, max_tokens=64).config()["max_tokens"] == 64
    with pytest.raises(CurationError, match="use auto, static, minilm, hashed"):
        make_encoder("bert", CPU)


def test_models_commands(tiny, tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    folder, _, _ = tiny
    runner = CliRunner()
    args = ["models", "build", "--out", str(folder), "--vocabulary", "1100", "--pca-dims", "32"]
    ready = runner.invoke(app, args)
    assert ready.exit_code == 0 and "static model ready" in ready.output, ready.output
    assert "building" not in ready.output  # sound: reused
    info = " ".join(runner.invoke(app, ["models", "info"]).output.split())
    assert "not built yet" in info and "CURATION_STATIC_MODEL is set" in info
    bad = runner.invoke(app, ["models", "build", "--vocabulary", "0"])
    assert bad.exit_code == 2 and "vocabulary must be positive" in bad.output
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_text("a")
    foreign = runner.invoke(app, ["models", "build", "--out", str(tmp_path / "x")])
    assert foreign.exit_code == 2 and "holds no static model" in foreign.output
