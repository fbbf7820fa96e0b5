"""Declarative automation: a new corpus flows through every stage after ingest, with the
checks, unless a blocking check of what it depends on failed."""

from __future__ import annotations

import dagster as dg
import orjson
import pytest

from curation.errors import CurationError
from curation.pipelines.assets import documents
from curation.pipelines.automation import GLOBAL_STAGES
from curation.pipelines.checks import ALL_CHECKS, documents_accounted, documents_not_empty, quarantine_rate
from curation.pipelines.config import stage_automation
from curation.pipelines.definitions import build_definitions
from tests.pipelines.helpers import register, resources

STAGES = [a.key for a in GLOBAL_STAGES]
STAGE_CHECKS = [c for c in ALL_CHECKS if c.check_key.asset_key in STAGES]


def _ingest(instance, store, corpus, raw, quarantine=None):
    config = {"documents": {"config": {"inputs": [str(raw)]}}}
    if quarantine:
        config["documents_quarantine_rate"] = {"config": quarantine}
    return dg.materialize(
        [documents, documents_accounted, documents_not_empty, quarantine_rate],
        instance=instance,
        partition_key=corpus,
        resources=resources(store),
        run_config={"ops": config},
        raise_on_error=False,
    )


def _requested(result) -> set[str]:
    """Asset and check keys requested, as text."""
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def test_a_new_corpus_flows_through_every_stage_with_its_checks(tmp_path, real_texts):
    raw = tmp_path / "notes.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in real_texts[:20]))
    defs = build_definitions(storage_root=str(tmp_path / "store"), device="cpu")
    with dg.instance_for_test() as instance:
        register(instance, "notes")
        waiting = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert waiting.total_requested == 0  # the corpus is registered, not yet ingested
        assert _ingest(instance, tmp_path / "store", "notes", raw).success
        flowing = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=waiting.cursor)
    expected = {key.to_user_string() for key in STAGES} | {c.check_key.to_user_string() for c in STAGE_CHECKS}
    assert _requested(flowing) == expected  # every stage, each with its checks


def test_a_failed_blocking_check_holds_the_stages_back(tmp_path, real_texts):
    raw = tmp_path / "broken.jsonl"
    raw.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in real_texts[:5]) + b"{bad\n" * 5)
    defs = build_definitions(storage_root=str(tmp_path / "store"), device="cpu")
    with dg.instance_for_test() as instance:
        register(instance, "broken")
        ingested = _ingest(instance, tmp_path / "store", "broken", raw, {"block": True})
        held = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert ingested.get_asset_materialization_events()  # documents were written
    assert held.total_requested == 0


def test_automation_modes():
    assert stage_automation("off") is None
    assert stage_automation("nightly") == dg.AutomationCondition.on_cron("0 3 * * *", "UTC")
    with pytest.raises(CurationError, match="use eager, nightly, off"):
        stage_automation("hourly")
