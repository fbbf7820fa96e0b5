"""The whole asset graph, raw files to a trained model, on the bundled corpus with small settings;
then a subset through the `materialize_subset` job with a token budget."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.embeddings import read_clusters
from curation.pipelines.checks import ALL_CHECKS, shards_checksums_match
from curation.pipelines.corpora import DEFAULT_CORPUS
from curation.pipelines.definitions import ASSETS, build_definitions
from curation.pipelines.report import table_rows
from curation.pipelines.resources import StorageRoot
from curation.selectors.mixture import temperature_weights
from curation.storage import Dataset
from curation.storage.shards import ShardReader
from tests.pipelines.helpers import (
    SMALL_TRAINING,
    checks_by_name,
    metadata_by_asset,
    register,
    report_plots,
    resources,
    table,
)

PNG = b"\x89PNG\r\n\x1a\n"
# SMALL_TRAINING's short kMQ probes, drawing by the classifier's score: replacing the
# whole entry used to drop the short probes and cost minutes of probe training
DIVERSE_SUBSET = {"config": {**SMALL_TRAINING["diverse_subset"]["config"], "quality": "classifier"}}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """One instance and storage root: the full graph materialized once on `stdlib`,
    with the quality classifier trained on the bundled language reference and kMQ
    drawing by its score."""
    root = tmp_path_factory.mktemp("pipeline") / "store"
    reference = root / "raw" / "default-corpus" / "reference"  # the documents asset builds it
    quality = {
        "quality": {"config": {"reference": str(reference)}},
        "diverse_subset": DIVERSE_SUBSET,
    }
    with dg.instance_for_test() as instance:
        register(instance, DEFAULT_CORPUS)
        result = dg.materialize(
            [*ASSETS, *ALL_CHECKS],
            instance=instance,
            partition_key=DEFAULT_CORPUS,
            resources=resources(root),
            run_config={"ops": {**SMALL_TRAINING, **quality}},
        )
        yield instance, root, result


def test_full_graph_succeeds_with_every_check_passing(graph):
    _, root, result = graph
    assert result.success
    checks = checks_by_name(result)
    assert set(checks) == {c.check_key.name for c in ALL_CHECKS}
    assert all(checks.values()), {name: ok for name, ok in checks.items() if not ok}
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        a.key.to_user_string() for a in ASSETS
    }
    assert (root / "documents" / DEFAULT_CORPUS / "manifest.json").exists()
    assert (root / "trained_model" / "metrics.jsonl").exists()


def test_every_stage_accounts_for_its_input(graph):
    _, root, result = graph
    md = metadata_by_asset(result)
    assert set(table(md["documents"]["documents_by_source"], "source", "documents")) == {
        "code", "docstrings", "modules", "reference", "idle", "license",
    }  # fmt: skip
    corpora = table(md["exact_dedup"]["corpora"], "corpus", "documents")
    assert corpora == {DEFAULT_CORPUS: md["documents"]["documents"].value}
    assert md["exact_dedup"]["rows_in"].value == md["documents"]["documents"].value
    for stage, before in [
        ("fuzzy_dedup", "exact_dedup"),
        ("quality", "fuzzy_dedup"),
        ("semantic_dedup", "quality"),
        ("diverse_subset", "semantic_dedup"),
    ]:
        assert md[stage]["rows_in"].value == md[before]["kept"].value, stage
    for stage in ("exact_dedup", "fuzzy_dedup", "quality", "semantic_dedup", "diverse_subset"):
        dropped = sum(table(md[stage]["dropped_by_reason"], "reason", "documents").values())
        assert md[stage]["rows_in"].value == md[stage]["kept"].value + dropped, stage
        assert dropped > 0, f"{stage} dropped nothing from the bundled corpus"
        assert Dataset.open(root / stage / "documents").rows == md[stage]["kept"].value
    assert md["embeddings"]["rows"].value == md["quality"]["kept"].value
    assert md["clusters"]["rows"].value == md["embeddings"]["rows"].value
    assert md["clusters"]["k"].value == round(md["clusters"]["rows"].value ** 0.5)  # the default_k rule
    # kMQ's default budget is 60% of what semantic dedup kept; shards take all of it by default.
    assert md["diverse_subset"]["kept"].value == round(0.6 * md["semantic_dedup"]["kept"].value)
    assert md["diverse_subset"]["rounds"].value == 3  # the paper's N, each round scored by a probe run
    held = table(md["diverse_subset"]["dropped_by_reason"], "reason", "documents")["held_out_for_scoring"]
    assert held == md["diverse_subset"]["held_out_for_scoring"].value > 0
    # the plan sizes sources in tokens by default, estimated as chars / 4 before a tokenizer exists
    chars = Dataset.open(root / "diverse_subset" / "documents").read_table(["n_chars"]).column("n_chars")
    sizes = table(md["mixture_plan"]["weights"], "source", "tokens")
    assert sum(sizes.values()) == sum((n + 3) // 4 for n in chars.to_pylist())
    assert md["shards"]["selected"].value == md["diverse_subset"]["kept"].value
    assert md["shards"]["tokens"].value == sum(table(md["shards"]["per_source"], "source", "tokens").values())
    assert md["trained_model"]["steps"].value == SMALL_TRAINING["trained_model"]["config"]["steps"]
    evaluated = table(md["trained_model"]["eval_by_source"], "source", "loss")
    assert set(evaluated) == set(table(md["shards"]["per_source"], "source", "documents"))


def test_each_materialization_has_one_report_with_its_plots_inline_and_tables_as_tables(graph):
    _, _, result = graph
    md = metadata_by_asset(result)
    for asset, data in md.items():
        assert data["seconds"].value >= 0, asset
        assert data["report"].value.startswith(f"### {asset}"), asset
        markdown = [key for key, value in data.items() if isinstance(value, dg.MarkdownMetadataValue)]
        assert markdown == ["report"], (asset, markdown)  # one page, no link per plot
        assert not [key for key, value in data.items() if isinstance(value, dg.JsonMetadataValue)], asset
    plots = {
        "documents": ["documents per source"],
        "exact_dedup": ["duplicate group sizes", "kept per source"],
        "fuzzy_dedup": ["LSH S-curve", "duplicate group sizes"],
        "quality": ["rules failed", "classifier", "kept per source"],
        "clusters": ["cluster sizes", "cluster map (PCA)"],
        "semantic_dedup": ["kept per source"],
        "diverse_subset": ["kept per source"],
        "mixture_plan": ["weights over steps"],
        "shards": ["tokens per source"],
        "trained_model": ["loss curves"],
    }
    for asset, names in plots.items():
        shown = report_plots(md[asset])
        for name in names:
            assert shown.get(name, b"").startswith(PNG), (asset, name, sorted(shown))
    # every table of the metadata is in the page too, as a Markdown table
    rows = table_rows(md["shards"]["per_source"])
    assert "| source | documents | tokens | weight |" in md["shards"]["report"].value
    assert all(f"| {row['source']} | {row['documents']:,} |" in md["shards"]["report"].value for row in rows)


def test_quality_scores_feed_kmq(graph):
    """The quality asset scores every input (rules, classifier) and kMQ draws by the score.
    (Before the materialize_subset test, which writes diverse_subset again.)"""
    _, root, result = graph
    md = metadata_by_asset(result)
    scores = pq.read_table(root / "quality" / "scores.parquet")
    assert scores.num_rows == md["quality"]["rows_in"].value
    failed = table(md["quality"]["rules_failed"], "rule", "documents")
    assert set(failed) >= set(table(md["quality"]["dropped_by_reason"], "reason", "documents"))
    median = table(md["quality"]["classifier_by_source"], "source", "p50")
    assert median["reference"] > median["code"]  # prose like the reference scores higher
    # Inside a cluster, exp(score) draws favour the higher-scored documents. (Across
    # clusters, later rounds follow the probe's cluster scores, not the quality.)
    chosen = pq.read_table(root / "diverse_subset" / "decisions.parquet").to_pylist()
    classifier = dict(
        zip(scores.column("id").to_pylist(), scores.column("classifier").to_pylist(), strict=True)
    )
    found = read_clusters(str(root / "clusters"))
    cluster_of = dict(zip(found.ids.to_pylist(), found.cluster.tolist(), strict=True))
    gaps = []
    for label in {cluster_of[d["id"]] for d in chosen}:
        rows = [d for d in chosen if cluster_of[d["id"]] == label and d["reason"] != "held_out_for_scoring"]
        picked = [classifier[d["id"]] for d in rows if d["kept"]]
        passed = [classifier[d["id"]] for d in rows if not d["kept"]]
        if picked and passed:
            gaps.append(np.mean(picked) - np.mean(passed))
    assert np.mean(gaps) > 0, gaps


def test_materialize_subset_job_selects_under_a_token_budget_with_the_mixture(graph):
    instance, root, _ = graph
    budget = 20_000
    job = build_definitions(storage_root=str(root), device="cpu").resolve_job_def("materialize_subset")
    run_config = {
        "ops": {
            "diverse_subset": DIVERSE_SUBSET,
            "mixture_plan": {"config": {"schedule": "constant", "temperature": 2.0}},
            "tokenizer": {"config": {"vocab_size": 512}},
            "shards": {"config": {"budget": {"tokens": {"count": budget}}, "seq_len": 65}},
        }
    }
    result = job.execute_in_process(run_config=run_config, instance=instance)
    assert result.success
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "diverse_subset", "mixture_plan", "tokenizer", "shards",
    }  # fmt: skip
    checks = checks_by_name(result)
    assert checks["shards_within_budget"] and checks["shards_checksums_match"]
    assert checks["diverse_subset_one_decision_each"]
    md = metadata_by_asset(result)
    sizes = table(md["mixture_plan"]["weights"], "source", "tokens")  # the plan's token estimate
    expected = temperature_weights(sizes, 2.0)
    average = table(md["mixture_plan"]["weights"], "source", "average_weight")
    assert average == pytest.approx(expected, abs=1e-6)
    subset = json.loads((root / "shards" / "subset.json").read_text())
    counted = {name: source["candidate_tokens"] for name, source in subset["sources"].items()}
    weights = table(md["shards"]["per_source"], "source", "weight")
    assert weights == pytest.approx(temperature_weights(counted, 2.0), abs=1e-5)
    assert md["shards"]["budget_unit"].value == "tokens"
    assert 0 < md["shards"]["tokens"].value <= budget
    assert md["shards"]["selected"].value < md["diverse_subset"]["kept"].value
    assert subset["budget"] == {"unit": "tokens", "asked": budget, "achieved": md["shards"]["tokens"].value}
    assert subset["config"]["mixture"]["schedule"] == "constant"
    reader = ShardReader(root / "shards", verify="open")
    per_source = table(md["shards"]["per_source"], "source", "documents")
    assert sorted(reader.sources) == sorted(s for s, n in per_source.items() if n)


def test_checksum_check_fails_on_a_corrupted_shard(graph, tmp_path):
    _, root, _ = graph
    shutil.copytree(root / "shards", tmp_path / "shards")
    assert shards_checksums_match(storage=StorageRoot(root=str(tmp_path))).passed
    shard = sorted((tmp_path / "shards" / "shards").rglob("*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = shards_checksums_match(storage=StorageRoot(root=str(tmp_path)))
    assert not result.passed
    assert "sha256" in result.metadata["problem"].value
