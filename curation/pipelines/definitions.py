"""The Dagster code location: `dagster dev` from the repo root loads `defs`."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, define_asset_job

from curation.pipelines.assets import (
    documents,
    documents_accounted,
    documents_not_empty,
    exact_dedup,
    exact_dedup_one_decision_each,
    fuzzy_dedup,
    fuzzy_dedup_one_decision_each,
)
from curation.pipelines.resources import StorageRoot

ingest_job = define_asset_job("ingest_job", selection=[documents])
dedup_job = define_asset_job("dedup_job", selection=[documents, exact_dedup, fuzzy_dedup])

defs = Definitions(
    assets=[documents, exact_dedup, fuzzy_dedup],
    asset_checks=[
        documents_accounted,
        documents_not_empty,
        exact_dedup_one_decision_each,
        fuzzy_dedup_one_decision_each,
    ],
    jobs=[ingest_job, dedup_job],
    resources={
        "storage": StorageRoot(
            root=EnvVar("CURATION_STORAGE_ROOT") if os.getenv("CURATION_STORAGE_ROOT") else "curation-data"
        )
    },
)
