"""The inbox sensor: new files become corpora (dynamic partitions) with one ingest run each, never twice."""

from __future__ import annotations

import os

import dagster as dg

from curation.pipelines.automation import inbox_sensor
from curation.pipelines.corpora import CORPORA, DEFAULT_CORPUS
from curation.pipelines.definitions import build_definitions
from curation.pipelines.resources import StorageRoot
from curation.storage import Dataset
from tests.pipelines.helpers import write_jsonl


def _tick(instance, storage: StorageRoot, cursor: str | None):
    """One evaluation, then what the daemon does with it: add the partitions it asks for."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    result = inbox_sensor(context)
    added = [key for request in result.dynamic_partitions_requests for key in request.partition_keys]
    for request in result.dynamic_partitions_requests:
        assert request.partitions_def_name == CORPORA
        instance.add_dynamic_partitions(CORPORA, list(request.partition_keys))
    return result, added


def test_inbox_sensor_registers_new_files_and_requests_each_once(tmp_path, real_texts):
    store = tmp_path / "store"
    storage = StorageRoot(root=str(store), ingest_bundled=True)
    inbox = store / "inbox"
    with dg.instance_for_test() as instance:
        # First tick, absent inbox: it is created; with ingest_bundled (the demo) the
        # bundled corpus is registered and ingested.
        first, added = _tick(instance, storage, None)
        assert inbox.is_dir()
        assert added == [DEFAULT_CORPUS]
        assert [r.partition_key for r in first.run_requests] == [DEFAULT_CORPUS]

        write_jsonl(inbox / "papers.jsonl", real_texts[:25])
        write_jsonl(inbox / "notes" / "a.jsonl", real_texts[25:30])
        write_jsonl(inbox / "half-copied.jsonl.tmp", real_texts[:3])
        write_jsonl(inbox / ".hidden.jsonl", real_texts[:3])
        second, added = _tick(instance, storage, first.cursor)
        # corpora are named like their source: a file without its extension, a folder as it is
        assert sorted(added) == ["notes", "papers"]
        assert sorted(r.partition_key for r in second.run_requests) == ["notes", "papers"]
        assert all(r.job_name in (None, "ingest_job") for r in second.run_requests)
        assert sorted(instance.get_dynamic_partitions(CORPORA)) == sorted([DEFAULT_CORPUS, "notes", "papers"])

        # Nothing new: nothing requested, whatever the number of ticks.
        third, added = _tick(instance, storage, second.cursor)
        assert third.run_requests == [] and added == []
        assert _tick(instance, storage, third.cursor)[0].run_requests == []

        # A changed file is ingested again, into the partition it already has.
        write_jsonl(inbox / "papers.jsonl", real_texts[:40])
        os.utime(inbox / "papers.jsonl", ns=(1, 1))
        fourth, added = _tick(instance, storage, third.cursor)
        assert added == []
        assert [r.partition_key for r in fourth.run_requests] == ["papers"]
        assert fourth.run_requests[0].run_key != second.run_requests[-1].run_key

        # The requested run ingests the inbox file under its corpus.
        job = build_definitions(storage_root=str(store), device="cpu").resolve_job_def("ingest_job")
        run = job.execute_in_process(partition_key=fourth.run_requests[0].partition_key, instance=instance)
        assert run.success
    assert Dataset.open(store / "documents" / "papers").rows == 40
    assert set(Dataset.open(store / "documents" / "papers").read_table(["source"])["source"].to_pylist()) == {
        "papers"
    }  # the partition key is the source name


def test_inbox_sensor_watches_the_configured_folder(tmp_path, real_texts):
    elsewhere = tmp_path / "drop"
    write_jsonl(elsewhere / "web.jsonl", real_texts[:5])
    write_jsonl(tmp_path / "store" / "inbox" / "ignored.jsonl", real_texts[:5])
    storage = StorageRoot(root=str(tmp_path / "store"), inbox=str(elsewhere))
    with dg.instance_for_test() as instance:
        result, added = _tick(instance, storage, None)  # without ingest_bundled: no stdlib
    assert added == ["web"]
    assert [r.partition_key for r in result.run_requests] == ["web"]
