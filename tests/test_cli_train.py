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


def test_iterative_kmq_three_rounds_scored_on_held_out_documents(tmp_path):
    """select b/3 -> shards -> train scoring clusters on held-out documents -> refine, three rounds."""
    from curation.selectors.diversity import scoring_split
    from curation.stages import clusters_for
    from curation.storage import Dataset
    from curation.train.clusters import ClusterScoring, scoring_documents

    documents = write_documents(tmp_path, {"books": 150, "forum": 50})
    steps = [
        ["embed", str(documents), "--out", str(tmp_path / "emb"), "--encoder", "hashed"],
        ["cluster", str(tmp_path / "emb"), "--out", str(tmp_path / "clu"), "--k", "6"],
        ["select", str(documents), "--clusters", str(tmp_path / "clu"), "--out", str(tmp_path / "r1"),
         "--budget", "60"],
    ]  # fmt: skip
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args[0], result.output)
    assert "round 1 of 3" in result.output  # N = 3 by default: this round drew 20 of 60
    ids = Dataset.open(str(documents)).read_table(["id"]).column("id")
    held = scoring_split(ids.to_pylist(), clusters_for(ids, str(tmp_path / "clu")))
    (tmp_path / "t.toml").write_text("steps = 4\nbatch_size = 4\neval_every = 4\nholdout = 1\n"
                                     "[model]\nlayers = 1\nwidth = 32\nheads = 2\n")  # fmt: skip
    kept = []
    for r in (1, 2, 3):
        decisions = pq.read_table(tmp_path / f"r{r}" / "decisions.parquet")
        kept.append(decisions.column("kept").to_pylist())
        reasons = decisions.column("reason").to_pylist()
        assert [x == "held_out_for_scoring" for x in reasons] == held.tolist()  # the same split every round
        if r == 3:
            break
        scored = scoring_documents(ClusterScoring(str(tmp_path / f"r{r}")))
        held_ids = {i for i, h in zip(ids.to_pylist(), held, strict=True) if h}
        assert {i for c in scored.values() for i in c} == held_ids
        shards, run = tmp_path / f"s{r}", tmp_path / f"run{r}"
        for args in (
            ["subset", str(tmp_path / f"r{r}" / "documents"), "--out", str(shards),
             "--budget", "fraction=1", "--seq-len", "33", "--vocab-size", "400"],
            ["train", str(shards), "--out", str(run), "--config", str(tmp_path / "t.toml"),
             "--device", "cpu", "--score-clusters", str(tmp_path / f"r{r}")],
            ["select", str(documents), "--clusters", str(tmp_path / "clu"),
             "--out", str(tmp_path / f"r{r + 1}"), "--budget", "60", "--refine-from", str(tmp_path / f"r{r}"),
             "--scores", str(run / "cluster_scores.json")],
        ):  # fmt: skip
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args[0], result.output)
        scores = json.loads((run / "cluster_scores.json").read_text())
        assert sorted(map(int, scores)) == list(range(6)) and all(v > 0 for v in scores.values())
    assert [sum(k) for k in kept] == [20, 40, 60]
    assert all(b for a, b in zip(kept[0], kept[2], strict=True) if a)  # round 1 stays selected
    assert not any(k and h for k, h in zip(kept[2], held, strict=True))  # never trained on the scoring split
    again = runner.invoke(app, [
        "select", str(documents), "--clusters", str(tmp_path / "clu"), "--out", str(tmp_path / "r4"),
        "--budget", "60", "--refine-from", str(tmp_path / "r3"), "--scores", str(run / "cluster_scores.json"),
    ])  # fmt: skip
    assert again.exit_code == 2 and "all 3 rounds are done" in again.output


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
    select += ["--rounds", "1"]  # plain kMQ: the whole budget at once
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
