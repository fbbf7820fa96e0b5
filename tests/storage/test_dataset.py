"""The dataset format: manifest last, checksums enforced, atomic parts, object stores."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from curation.errors import CurationError, IntegrityError
from curation.storage import Dataset, Location, write_dataset
from curation.storage.fs import write_bytes_atomic

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])


def _batches(texts, size=3):
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        yield pa.record_batch([[f"d{start + i}" for i in range(len(chunk))], chunk], schema=SCHEMA)


def test_roundtrip_in_several_files(tmp_path, real_texts):
    data = write_dataset(tmp_path / "ds", _batches(real_texts[:20]), SCHEMA, "test", rows_per_file=6)
    assert [f.rows for f in data.manifest.files] == [6, 6, 6, 2]
    again = Dataset.open(tmp_path / "ds")
    again.verify()
    assert again.read_table().column("text").to_pylist() == real_texts[:20]


def test_empty_dataset_keeps_its_schema(tmp_path):
    write_dataset(tmp_path / "ds", [], SCHEMA, "test")
    table = Dataset.open(tmp_path / "ds").read_table()
    assert table.num_rows == 0 and table.schema.names == ["id", "text"]


def test_a_folder_without_manifest_is_not_a_dataset(tmp_path, real_texts):
    write_dataset(tmp_path / "ds", _batches(real_texts[:5]), SCHEMA, "test")
    (tmp_path / "ds" / "manifest.json").unlink()
    with pytest.raises(CurationError, match=r"no manifest\.json"):
        Dataset.open(tmp_path / "ds")


def test_corruption_is_detected(tmp_path, real_texts):
    write_dataset(tmp_path / "ds", _batches(real_texts[:30]), SCHEMA, "test")
    part = tmp_path / "ds" / "part-00000.parquet"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, one flipped byte
    part.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256"):
        Dataset.open(tmp_path / "ds").verify()
    part.write_bytes(bytes(raw[:-10]))
    with pytest.raises(IntegrityError, match="size"):
        Dataset.open(tmp_path / "ds")
    part.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        Dataset.open(tmp_path / "ds")


def test_tampered_manifest_is_refused(tmp_path, real_texts):
    write_dataset(tmp_path / "ds", _batches(real_texts[:5]), SCHEMA, "test")
    manifest = tmp_path / "ds" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"rows": 5', '"rows": 6', 1))
    with pytest.raises(IntegrityError, match="row total"):
        Dataset.open(tmp_path / "ds")
    manifest.write_text("{ not json")
    with pytest.raises(IntegrityError, match="unreadable"):
        Dataset.open(tmp_path / "ds")


def test_failed_write_leaves_no_dataset_and_no_temp_files(tmp_path, real_texts):
    def failing():
        yield from _batches(real_texts[:6])
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError):
        write_dataset(tmp_path / "ds", failing(), SCHEMA, "test", rows_per_file=4)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    assert not list((tmp_path / "ds").glob(".*.tmp"))


def test_object_store_code_path(tmp_path, real_texts):
    """A filesystem that is not LocalFileSystem takes the object-store branch."""
    (tmp_path / "bucket").mkdir()
    store = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    folder = Location(store, "corpus/docs", "mock://bucket/corpus/docs")
    assert not folder.is_local
    write_dataset(folder, _batches(real_texts[:10]), SCHEMA, "test", rows_per_file=4)
    data = Dataset.open(folder)
    data.verify()
    assert data.rows == 10
    assert (tmp_path / "bucket" / "corpus" / "docs" / "manifest.json").exists()


def test_atomic_write_replaces_whole_file(tmp_path):
    from curation.storage import resolve

    target = resolve(tmp_path / "f.json")
    write_bytes_atomic(target, b"first")
    write_bytes_atomic(target, b"second version")
    assert (tmp_path / "f.json").read_bytes() == b"second version"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_two_writers_on_one_folder_fail_clearly(tmp_path, real_texts):
    """A second writer (here another thread) is refused while the first holds the
    folder; no mix results. (Another process: tests/reliability/test_concurrency.py.)"""
    import threading

    started, refused = [], []

    def second() -> None:
        try:
            write_dataset(tmp_path / "ds", _batches(real_texts[3:6]), SCHEMA, "test")
        except CurationError as exc:
            refused.append(str(exc))

    def slow_batches():
        yield from _batches(real_texts[:3])
        started.append(True)
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        yield from _batches(real_texts[6:9])

    write_dataset(tmp_path / "ds", slow_batches(), SCHEMA, "test")
    assert started and len(refused) == 1 and "being written by pid" in refused[0]
    table = Dataset.open(tmp_path / "ds").read_table()
    assert table.column("text").to_pylist() == real_texts[:3] + real_texts[6:9]
    # the lock dies with its holder: a later writer gets through
    write_dataset(tmp_path / "ds", _batches(real_texts[:2]), SCHEMA, "test")
    assert Dataset.open(tmp_path / "ds").rows == 2
