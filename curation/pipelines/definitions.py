"""The Dagster code location: `dagster dev` from the repo root loads `defs`."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, define_asset_job

from curation.pipelines.assets import documents, documents_accounted, documents_not_empty
from curation.pipelines.resources import StorageRoot

ingest_job = define_asset_job("ingest_job", selection=[documents])

defs = Definitions(
    assets=[documents],
    asset_checks=[documents_accounted, documents_not_empty],
    jobs=[ingest_job],
    resources={
        "storage": StorageRoot(
            root=EnvVar("CURATION_STORAGE_ROOT") if os.getenv("CURATION_STORAGE_ROOT") else "curation-data"
        )
    },
)
