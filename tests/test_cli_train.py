"""subset -> train from the command line, as a user would run them."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from curation.cli import app
from curation.storage.shards import ShardReader
from tests.storage.shard_helpers import write_documents

runner = CliRunner()


def test_subset_then_train(tmp_path):
    documents = write_documents(tmp_path, {"books": 120, "forum": 40, "wiki": 12})
    result = runner.invoke(app, [
        "subset", str(documents), "--out", str(tmp_path / "sub"), "--budget", "fraction=0.5",
        "--seq-len", "33", "--vocab-size", "400",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    subset = json.loads((tmp_path / "sub" / "subset.json").read_text())
    assert subset["totals"]["selected"] == 86  # half of 172 candidates
    assert set(ShardReader(str(tmp_path / "sub")).sources) == {"books", "forum", "wiki"}
    (tmp_path / "t.toml").write_text(
        "steps = 6\nbatch_size = 4\neval_every = 3\nholdout = 2\n[model]\nlayers = 1\nwidth = 32\nheads = 2\n"
    )
    result = runner.invoke(app, [
        "train", str(tmp_path / "sub"), "--out", str(tmp_path / "run"),
        "--config", str(tmp_path / "t.toml"), "--device", "cpu",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation loss" in result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["eval"]["by_source"]


def test_train_errors_are_clear(tmp_path):
    (tmp_path / "bad.toml").write_text("lerning_rate = 3\n")
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--config", str(tmp_path / "bad.toml")])  # fmt: skip
    assert result.exit_code == 2 and "unknown setting(s) lerning_rate" in result.output
    result = runner.invoke(app, ["subset", str(tmp_path), "--out", str(tmp_path / "o"), "--budget", "lots"])
    assert result.exit_code == 2 and "budget 'lots'" in result.output


def test_iterative_kmq_refinement_with_cluster_scores_from_training(tmp_path):
    """select b/N -> shards -> train with per-cluster validation -> refine by those scores."""
    documents = write_documents(tmp_path, {"books": 150, "forum": 50})
    steps = [
        ["embed", str(documents), "--out", str(tmp_path / "emb"), "--encoder", "hashed"],
        ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "clu"), "--k", "6"],
        ["select", str(documents), "--clusters", str(tmp_path / "clu"), "--out", str(tmp_path / "r1"),
         "--budget", "40"],
        ["subset", str(tmp_path / "r1" / "documents"), "--out", str(tmp_path / "s1"),
         "--budget", "fraction=1", "--seq-len", "33", "--vocab-size", "400"],
    ]  # fmt: skip
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    (tmp_path / "t.toml").write_text("steps = 4\nbatch_size = 4\neval_every = 4\nholdout = 1\n"
                                     "[model]\nlayers = 1\nwidth = 32\nheads = 2\n")  # fmt: skip
    result = runner.invoke(app, [
        "train", str(tmp_path / "s1"), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "t.toml"),
        "--device", "cpu", "--documents", str(documents), "--clusters", str(tmp_path / "clu"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "run" / "cluster_scores.json").read_text())
    assert sorted(map(int, scores)) == list(range(6)) and all(v > 0 for v in scores.values())
    result = runner.invoke(app, [
        "select", str(documents), "--clusters", str(tmp_path / "clu"), "--out", str(tmp_path / "r2"),
        "--budget", "40", "--refine-from", str(tmp_path / "r1"),
        "--scores", str(tmp_path / "run" / "cluster_scores.json"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    first = pq.read_table(tmp_path / "r1" / "decisions.parquet").column("kept").to_pylist()
    second = pq.read_table(tmp_path / "r2" / "decisions.parquet").column("kept").to_pylist()
    assert sum(first) == 40 and sum(second) == 80
    assert all(b for a, b in zip(first, second, strict=True) if a)  # round 1 stays selected


def test_select_draws_by_quality_inside_clusters(tmp_path):
    """kMQ with a quality table: inside each cluster, exp(quality) decides who is drawn."""
    import pyarrow as pa

    from curation.storage import Dataset

    documents = write_documents(tmp_path, {"books": 120, "forum": 80})
    ids = Dataset.open(str(documents)).read_table(["id"]).column("id").to_pylist()
    good = set(ids[::2])
    quality = tmp_path / "quality.parquet"
    pq.write_table(pa.table({"id": ids, "quality": [5.0 if i in good else -5.0 for i in ids]}), quality)
    for args in (
        ["embed", str(documents), "--out", str(tmp_path / "emb"), "--encoder", "hashed"],
        ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "clu"), "--k", "4"],
    ):
        assert runner.invoke(app, args).exit_code == 0
    select = ["select", str(documents), "--clusters", str(tmp_path / "clu"), "--budget", "60"]
    result = runner.invoke(app, [*select, "--out", str(tmp_path / "q"), "--quality", str(quality)])
    assert result.exit_code == 0, result.output
    chosen = pq.read_table(tmp_path / "q" / "decisions.parquet").filter(pa.compute.field("kept"))
    assert sum(i in good for i in chosen.column("id").to_pylist()) >= 57  # e^10 odds for the good half
    result = runner.invoke(app, [*select, "--out", str(tmp_path / "u")])
    plain = pq.read_table(tmp_path / "u" / "decisions.parquet").filter(pa.compute.field("kept"))
    assert sum(i in good for i in plain.column("id").to_pylist()) < 50  # uniform without it

    pq.write_table(pa.table({"id": ids[1:], "quality": [1.0] * (len(ids) - 1)}), quality)
    result = runner.invoke(app, [*select, "--out", str(tmp_path / "bad"), "--quality", str(quality)])
    assert result.exit_code != 0 and "quality.parquet" in result.output and ids[0] in result.output
    pq.write_table(pa.table({"id": ids, "quality": ["high"] * len(ids)}), quality)
    result = runner.invoke(app, [*select, "--out", str(tmp_path / "bad2"), "--quality", str(quality)])
    assert result.exit_code != 0 and "must be numeric" in result.output
