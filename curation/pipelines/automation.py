"""Jobs, the inbox sensor and the sensor that evaluates the stages' automation conditions."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of sensor functions at definition time to infer resources.

import json

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from curation.pipelines.assets import documents, exact_dedup, fuzzy_dedup
from curation.pipelines.config import AUTOMATE
from curation.pipelines.corpora import CORPORA, DEFAULT_CORPUS, corpora, inbox_corpora
from curation.pipelines.quality import quality
from curation.pipelines.resources import StorageRoot
from curation.pipelines.selection import clusters, diverse_subset, embeddings, semantic_dedup
from curation.pipelines.training import mixture_plan, shards, tokenizer, trained_model

GLOBAL_STAGES = [
    exact_dedup,
    fuzzy_dedup,
    quality,
    embeddings,
    clusters,
    semantic_dedup,
    diverse_subset,
    mixture_plan,
    tokenizer,
    shards,
    trained_model,
]

ingest_job = define_asset_job(
    "ingest_job",
    selection=[documents],
    description="Ingest one corpus (a partition of documents); the inbox sensor launches one per new file.",
)
dedup_job = define_asset_job(
    "dedup_job",
    selection=[exact_dedup, fuzzy_dedup],
    description="Exact and fuzzy dedup over every ingested corpus.",
)
full_pipeline = define_asset_job(
    "full_pipeline",
    selection=GLOBAL_STAGES,
    description=(
        "Every stage after ingest, over all registered corpora: dedup, quality, embeddings, clusters, "
        "semantic dedup, kMQ, mixture plan, tokenizer, shards and a training run."
    ),
)
materialize_subset = define_asset_job(
    "materialize_subset",
    selection=[diverse_subset, mixture_plan, tokenizer, shards],
    description="Select a subset with a budget and a mixture, and write it as shards.",
)

stage_automation_sensor = AutomationConditionSensorDefinition(
    "stage_automation",
    target=AssetSelection.assets(*GLOBAL_STAGES),
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING if AUTOMATE is not None else DefaultSensorStatus.STOPPED,
    description=(
        "Evaluates the stages' automation conditions (CURATION_AUTOMATION): by default every stage after "
        "ingest runs, with its checks, once anything upstream changed and no upstream run is in progress, "
        "so a new corpus flows to the shards and the model."
    ),
)


@sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Watches the inbox (storage resource's inbox, default <storage root>/inbox; created when missing). "
        "Each new file or folder becomes a corpus named like its source (web.jsonl.gz: web), a documents "
        "partition, with one ingest run; a changed one is ingested again. With the storage resource's "
        f"ingest_bundled, its first tick also registers and ingests the bundled corpus {DEFAULT_CORPUS!r}. "
        "Move finished files in: names starting with . or _ or ending in .tmp/.part are ignored."
    ),
)
def inbox_sensor(context: SensorEvaluationContext, storage: StorageRoot) -> SensorResult:
    first_tick = context.cursor is None
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    registered = set(context.instance.get_dynamic_partitions(CORPORA))
    new_corpora: list[str] = []
    requests: list[RunRequest] = []
    if first_tick and storage.ingest_bundled and DEFAULT_CORPUS not in registered:
        new_corpora.append(DEFAULT_CORPUS)
        requests.append(RunRequest(run_key=DEFAULT_CORPUS, partition_key=DEFAULT_CORPUS))
    inbox = storage.inbox_location()
    if not inbox.exists():
        inbox.mkdir()
        context.log.info(f"created the inbox {inbox}: move files or folders in to add corpora")
    for name, signature in sorted(inbox_corpora(inbox).items()):
        if seen.get(name) == signature:
            continue
        if name not in registered:
            new_corpora.append(name)
        requests.append(
            RunRequest(run_key=f"{name}@{signature}", partition_key=name, tags={"curation/inbox": name})
        )
        context.log.info(f"inbox: {name} {'changed' if name in seen else 'is new'}; requesting its ingest")
        seen[name] = signature
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[corpora.build_add_request(new_corpora)] if new_corpora else [],
        cursor=json.dumps(seen, sort_keys=True),
    )
