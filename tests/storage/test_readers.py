"""Every input format and every bad-input case, through the public ingest call."""

from __future__ import annotations

import csv
import gzip
import json
import sysconfig
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from curation.errors import InputError
from curation.storage import Dataset, IngestConfig, ingest, open_quarantine


def _jsonl(rows) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _run(tmp_path, inputs, **config):
    out = tmp_path / "out"
    report = ingest([str(i) for i in inputs], str(out), IngestConfig(**config))
    docs = Dataset.open(out).read_table().to_pylist()
    bad = open_quarantine(out).read_table().to_pylist()
    assert report.records_read == report.documents + report.quarantined
    assert len(docs) == report.documents and len(bad) == report.quarantined
    return report, docs, bad


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_jsonl_plain_and_compressed(tmp_path, real_texts, suffix):
    data = _jsonl({"text": t, "n": i} for i, t in enumerate(real_texts[:50]))
    if suffix.endswith("gz"):
        data = gzip.compress(data)
    elif suffix.endswith("zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"wiki.{suffix}"
    path.write_bytes(data)
    _report, docs, bad = _run(tmp_path, [path])
    assert [d["text"] for d in docs] == real_texts[:50]
    assert {d["source"] for d in docs} == {"wiki"}
    assert json.loads(docs[3]["meta"]) == {"n": 3}
    assert docs[3]["origin"] == f"wiki.{suffix}:4"
    assert docs[3]["n_chars"] == len(real_texts[3])
    assert bad == []


def test_parquet_and_csv_and_txt_folder(tmp_path, real_texts):
    pq.write_table(pa.table({"body": real_texts[:20], "lang": ["en"] * 20}), tmp_path / "a.parquet")
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["body", "page"])
        writer.writerows([t, i] for i, t in enumerate(real_texts[20:30]))
    folder = tmp_path / "notes"
    folder.mkdir()
    for i, text in enumerate(real_texts[30:35]):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    (folder / ".hidden.txt").write_text("editor swap file", encoding="utf-8")
    report, docs, bad = _run(
        tmp_path, [tmp_path / "a.parquet", tmp_path / "b.csv", folder], text_field="body"
    )
    assert [d["text"] for d in docs] == real_texts[:35]
    assert report.by_source == {"a": 20, "b": 10, "notes": 5}
    assert json.loads(docs[0]["meta"]) == {"lang": "en"}
    assert docs[20]["origin"] == "b.csv:2"  # line 1 is the header
    assert docs[30]["meta"] is None and docs[30]["origin"] == "notes/0.txt:1"
    assert bad == []


def test_csv_multiline_fields_keep_their_starting_line(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text\n"first\nspans two lines"\nsecond\n', encoding="utf-8")
    _, docs, _ = _run(tmp_path, [path])
    assert [(d["text"], d["origin"]) for d in docs] == [
        ("first\nspans two lines", "q.csv:2"),
        ("second", "q.csv:4"),
    ]


def test_every_bad_jsonl_record_is_quarantined_with_its_line(tmp_path):
    lines = [
        b'{"text": "a good document about parsing"}',
        b'{"text": "unterminated',
        b'\xff\xfe{"text": "latin-1 bytes"}',
        b'{"title": "no text here"}',
        b'{"text": 42}',
        b'{"text": "   \\n  "}',
        b'["a", "list"]',
        b"",
        b'{"text": "another good one"}',
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report, docs, bad = _run(tmp_path, [path])
    assert [d["text"] for d in docs] == ["a good document about parsing", "another good one"]
    got = [(b["line"], b["reason"]) for b in bad]
    assert got == [
        (2, "malformed_json"),
        (3, "invalid_utf8"),
        (4, "missing_text"),
        (5, "text_not_string"),
        (6, "empty_text"),
        (7, "not_an_object"),
    ]
    assert all(b["file"].endswith("mixed.jsonl") for b in bad)
    assert bad[0]["snippet"] == '{"text": "unterminated\n'
    assert bad[1]["snippet"].startswith("\\xff\\xfe")
    assert report.records_read == 8  # the blank line is no record


def test_invalid_utf8_in_csv_and_txt(tmp_path):
    (tmp_path / "c.csv").write_bytes(b"text\nfine row\nbad \xe9 row\n")
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "x.txt").write_bytes(b"caf\xe9")
    (folder / "y.txt").write_bytes(b"")
    _, docs, bad = _run(tmp_path, [tmp_path / "c.csv", folder])
    assert [d["text"] for d in docs] == ["fine row"]
    assert [(b["line"], b["reason"]) for b in bad] == [
        (3, "invalid_utf8"),
        (1, "invalid_utf8"),
        (1, "empty_text"),
    ]
    assert "\\xe9" in bad[0]["snippet"]


def test_parquet_missing_and_non_string_text(tmp_path):
    pq.write_table(pa.table({"body": ["x", "y"]}), tmp_path / "nocol.parquet")
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"text": ["ok", None, ""]}), tmp_path / "nulls.parquet")
    _, docs, bad = _run(
        tmp_path, [tmp_path / "nocol.parquet", tmp_path / "ints.parquet", tmp_path / "nulls.parquet"]
    )
    assert [d["text"] for d in docs] == ["ok"]
    reasons = [(b["file"].rsplit("/", 1)[-1], b["line"], b["reason"]) for b in bad]
    assert reasons == [
        ("nocol.parquet", 1, "missing_text"),
        ("nocol.parquet", 2, "missing_text"),
        ("ints.parquet", 1, "text_not_string"),
        ("ints.parquet", 2, "text_not_string"),
        ("ints.parquet", 3, "text_not_string"),
        ("nulls.parquet", 2, "text_not_string"),
        ("nulls.parquet", 3, "empty_text"),
    ]


