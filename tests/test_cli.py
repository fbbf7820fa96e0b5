"""The command line, run as a user would: real files in, exit codes and messages out."""

from __future__ import annotations

import json

import orjson
import pyarrow.parquet as pq
import pytest
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
    work = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--workdir", str(work), "--steps", "20", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # undo the console's line wrapping
    for stage in ("ingest", "dedup", "quality", "semantic_dedup", "diverse_subset"):
        assert stage in text
    assert "near_duplicate" in text and "too_short" in text and "semantic_duplicate" in text
    assert "gopher_too_few_words" in text and "c4_too_few_sentences" in text  # what each rule removed
    assert "quality classifier, median by source: code" in text and "exp(classifier)" in text
    assert (work / "quality" / "plots" / "classifier.png").read_bytes().startswith(b"\x89PNG")
    assert ": ok" in text and "validation loss" in text
    assert "engine: local (1 worker), one for every stage" in text
    report = Dataset.open(work / "documents").manifest.extra["report"]
    assert report["records_read"] == report["documents"] + report["quarantined"]
    assert len(report["by_source"]) == 6
    kept = Dataset.open(work / "select" / "documents").rows
    assert 0 < kept < Dataset.open(work / "dedup" / "documents").rows < report["documents"]
    for plot in ("plots/cluster_sizes.png", "plots/mixture_weights.png", "train/loss_curves.png"):
        assert (work / plot).read_bytes().startswith(b"\x89PNG")
    # the tiny model learns the bundled corpus: loss falls well below its start (ln 4096 = 8.3)
    losses = [
        json.loads(line)["loss"] for line in (work / "train" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 20 and sum(losses[-5:]) / 5 < losses[0] - 0.5


def test_dedup_command_writes_decisions_and_documents(tmp_path, real_texts):
    texts = [t for t in real_texts if len(t) > 300][:30]
    rows = [*texts, texts[0], texts[1].replace("the", "this", 3)]
    raw = tmp_path / "d.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in rows))
    runner.invoke(app, ["ingest", str(raw), "--out", str(tmp_path / "docs")])
    result = runner.invoke(app, ["dedup", str(tmp_path / "docs"), "--out", str(tmp_path / "dd")])
    assert result.exit_code == 0, result.output
    assert "exact_duplicate" in result.output and "near_duplicate" in result.output
    decisions = pq.read_table(tmp_path / "dd" / "decisions.parquet").to_pylist()
    assert len(decisions) == len(rows)
    # keep rule: the smallest id of each group stays, the other points at it
    for original, copy, reason in ((0, -2, "exact_duplicate"), (1, -1, "near_duplicate")):
        pair = sorted([decisions[original], decisions[copy]], key=lambda d: d["id"])
        assert pair[0]["kept"] and not pair[1]["kept"]
        assert pair[1]["reason"] == reason and pair[1]["cluster"] == pair[0]["id"]
    kept = sum(d["kept"] for d in decisions)
    assert Dataset.open(tmp_path / "dd" / "documents").rows == kept
    exact_only = runner.invoke(
        app, ["dedup", str(tmp_path / "docs"), "--out", str(tmp_path / "ex"), "--exact-only"]
    )
    assert exact_only.exit_code == 0 and "near_duplicate" not in exact_only.output
    bad = runner.invoke(
        app, ["dedup", str(tmp_path / "docs"), "--out", str(tmp_path / "x"), "--mode", "both"]
    )
    assert bad.exit_code == 2 and "mode" in bad.output


@pytest.mark.parametrize("encoder", ["hashed", "static"])
def test_embed_cluster_semdedup_select_chain(tmp_path, encoder):
    from tests.storage.shard_helpers import write_documents

    documents = write_documents(tmp_path, {"a": 150, "b": 50})
    run = [
        ["embed", str(documents), "--out", str(tmp_path / "emb"), "--encoder", encoder],
        ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "clu"), "--k", "8"],
        ["semdedup", str(documents), "--embeddings", str(tmp_path / "emb"), "--clusters",
         str(tmp_path / "clu"), "--out", str(tmp_path / "sem"), "--target-fraction", "0.75"],
        ["select", str(tmp_path / "sem" / "documents"), "--clusters", str(tmp_path / "clu"),
         "--out", str(tmp_path / "sel"), "--budget", "60", "--rounds", "1"],
    ]  # fmt: skip
    outputs = []
    for args in run:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
        outputs.append(result.output)
    assert "in 8 clusters" in outputs[1]
    assert Dataset.open(tmp_path / "sem" / "documents").rows == 150  # 75% of 200
    assert Dataset.open(tmp_path / "sel" / "documents").rows == 60
    assert "clusters hit" in outputs[3]
    again = runner.invoke(app, run[0])  # a finished embedding job is not redone
    assert "0 encoded" in again.output


HEAVY_COMMANDS = ["dedup", "embed", "cluster", "semdedup", "select", "quality", "subset", "shards", "demo"]


@pytest.mark.parametrize("command", HEAVY_COMMANDS)
def test_heavy_commands_take_the_engine_options(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--engine" in result.output and "--ray-address" in result.output


def test_engine_mistakes_are_one_line_errors_before_any_output(tmp_path):
    from tests.storage.shard_helpers import write_documents

    documents = str(write_documents(tmp_path, {"a": 20}))
    unknown = runner.invoke(app, ["shards", documents, "--out", str(tmp_path / "s"), "--engine", "spark"])
    assert unknown.exit_code == 2
    assert unknown.output.strip() == "error: engine 'spark': use one of local, ray"
    misplaced = [
        "embed",
        documents,
        "--out",
        str(tmp_path / "e"),
        "--encoder",
        "hashed",
        "--ray-address",
        "auto",
    ]
    result = runner.invoke(app, misplaced)
    assert result.exit_code == 2 and result.output.strip() == "error: ray_address is only for engine 'ray'"
    assert not (tmp_path / "s").exists() and not (tmp_path / "e").exists()


def test_embed_on_ray_writes_the_local_store(tmp_path):
    pytest.importorskip("ray")
    from tests.storage.shard_helpers import write_documents

    documents = str(write_documents(tmp_path, {"a": 60, "b": 20}))
    manifests = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        args = ["embed", documents, "--out", str(out), "--encoder", "hashed", "--engine", engine]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        manifests[engine] = (out / "manifest.json").read_bytes()
    assert manifests["ray"] == manifests["local"]
