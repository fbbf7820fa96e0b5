"""The embeddings store: aligned with the documents, atomic parts, resumable."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.embeddings import EmbeddingStore, HashedEncoder, embed_dataset
from curation.errors import CurationError
from curation.storage import Dataset


class Killed(Exception):
    pass


class CountingEncoder:
    """Wraps an encoder; counts texts and can die after some calls, like a killed job."""

    def __init__(self, inner, die_after_calls: int | None = None):
        self.inner, self.die_after_calls = inner, die_after_calls
        self.dim, self.texts, self.calls = inner.dim, 0, 0
        self.max_chars, self.longest = inner.max_chars, 0

    def config(self):
        return self.inner.config()

    def encode(self, texts):
        if self.die_after_calls is not None and self.calls >= self.die_after_calls:
            raise Killed
        self.calls += 1
        self.texts += len(texts)
        self.longest = max([self.longest, *map(len, texts)])
        return self.inner.encode(texts)


def _part_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def test_vectors_follow_document_order(tmp_path, documents, real_texts):
    encoder = HashedEncoder(dim=64)
    report = embed_dataset(documents, tmp_path / "emb", encoder, batch_size=16, rows_per_part=50)
    assert (report.rows, report.dim, report.parts, report.encoded) == (200, 64, 4, 200)
    store = EmbeddingStore.open(tmp_path / "emb")
    ids, vectors = store.read()
    assert ids.to_pylist() == Dataset.open(documents).read_table(["id"]).column("id").to_pylist()
    np.testing.assert_allclose(vectors, encoder.encode(real_texts), atol=1e-6)
    assert store.dim == 64 and store.encoder["encoder"] == "hashed"
    rows = np.array([0, 49, 50, 51, 199])
    np.testing.assert_array_equal(store.take(rows), vectors[rows])


def test_texts_reach_the_encoder_cut_to_its_window(tmp_path, documents, real_texts):
    counting = CountingEncoder(HashedEncoder(dim=32, max_chars=120))
    embed_dataset(documents, tmp_path / "emb", counting, batch_size=16, rows_per_part=50)
    assert counting.texts == 200 and counting.longest == 120 < max(map(len, real_texts))
    store = EmbeddingStore.open(tmp_path / "emb")
    assert store.encoder["max_chars"] == 120  # the window is recorded in the manifest
    assert Dataset.open(tmp_path / "emb").manifest.config["encoder"]["max_chars"] == 120
    np.testing.assert_allclose(store.read()[1], HashedEncoder(dim=32).encode([t[:120] for t in real_texts]))


def test_float16_store(tmp_path, documents, real_texts):
    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=32), dtype="float16")
    schema = pq.read_schema(tmp_path / "emb" / "part-00000.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float16(), 32)
    _, vectors = EmbeddingStore.open(tmp_path / "emb").read()
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, HashedEncoder(dim=32).encode(real_texts), atol=2e-3)


def test_a_killed_job_resumes_where_it_stopped(tmp_path, documents):
    out = tmp_path / "emb"
    dying = CountingEncoder(HashedEncoder(dim=32), die_after_calls=5)  # 2 parts of 2 calls, then 1 call
    with pytest.raises(Killed):
        embed_dataset(documents, out, dying, batch_size=20, rows_per_part=40)
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    (out / ".part-00002.parquet.0123.tmp").write_bytes(b"half a part")  # what a kill mid-write leaves

    again = CountingEncoder(HashedEncoder(dim=32))
    report = embed_dataset(documents, out, again, batch_size=20, rows_per_part=40)
    assert (report.parts, report.parts_reused, report.encoded) == (5, 2, 120)
    assert again.texts == 120
    assert not list(out.glob("*.tmp"))

    fresh = tmp_path / "fresh"
    embed_dataset(documents, fresh, HashedEncoder(dim=32), batch_size=20, rows_per_part=40)
    assert _part_bytes(out) == _part_bytes(fresh)
    Dataset.open(out).verify()


def test_a_damaged_part_is_encoded_again(tmp_path, documents):
    out = tmp_path / "emb"
    with pytest.raises(Killed):
        embed_dataset(documents, out, CountingEncoder(HashedEncoder(dim=16), 3), rows_per_part=50)
    part = out / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:100])
    again = CountingEncoder(HashedEncoder(dim=16))
    report = embed_dataset(documents, out, again, rows_per_part=50)
    assert report.parts_reused == 2 and again.texts == 100


def test_other_settings_start_over(tmp_path, documents):
    out = tmp_path / "emb"
    with pytest.raises(Killed):
        embed_dataset(documents, out, CountingEncoder(HashedEncoder(dim=16), 2), rows_per_part=50)
    report = embed_dataset(documents, out, HashedEncoder(dim=16, seed=1), rows_per_part=50)
    assert report.parts_reused == 0 and report.encoded == 200


def test_a_finished_job_is_a_no_op(tmp_path, documents):
    out = tmp_path / "emb"
    embed_dataset(documents, out, HashedEncoder(dim=16), rows_per_part=64)
    before = _part_bytes(out) | {"manifest.json": (out / "manifest.json").read_bytes()}
    counting = CountingEncoder(HashedEncoder(dim=16))
    report = embed_dataset(documents, out, counting, rows_per_part=64)
    assert counting.texts == 0 and report.encoded == 0
    assert before == _part_bytes(out) | {"manifest.json": (out / "manifest.json").read_bytes()}


def test_progress_reaches_the_end(tmp_path, documents):
    seen = []
    embed_dataset(
        documents,
        tmp_path / "emb",
        HashedEncoder(dim=8),
        rows_per_part=64,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(64, 200), (128, 200), (192, 200), (200, 200)]


def test_bad_settings_and_inputs(tmp_path, documents):
    with pytest.raises(CurationError, match="dtype"):
        embed_dataset(documents, tmp_path / "e", HashedEncoder(), dtype="int8")
    with pytest.raises(CurationError, match="no manifest"):
        embed_dataset(tmp_path / "nothing", tmp_path / "e", HashedEncoder())
    with pytest.raises(CurationError, match="not embeddings"):
        EmbeddingStore.open(documents)


def test_an_empty_corpus_gives_an_empty_store(tmp_path):
    from .conftest import write_documents

    write_documents(tmp_path / "docs", [])
    report = embed_dataset(tmp_path / "docs", tmp_path / "emb", HashedEncoder(dim=8))
    assert (report.rows, report.encoded) == (0, 0)
    ids, vectors = EmbeddingStore.open(tmp_path / "emb").read()
    assert len(ids) == 0 and vectors.shape == (0, 8)