def _stdlib_lines(limit: int = 40_000) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = []
    for name in ("argparse.py", "difflib.py", "typing.py", "inspect.py", "tarfile.py"):
        lines += [x for x in (root / name).read_text(encoding="utf-8").splitlines() if x.strip()]
    return lines[:limit]


def test_unreadable_and_truncated_files(tmp_path):
    lines = _stdlib_lines()
    data = _jsonl({"text": t} for t in lines)
    gz, zst = gzip.compress(data), zstandard.ZstdCompressor().compress(data)
    (tmp_path / "cut.jsonl.gz").write_bytes(gz[: len(gz) * 2 // 3])
    (tmp_path / "cut.jsonl.zst").write_bytes(zst[: len(zst) * 2 // 3])
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet at all")
    (tmp_path / "junk.jsonl.gz").write_bytes(b"not gzip either")
    inputs = ["cut.jsonl.gz", "cut.jsonl.zst", "junk.parquet", "junk.jsonl.gz"]
    inputs = [f"{name.replace('.', '_')}={tmp_path / name}" for name in inputs]
    report, docs, bad = _run(tmp_path, inputs)
    by_file = {b["source"]: b for b in bad}
    assert by_file["cut_jsonl_gz"]["reason"] == "truncated_file"
    assert by_file["cut_jsonl_zst"]["reason"] == "truncated_file"
    assert by_file["junk_parquet"]["reason"] == "unreadable_file"
    assert by_file["junk_parquet"]["line"] is None
    assert by_file["junk_jsonl_gz"]["reason"] == "unreadable_file"
    # what was read before the cut is kept, and the cut names the next line
    for source in ("cut_jsonl_gz", "cut_jsonl_zst"):
        kept = [d for d in docs if d["source"] == source]
        assert 0 < len(kept) < len(lines)
        assert by_file[source]["line"] == len(kept) + 1
    assert report.quarantined == 4


def test_oversized_documents_are_quarantined_not_loaded(tmp_path):
    big = "word " * 400
    path = tmp_path / "big.jsonl"
    path.write_bytes(_jsonl([{"text": "small one"}, {"text": big}, {"text": "after"}]))
    (tmp_path / "big.txt").write_text(big, encoding="utf-8")
    pq.write_table(pa.table({"text": ["tiny", big]}), tmp_path / "big.parquet")
    inputs = [path, tmp_path / "big.txt", tmp_path / "big.parquet"]
    _, docs, bad = _run(tmp_path, inputs, max_doc_bytes=1000)
    assert [d["text"] for d in docs] == ["small one", "after", "tiny"]
    assert [(b["line"], b["reason"]) for b in bad] == [(2, "too_large"), (1, "too_large"), (2, "too_large")]


def test_strict_mode_stops_naming_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": 7}\n')
    with pytest.raises(InputError, match=r"s\.jsonl:2: text_not_string"):
        ingest([str(path)], str(tmp_path / "out"), IngestConfig(strict=True))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_source_field_and_nested_text_field(tmp_path):
    rows = [
        {"doc": {"body": "alpha text"}, "site": "blog"},
        {"doc": {"body": "beta text"}, "site": "news"},
        {"doc": {"body": "gamma text"}},
    ]
    path = tmp_path / "mix.jsonl"
    path.write_bytes(_jsonl(rows))
    report, docs, _ = _run(tmp_path, [path], text_field="doc.body", source_field="site")
    assert [(d["source"], d["text"]) for d in docs] == [
        ("blog", "alpha text"),
        ("news", "beta text"),
        ("mix", "gamma text"),
    ]
    assert report.by_source == {"blog": 1, "mix": 1, "news": 1}
