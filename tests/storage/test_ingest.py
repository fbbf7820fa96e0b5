"""Ingest as a whole: accounting, ids, sources, determinism, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from curation.errors import CurationError
from curation.storage import Dataset, IngestConfig, InputSpec, ingest
from curation.storage.ingest import document_id


def _write_jsonl(path: Path, texts) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_input_gives_same_ids_and_identical_bytes(tmp_path, real_texts):
    src = _write_jsonl(tmp_path / "books.jsonl", real_texts)
    ingest([str(src)], str(tmp_path / "a"))
    ingest([str(src)], str(tmp_path / "b"))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    ids = Dataset.open(tmp_path / "a").read_table(["id"]).column("id").to_pylist()
    assert len(set(ids)) == len(ids) == len(real_texts)
    assert ids[0] == document_id("books", "books", "books.jsonl", 1)


def test_ids_follow_position_not_content(tmp_path, real_texts):
    """Editing one record must not change any id."""
    (tmp_path / "v1").mkdir()
    first = _write_jsonl(tmp_path / "v1" / "x.jsonl", real_texts[:5])
    (tmp_path / "v2").mkdir()
    edited = list(real_texts[:5])
    edited[1] = "an edited second document"
    second = _write_jsonl(tmp_path / "v2" / "x.jsonl", edited)
    a = Dataset.open(Path(ingest([str(first)], str(tmp_path / "a")).output)).read_table()
    b = Dataset.open(Path(ingest([str(second)], str(tmp_path / "b")).output)).read_table()
    assert a.column("id").to_pylist() == b.column("id").to_pylist()


def test_sources_from_argument_flag_and_file_name(tmp_path, real_texts):
    a = _write_jsonl(tmp_path / "alpha.jsonl.part", real_texts[:3])
    b = _write_jsonl(tmp_path / "beta.jsonl", real_texts[3:5])
    c = _write_jsonl(tmp_path / "gamma.jsonl", real_texts[5:6])
    specs = [InputSpec(str(a), source="named", format="jsonl"), f"web={b}", str(c)]
    report = ingest(specs, str(tmp_path / "out"))
    assert report.by_source == {"gamma": 1, "named": 3, "web": 2}
    report = ingest([str(c)], str(tmp_path / "out2"), IngestConfig(source="flagged"))
    assert report.by_source == {"flagged": 1}


def test_colliding_inputs_are_refused_before_any_work(tmp_path, real_texts):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = _write_jsonl(tmp_path / "one" / "part.jsonl", real_texts[:2])
    b = _write_jsonl(tmp_path / "two" / "part.jsonl", real_texts[2:4])
    with pytest.raises(CurationError, match="same ids"):
        ingest([f"s={a}", f"s={b}"], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    report = ingest([f"s={a}", f"t={b}"], str(tmp_path / "out"))
    assert report.documents == 4


@pytest.mark.parametrize(
    "inputs, message",
    [
        (["/no/such/file.jsonl"], "no such file"),
        ([], "no inputs"),
    ],
)
def test_clear_errors_for_bad_arguments(tmp_path, inputs, message):
    with pytest.raises(CurationError, match=message):
        ingest(inputs, str(tmp_path / "out"))


def test_unknown_format_and_bad_source_names(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(CurationError, match="unknown format"):
        ingest([str(tmp_path / "data.bin")], str(tmp_path / "out"))
    with pytest.raises(CurationError, match="source name"):
        IngestConfig(source="has space")


def test_manifest_lists_files_rows_bytes_checksums_and_config(tmp_path, real_texts):
    src = _write_jsonl(tmp_path / "w.jsonl", [*real_texts, ""])
    report = ingest([str(src)], str(tmp_path / "out"), IngestConfig(rows_per_file=40))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["kind"] == "documents"
    assert manifest["rows"] == len(real_texts) == report.documents
    assert len(manifest["files"]) == -(-len(real_texts) // 40)
    for entry in manifest["files"]:
        assert (tmp_path / "out" / entry["path"]).stat().st_size == entry["bytes"]
        assert len(entry["sha256"]) == 64
    assert manifest["config"]["ingest"]["rows_per_file"] == 40
    assert manifest["config"]["inputs"][0]["path"] == str(src)
    assert manifest["extra"]["report"]["quarantined"] == 1
    assert set(manifest["schema"]) == {"id", "source", "text", "n_chars", "meta", "origin"}
    assert Dataset.open(tmp_path / "out").read_table().num_rows == report.documents


def test_streamed_reading_in_batches(tmp_path, real_texts):
    src = _write_jsonl(tmp_path / "w.jsonl", real_texts)
    ingest([str(src)], str(tmp_path / "out"), IngestConfig(rows_per_file=64))
    batches = list(Dataset.open(tmp_path / "out").iter_batches(["id", "text"], batch_size=16))
    assert max(b.num_rows for b in batches) == 16
    assert sum(b.num_rows for b in batches) == len(real_texts)
    assert batches[0].schema.names == ["id", "text"]


def test_rerun_replaces_output_and_leaves_no_stale_parts(tmp_path, real_texts):
    src = _write_jsonl(tmp_path / "w.jsonl", real_texts)
    ingest([str(src)], str(tmp_path / "out"), IngestConfig(rows_per_file=10))
    small = _write_jsonl(tmp_path / "w.jsonl", real_texts[:5])
    ingest([str(small)], str(tmp_path / "out"), IngestConfig(rows_per_file=10))
    parts = sorted(p.name for p in (tmp_path / "out").glob("*.parquet"))
    assert parts == ["part-00000.parquet"]
    assert Dataset.open(tmp_path / "out").rows == 5
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_uri_paths_work_like_local_paths(tmp_path, real_texts):
    src = _write_jsonl(tmp_path / "w.jsonl", real_texts[:7])
    report = ingest([f"file://{src}"], f"file://{tmp_path}/out")
    assert report.documents == 7
    assert Dataset.open(f"file://{tmp_path}/out").rows == 7
