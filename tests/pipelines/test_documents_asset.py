"""Materialize the `documents` asset in-process on a real temporary Dagster instance."""

from __future__ import annotations

import dagster as dg
import orjson

from curation.pipelines.assets import documents, documents_accounted, documents_not_empty
from curation.pipelines.definitions import defs
from curation.pipelines.resources import StorageRoot
from curation.storage import Dataset, open_quarantine


def _materialize(tmp_path, run_config=None):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [documents, documents_accounted, documents_not_empty],
            instance=instance,
            resources={"storage": StorageRoot(root=str(tmp_path / "store"))},
            run_config=run_config or {},
        )
        return result


def test_documents_asset_ingests_configured_files(tmp_path, real_texts):
    raw = tmp_path / "papers.jsonl"
    lines = [orjson.dumps({"text": t}) for t in real_texts[:30]] + [b"{broken", b'{"text": ""}']
    raw.write_bytes(b"\n".join(lines) + b"\n")
    config = {"ops": {"documents": {"config": {"inputs": [f"papers={raw}"]}}}}
    result = _materialize(tmp_path, config)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["documents"].value == 30
    assert metadata["quarantined"].value == 2
    assert metadata["dropped_by_reason"].data == {"empty_text": 1, "malformed_json": 1}
    assert metadata["sources_plot"].value.startswith("![documents per source](data:image/png;base64,")
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"documents_accounted": True, "documents_not_empty": True}
    assert Dataset.open(tmp_path / "store" / "documents").rows == 30
    assert open_quarantine(tmp_path / "store" / "documents").rows == 2


def test_documents_asset_defaults_to_the_bundled_corpus(tmp_path):
    result = _materialize(tmp_path)
    assert result.success
    data = Dataset.open(tmp_path / "store" / "documents")
    sources = set(data.read_table(["source"]).column("source").to_pylist())
    assert sources == {"code", "docstrings", "modules", "reference", "idle", "license"}


def test_definitions_load_with_job_and_checks():
    repo = defs.get_repository_def()
    assert repo.has_job("ingest_job")
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {"documents"}


def test_dedup_assets_materialize_with_checks_and_plots(tmp_path, real_texts):
    from curation.pipelines.assets import (
        exact_dedup,
        exact_dedup_one_decision_each,
        fuzzy_dedup,
        fuzzy_dedup_one_decision_each,
    )

    long_texts = [t for t in real_texts if len(t) > 400][:40]
    edited = [t.replace("the", "a", 2) + " (copied)" for t in long_texts[:5]]
    rows = [*long_texts, long_texts[0], *edited]
    raw = tmp_path / "docs.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in rows))
    config = {"ops": {"documents": {"config": {"inputs": [str(raw)]}}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [documents, exact_dedup, fuzzy_dedup, exact_dedup_one_decision_each,
             fuzzy_dedup_one_decision_each],
            instance=instance,
            resources={"storage": StorageRoot(root=str(tmp_path / "store"))},
            run_config=config,
        )
    assert result.success
    by_asset = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert by_asset["exact_dedup"]["dropped_by_reason"].data == {"exact_duplicate": 1}
    assert by_asset["fuzzy_dedup"]["rows_in"].value == len(rows) - 1
    assert by_asset["fuzzy_dedup"]["dropped_by_reason"].data == {"near_duplicate": 5}
    assert "lsh_s_curve" in by_asset["fuzzy_dedup"] and "lsh_s_curve" not in by_asset["exact_dedup"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["exact_dedup_one_decision_each"] and checks["fuzzy_dedup_one_decision_each"]
    assert Dataset.open(tmp_path / "store" / "fuzzy_dedup" / "documents").rows == len(long_texts)
