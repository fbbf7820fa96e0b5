"""Ingest and dedup assets, materialized in-process on a real temporary Dagster instance."""

from __future__ import annotations

import itertools
import logging

import dagster as dg
import orjson
import pytest

from curation.pipelines.assets import documents, exact_dedup, fuzzy_dedup
from curation.pipelines.checks import (
    ALL_CHECKS,
    documents_accounted,
    documents_not_empty,
    exact_dedup_ids_unique,
    exact_dedup_one_decision_each,
    fuzzy_dedup_one_decision_each,
    quarantine_rate,
)
from curation.pipelines.definitions import ASSETS, defs
from curation.pipelines.report import table_rows
from curation.storage import Dataset, open_quarantine
from tests.pipelines.helpers import (
    checks_by_name,
    metadata_by_asset,
    register,
    report_plots,
    resources,
    table,
    write_jsonl,
)

INGEST = [documents, documents_accounted, documents_not_empty, quarantine_rate]
DEDUP = [exact_dedup, fuzzy_dedup, exact_dedup_one_decision_each, fuzzy_dedup_one_decision_each]


def _ingest(instance, root, corpus, run_config=None, raise_on_error=True):
    return dg.materialize(
        INGEST,
        instance=instance,
        partition_key=corpus,
        resources=resources(root),
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )


def test_documents_partition_ingests_configured_files(tmp_path, real_texts):
    raw = tmp_path / "papers.jsonl"
    lines = [orjson.dumps({"text": t}) for t in real_texts[:30]] + [b"{broken", b'{"text": ""}']
    raw.write_bytes(b"\n".join(lines) + b"\n")
    config = {"ops": {"documents": {"config": {"inputs": [f"papers={raw}"]}}}}
    with dg.instance_for_test() as instance:
        register(instance, "papers")
        result = _ingest(instance, tmp_path / "store", "papers", config)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["corpus"].value == "papers"
    assert metadata["documents"].value == 30
    assert metadata["quarantined"].value == 2
    assert table(metadata["quarantined_by_reason"], "reason", "records") == {
        "empty_text": 1,
        "malformed_json": 1,
    }
    assert "documents per source" in report_plots(metadata)
    assert checks_by_name(result) == {
        "documents_accounted": True,
        "documents_not_empty": True,
        "quarantine_rate": False,  # 2 of 32 is above 5%: a warning
    }
    assert Dataset.open(tmp_path / "store" / "documents" / "papers").rows == 30
    assert open_quarantine(tmp_path / "store" / "documents" / "papers").rows == 2


