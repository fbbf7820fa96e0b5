"""The command line, run as a user would: real files in, exit codes and messages out."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from curation.cli import app
from curation.storage import Dataset

runner = CliRunner()


def test_ingest_prints_summary_and_writes_dataset(tmp_path, real_texts):
    raw = tmp_path / "docs.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"body": t}) + b"\n" for t in real_texts[:12]) + b"oops\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", f"mine={raw}", "--out", str(out), "--text-field", "body"])
    assert result.exit_code == 0, result.output
    assert "records read" in result.output and "13" in result.output
    assert "malformed_json" in result.output
    data = Dataset.open(out)
    assert data.rows == 12
    assert set(data.read_table(["source"]).column("source").to_pylist()) == {"mine"}


def test_strict_ingest_fails_with_file_and_line(tmp_path):
    raw = tmp_path / "bad.jsonl"
    raw.write_bytes(b'{"text": "fine"}\n{"text": null}\n')
    result = runner.invoke(app, ["ingest", str(raw), "--out", str(tmp_path / "o"), "--strict"])
    assert result.exit_code == 2
    assert "bad.jsonl:2: text_not_string" in result.output
    assert "Traceback" not in result.output


def test_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "nope.jsonl: no such file or folder" in result.output


def test_info_verifies_checksums(tmp_path, real_texts):
    raw = tmp_path / "d.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in real_texts[:5]))
    runner.invoke(app, ["ingest", str(raw), "--out", str(tmp_path / "o")])
    result = runner.invoke(app, ["info", str(tmp_path / "o"), "--verify"])
    assert result.exit_code == 0 and "checksums ok" in result.output
    part = tmp_path / "o" / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    result = runner.invoke(app, ["info", str(tmp_path / "o"), "--verify"])
    assert result.exit_code == 2 and "sha256" in result.output


def test_demo_runs_the_pipeline_and_summarises(tmp_path):
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "summary" in result.output and "documents by source" in result.output
    data = Dataset.open(tmp_path / "demo" / "documents")
    report = data.manifest.extra["report"]
    assert report["records_read"] == report["documents"] + report["quarantined"]
    assert len(report["by_source"]) == 6
