"""Jobs, the nightly schedule and the inbox sensor."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of sensor functions at definition time to infer resources.

import json

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)

from curation.pipelines.assets import documents, exact_dedup, fuzzy_dedup
from curation.pipelines.corpora import CORPORA, DEFAULT_CORPUS, corpora, inbox_entries
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

full_pipeline_schedule = ScheduleDefinition(
    name="full_pipeline_nightly",
    job=full_pipeline,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Re-run every stage after ingest at 03:00 UTC over the corpora ingested so far.",
)


@sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Watches the inbox (storage resource's inbox, default <storage root>/inbox). Each new file or "
        "folder becomes a corpus (a documents partition named like it) with one ingest run; a changed one "
        f"is ingested again. On its first tick it also registers and ingests the bundled corpus "
        f"{DEFAULT_CORPUS!r}. Move finished files in: names starting with . or _ or ending in .tmp/.part "
        "are ignored."
    ),
)
def inbox_sensor(context: SensorEvaluationContext, storage: StorageRoot) -> SensorResult:
    first_tick = context.cursor is None
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    registered = set(context.instance.get_dynamic_partitions(CORPORA))
    new_corpora: list[str] = []
    requests: list[RunRequest] = []
    if first_tick and DEFAULT_CORPUS not in registered:
        new_corpora.append(DEFAULT_CORPUS)
        requests.append(RunRequest(run_key=DEFAULT_CORPUS, partition_key=DEFAULT_CORPUS))
    for name, signature in sorted(inbox_entries(storage.inbox_location()).items()):
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