def test_a_partition_without_inputs_ingests_its_inbox_entries(tmp_path, real_texts):
    """The corpus `notes` is every inbox entry named notes.*: its files' source, no extension."""
    store = tmp_path / "store"
    write_jsonl(store / "inbox" / "notes.jsonl", real_texts[:12])
    write_jsonl(store / "inbox" / "notes.ndjson", real_texts[12:15])
    write_jsonl(store / "inbox" / "other.jsonl", real_texts[15:20])
    with dg.instance_for_test() as instance:
        register(instance, "notes", "absent")
        found = _ingest(instance, store, "notes")
        missing = _ingest(instance, store, "absent", raise_on_error=False)
    assert found.success
    data = Dataset.open(store / "documents" / "notes")
    assert data.rows == 15
    assert set(data.read_table(["source"]).column("source").to_pylist()) == {"notes"}
    assert not missing.success
    failure = next(e for e in missing.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert "'absent'" in message and "inbox" in message


def test_a_half_broken_file_is_visible_and_can_block_what_follows(tmp_path, real_texts):
    """15 lines, 7 broken: the materialization shows the quarantine table and its path, the
    run log warns, and the quarantine-rate check fails as a warning; with block, as an error
    that stops the stages after ingest."""
    raw = tmp_path / "broken_corpus.jsonl"
    good = [orjson.dumps({"text": t}) for t in real_texts[:8]]
    bad = [b"{broken", b'{"text": ""}', b'{"body": "no text field"}', b"[1, 2]", b'{"text": 3}', b"{", b"nul"]
    raw.write_bytes(b"\n".join(good + bad) + b"\n")
    inputs = {"inputs": [str(raw)]}
    with dg.instance_for_test() as instance:
        register(instance, "broken_corpus")
        warned = _ingest(
            instance, tmp_path / "store", "broken_corpus", {"ops": {"documents": {"config": inputs}}}
        )
        logs = instance.all_logs(warned.run_id)
        blocked = dg.materialize(
            [*INGEST, exact_dedup],
            instance=instance,
            partition_key="broken_corpus",
            resources=resources(tmp_path / "store"),
            run_config={
                "ops": {
                    "documents": {"config": inputs},
                    "documents_quarantine_rate": {"config": {"max_rate": 0.25, "block": True}},
                }
            },
            raise_on_error=False,
        )
    assert warned.success
    metadata = metadata_by_asset(warned)["documents"]
    assert (metadata["records_read"].value, metadata["documents"].value, metadata["quarantined"].value) == (
        15,
        8,
        7,
    )
    assert metadata["quarantine"].value.endswith("documents/broken_corpus/_quarantine")
    sample = table_rows(metadata["quarantine_sample"])
    assert [row["line"] for row in sample] == list(range(9, 16))
    assert {row["file"] for row in sample} == {raw.name}  # named inside their folder, given in the title
    assert f"files in {raw.parent})" in metadata["report"].value
    assert {row["reason"] for row in sample} >= {"malformed_json", "empty_text", "missing_text"}
    assert "| reason | records |" in metadata["report"].value  # its tables, as tables
    warnings = [
        e.user_message for e in logs if e.level == logging.WARNING and "quarantined" in e.user_message
    ]
    assert len(warnings) == 1 and "7 of 15 records quarantined" in warnings[0], warnings
    rate = next(e for e in warned.get_asset_check_evaluations() if e.check_name == "quarantine_rate")
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert rate.metadata["rate"].value == pytest.approx(7 / 15, abs=1e-6)
    # block: true makes the same finding an error, which stops exact_dedup in the run
    assert checks_by_name(blocked)["quarantine_rate"] is False
    assert {e.asset_key.to_user_string() for e in blocked.get_asset_materialization_events()} == {"documents"}


GROUPS = ["ingest", "dedup", "quality", "semantic", "selection", "training"]  # left to right


def test_definitions_load_with_graph_jobs_sensors_checks_and_a_catalog_that_reads_left_to_right():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {a.key.to_user_string() for a in ASSETS}
    assert keys == {
        "documents", "exact_dedup", "fuzzy_dedup", "quality", "embeddings", "clusters", "semantic_dedup",
        "diverse_subset", "mixture_plan", "tokenizer", "shards", "trained_model",
    }  # fmt: skip
    for job in ("ingest_job", "dedup_job", "full_pipeline", "materialize_subset"):
        assert repo.has_job(job)
    assert repo.get_sensor_def("inbox_sensor").job_name == "ingest_job"
    assert repo.get_sensor_def("stage_automation").default_status == dg.DefaultSensorStatus.RUNNING
    assert {c.check_key.name for c in ALL_CHECKS} >= {"quarantine_rate", "documents_accounted"}
    # Each step of the chain depends on the one before it, from raw files to the model.
    graph = repo.asset_graph
    chain = [
        "documents", "exact_dedup", "fuzzy_dedup", "quality", "embeddings", "clusters", "semantic_dedup",
        "diverse_subset", "mixture_plan", "tokenizer", "shards", "trained_model",
    ]  # fmt: skip
    for upstream, downstream in itertools.pairwise(chain):
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, (upstream, downstream)
    assert graph.get(dg.AssetKey("documents")).partitions_def.name == "corpora"
    # The catalog: every asset has kinds, an owner and a stage tag; no edge runs from a
    # later group back to an earlier one, so the collapsed group graph reads left to right.
    for asset in ASSETS:
        spec = asset.specs_by_key[asset.key]
        assert spec.kinds and spec.owners == ["team:curation"] and spec.tags["stage"], asset.key
        for parent in graph.get(asset.key).parent_keys:
            assert GROUPS.index(graph.get(parent).group_name) <= GROUPS.index(spec.group_name), (
                parent,
                asset.key,
            )
    assert {a.key.to_user_string(): a.specs_by_key[a.key].group_name for a in ASSETS}[
        "semantic_dedup"
    ] == "semantic"
    assert "faiss" in {a.key.to_user_string(): a.specs_by_key[a.key] for a in ASSETS}["clusters"].kinds
    assert "<" not in documents.specs_by_key[documents.key].description  # Markdown would drop <corpus>


def test_dedup_assets_materialize_with_checks_and_plots(tmp_path, real_texts):
    long_texts = [t for t in real_texts if len(t) > 400][:40]
    edited = [t.replace("the", "a", 2) + " (copied)" for t in long_texts[:5]]
    rows = [*long_texts, long_texts[0], *edited]
    raw = tmp_path / "docs.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in rows))
    config = {"ops": {"documents": {"config": {"inputs": [str(raw)]}}}}
    with dg.instance_for_test() as instance:
        register(instance, "docs")
        result = dg.materialize(
            [documents, *DEDUP],
            instance=instance,
            partition_key="docs",
            resources=resources(tmp_path / "store"),
            run_config=config,
        )
    assert result.success
    by_asset = metadata_by_asset(result)
    assert table(by_asset["exact_dedup"]["dropped_by_reason"], "reason", "documents") == {
        "exact_duplicate": 1
    }
    assert by_asset["fuzzy_dedup"]["rows_in"].value == len(rows) - 1
    assert table(by_asset["fuzzy_dedup"]["dropped_by_reason"], "reason", "documents") == {"near_duplicate": 5}
    assert "LSH S-curve" in report_plots(by_asset["fuzzy_dedup"])
    assert "LSH S-curve" not in report_plots(by_asset["exact_dedup"])
    checks = checks_by_name(result)
    assert checks["exact_dedup_one_decision_each"] and checks["fuzzy_dedup_one_decision_each"]
    assert Dataset.open(tmp_path / "store" / "fuzzy_dedup" / "documents").rows == len(long_texts)


def test_global_stages_read_every_registered_corpus_and_adding_one_leaves_the_others(tmp_path, real_texts):
    store = tmp_path / "store"
    write_jsonl(store / "inbox" / "first.jsonl", real_texts[:40])
    write_jsonl(store / "inbox" / "second.jsonl", real_texts[40:100])
    dedup = [exact_dedup, exact_dedup_one_decision_each, exact_dedup_ids_unique]
    with dg.instance_for_test() as instance:
        register(instance, "first")
        assert _ingest(instance, store, "first").success
        first_manifest = (store / "documents" / "first" / "manifest.json").read_bytes()
        first_mtime = (store / "documents" / "first" / "manifest.json").stat().st_mtime_ns
        register(instance, "second")
        assert _ingest(instance, store, "second").success
        result = dg.materialize(dedup, instance=instance, resources=resources(store))
        # A corpus registered but never ingested stops the global stages with its name.
        register(instance, "ghost")
        ghost = dg.materialize(dedup, instance=instance, resources=resources(store), raise_on_error=False)
        ingest_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "first"}))
    assert (store / "documents" / "first" / "manifest.json").read_bytes() == first_manifest
    assert (store / "documents" / "first" / "manifest.json").stat().st_mtime_ns == first_mtime
    assert len(ingest_runs) == 1
    metadata = metadata_by_asset(result)["exact_dedup"]
    assert table(metadata["corpora"], "corpus", "documents") == {"first": 40, "second": 60}
    assert metadata["rows_in"].value == 100
    assert Dataset.open(store / "combined").rows == 100
    assert checks_by_name(result) == {"exact_dedup_one_decision_each": True, "exact_dedup_ids_unique": True}
    assert not ghost.success
    failure = next(e for e in ghost.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ghost" in failure.event_specific_data.error.to_string()


def test_device_resource_resolves_through_curation_device():
    from curation.errors import CurationError
    from curation.pipelines.resources import ComputeDevice

    assert ComputeDevice(device="cpu").resolve().kind == "cpu"
    with pytest.raises(CurationError, match="unknown device"):
        ComputeDevice(device="tpu").resolve()


def test_an_empty_corpus_fails_its_blocking_check_and_stops_the_stages_after_it(tmp_path):
    raw = tmp_path / "broken.jsonl"
    raw.write_bytes(b"{not json\n" + b'{"text": ""}\n')
    config = {"ops": {"documents": {"config": {"inputs": [str(raw)]}}}}
    with dg.instance_for_test() as instance:
        register(instance, "broken")
        result = dg.materialize(
            [*INGEST, *DEDUP],
            instance=instance,
            partition_key="broken",
            resources=resources(tmp_path / "store"),
            run_config=config,
            raise_on_error=False,
        )
    checks = checks_by_name(result)
    assert checks["documents_not_empty"] is False and checks["documents_accounted"] is True
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {"documents"}
    assert not (tmp_path / "store" / "exact_dedup").exists()
