"""Helpers for the Dagster tests: small run settings, resources on a temporary root."""

from __future__ import annotations

import base64

import dagster as dg
import orjson

from curation.pipelines.corpora import CORPORA
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


def png_of(markdown: str) -> bytes:
    """The PNG a markdown image metadata value embeds."""
    assert markdown.startswith("![") and "](data:image/png;base64," in markdown, markdown[:80]
    return base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))
