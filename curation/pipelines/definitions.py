"""The Dagster code location: `dagster dev` from the repo root loads `defs`.

Resources come from the environment when set: CURATION_STORAGE_ROOT (default
`curation-data`), CURATION_INBOX (default `<storage root>/inbox`),
CURATION_INGEST_BUNDLED (`1`: the inbox sensor ingests the bundled corpus; the
demo), CURATION_DEVICE (default `auto`), CURATION_ENGINE (default `local`) and
CURATION_RAY_ADDRESS (engine `ray`: the cluster; unset: a Ray started for each run).
CURATION_AUTOMATION (`eager`, the default; `nightly`; `off`) sets when the
stages after ingest run by themselves (`curation.pipelines.config.stage_automation`).

Runs execute in one process (the in-process executor): the stages form a
chain, the heavy ones already use every core, and one process per step would
pay the torch import again for each of ~30 steps.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, in_process_executor

from curation.pipelines.assets import documents
from curation.pipelines.automation import (
    GLOBAL_STAGES,
    dedup_job,
    full_pipeline,
    inbox_sensor,
    ingest_job,
    materialize_subset,
    stage_automation_sensor,
)
from curation.pipelines.checks import ALL_CHECKS
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot

ASSETS = [documents, *GLOBAL_STAGES]  # ingest, then the stages over every corpus


def _env(name: str, default: str):
    return EnvVar(name) if os.getenv(name) else default


def _flag(name: str) -> bool:
    return os.getenv(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_definitions(
    storage_root: str | None = None,
    inbox: str | None = None,
    device: str | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
    ingest_bundled: bool | None = None,
) -> Definitions:
    """The whole code location; arguments override the environment (tests use them)."""
    return Definitions(
        assets=ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[ingest_job, dedup_job, full_pipeline, materialize_subset],
        sensors=[inbox_sensor, stage_automation_sensor],
        executor=in_process_executor,
        resources={
            "storage": StorageRoot(
                root=storage_root or _env("CURATION_STORAGE_ROOT", "curation-data"),
                inbox=inbox or _env("CURATION_INBOX", ""),
                ingest_bundled=_flag("CURATION_INGEST_BUNDLED") if ingest_bundled is None else ingest_bundled,
            ),
            "device": ComputeDevice(device=device or _env("CURATION_DEVICE", "auto")),
            "engine": ExecutionEngine(
                kind=engine or _env("CURATION_ENGINE", "local"),
                ray_address=ray_address or _env("CURATION_RAY_ADDRESS", ""),
            ),
        },
    )


defs = build_definitions()
