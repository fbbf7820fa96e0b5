"""Helpers for the Dagster tests: small run settings, resources on a temporary root."""

from __future__ import annotations

import base64
import re

import dagster as dg
import orjson

from curation.pipelines.corpora import CORPORA
from curation.pipelines.report import table_rows
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot

# Small settings so the whole graph runs in seconds on a CPU: a tiny tokenizer,
# short sequences and a one-layer model trained for a few steps.
SMALL_TRAINING = {
    "diverse_subset": {"config": {"probe_steps": 4, "holdout": 4}},  # three kMQ rounds, short probes
    "tokenizer": {"config": {"vocab_size": 1024}},
    "shards": {"config": {"seq_len": 65}},
    "trained_model": {
        "config": {
            "steps": 4,
            "batch_size": 4,
            "layers": 1,
            "heads": 2,
            "width": 32,
            "eval_every": 2,
            "checkpoint_every": 2,
            "holdout": 2,
            "warmup": 1,
        }
    },
}


def resources(root) -> dict:
    return {
        "storage": StorageRoot(root=str(root)),
        "device": ComputeDevice(device="cpu"),
        "engine": ExecutionEngine(),
    }


def register(instance: dg.DagsterInstance, *corpora: str) -> None:
    instance.add_dynamic_partitions(CORPORA, list(corpora))


def write_jsonl(path, texts) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))


def metadata_by_asset(result) -> dict[str, dict]:
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def checks_by_name(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def table(value, key: str, column: str) -> dict:
    """A two-column metadata table as {key: column}."""
    return {row[key]: row[column] for row in table_rows(value)}


def report_plots(metadata) -> dict[str, bytes]:
    """The PNGs the materialization's Markdown report shows inline, by their titles."""
    found = re.findall(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", metadata["report"].value)
    return {alt: base64.b64decode(data) for alt, data in found}
