"""Asset checks. Blocking ones stop the downstream assets of the same run when they fail."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of check functions at definition time to infer resources.

import json
import math

import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetsDefinition,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from curation.embeddings import EmbeddingStore
from curation.errors import CurationError, IntegrityError
from curation.pipelines.assets import documents, exact_dedup, fuzzy_dedup
from curation.pipelines.config import AUTOMATE, StageConfig, stage_config
from curation.pipelines.corpora import corpus_location
from curation.pipelines.quality import quality
from curation.pipelines.report import Report
from curation.pipelines.resources import StorageRoot
from curation.pipelines.selection import clusters, diverse_subset, embeddings, semantic_dedup
from curation.pipelines.training import shards, tokenizer, trained_model
from curation.storage import Dataset
from curation.storage.decisions import DECISIONS_FILE, check_one_decision_each, read_decisions
from curation.storage.ingest import QUARANTINE_DIR
from curation.storage.shards import ShardReader
from curation.storage.tokenizer import TOKENIZER_FILE, load_tokenizer
from curation.subset import SUBSET_FILE


@asset_check(asset=documents, blocking=True, description="records read = documents + quarantined")
def documents_accounted(context: AssetCheckExecutionContext, storage: StorageRoot) -> AssetCheckResult:
    data = Dataset.open(corpus_location(storage, context.partition_key))
    report = data.manifest.extra["report"]
    balance = report["documents"] + report["quarantined"]
    passed = report["records_read"] == balance and data.rows == report["documents"]
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "corpus": context.partition_key,
            "records_read": report["records_read"],
            "documents": data.rows,
            "quarantined": report["quarantined"],
        },
    )


@asset_check(asset=documents, blocking=True, description="the corpus is not empty")
def documents_not_empty(context: AssetCheckExecutionContext, storage: StorageRoot) -> AssetCheckResult:
    rows = Dataset.open(corpus_location(storage, context.partition_key)).rows
    return AssetCheckResult(passed=rows > 0, metadata={"corpus": context.partition_key, "rows": rows})


@stage_config("documents_quarantine_rate")
class QuarantineRateConfig(StageConfig):
    """How many unreadable records a corpus may have before the check fails."""

    max_rate: float = Field(default=0.05, description="Fail above this share of records quarantined.")
    block: bool = Field(
        default=False,
        description="Fail as an error, which stops the stages after ingest; default: a warning.",
    )

    def settings(self) -> None:
        if not 0.0 <= self.max_rate <= 1.0:
            raise ValueError(f"max_rate must be a share in [0, 1], got {self.max_rate}")


@asset_check(
    asset=documents,
    blocking=True,  # stops what follows only when it fails as an error (block: true)
    description="the share of records quarantined is at most max_rate (5%); a warning unless block is set",
)
def quarantine_rate(
    context: AssetCheckExecutionContext, config: QuarantineRateConfig, storage: StorageRoot
) -> AssetCheckResult:
    out = corpus_location(storage, context.partition_key)
    report = Dataset.open(out).manifest.extra["report"]
    rate = report["quarantined"] / report["records_read"] if report["records_read"] else 0.0
    page = Report(f"quarantine rate: {context.partition_key}")
    page.value("rate", round(rate, 6))
    page.value("max_rate", config.max_rate)
    page.value("quarantined", report["quarantined"])
    page.value("records_read", report["records_read"])
    page.path("quarantine", out.join(QUARANTINE_DIR).uri, "quarantine table")
    page.counts("by_reason", report.get("by_reason", {}), "reason", "records", "quarantined by reason")
    return AssetCheckResult(
        passed=rate <= config.max_rate,
        severity=AssetCheckSeverity.ERROR if config.block else AssetCheckSeverity.WARN,
        metadata={**page.metadata, "report": MetadataValue.md(page.markdown())},
        description=f"{report['quarantined']:,} of {report['records_read']:,} records quarantined "
        f"({rate:.1%})",
    )


# ------------------------------------------------------------ one decision per input id


def _one_decision_each(storage: StorageRoot, stage: str, *source: str) -> AssetCheckResult:
    documents_in = Dataset.open(storage.location(*source))
    decisions = read_decisions(storage.location(stage, DECISIONS_FILE))
    try:
        check_one_decision_each(documents_in, decisions)
        passed, problem = True, ""
    except IntegrityError as exc:
        passed, problem = False, str(exc)
    return AssetCheckResult(
        passed=passed,
        metadata={"inputs": documents_in.rows, "decisions": decisions.num_rows, "problem": problem},
    )


@asset_check(
    asset=exact_dedup,
    automation_condition=AUTOMATE,
    blocking=True,
    description="every input id has exactly one decision",
)
def exact_dedup_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "exact_dedup", "combined")


@asset_check(
    asset=fuzzy_dedup,
    automation_condition=AUTOMATE,
    blocking=True,
    description="every input id has exactly one decision",
)
def fuzzy_dedup_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "fuzzy_dedup", "exact_dedup", "documents")


@asset_check(
    asset=quality,
    automation_condition=AUTOMATE,
    blocking=True,
    description="every input id has exactly one decision",
)
def quality_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "quality", "fuzzy_dedup", "documents")


@asset_check(
    asset=semantic_dedup,
    automation_condition=AUTOMATE,
    blocking=True,
    description="every input id has exactly one decision",
)
def semantic_dedup_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "semantic_dedup", "quality", "documents")


@asset_check(
    asset=diverse_subset,
    automation_condition=AUTOMATE,
    blocking=True,
    description="every input id has exactly one decision",
)
def diverse_subset_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "diverse_subset", "semantic_dedup", "documents")


@asset_check(
    asset=exact_dedup,
    automation_condition=AUTOMATE,
    blocking=True,
    description="ids are unique across the combined corpora (one decision per id needs one id per document)",
)
def exact_dedup_ids_unique(storage: StorageRoot) -> AssetCheckResult:
    ids = Dataset.open(storage.location("combined")).read_table(["id"]).column("id")
    distinct = pc.count_distinct(ids).as_py()
    return AssetCheckResult(passed=distinct == len(ids), metadata={"ids": len(ids), "distinct": distinct})


# ------------------------------------------------------------ every row accounted for


@asset_check(
    asset=embeddings,
    automation_condition=AUTOMATE,
    blocking=True,
    description="one vector per document kept by quality",
)
def embeddings_cover_documents(storage: StorageRoot) -> AssetCheckResult:
    vectors = EmbeddingStore.open(storage.location("embeddings")).rows
    docs = Dataset.open(storage.location("quality", "documents")).rows
    return AssetCheckResult(passed=vectors == docs, metadata={"vectors": vectors, "documents": docs})


@asset_check(
    asset=clusters,
    automation_condition=AUTOMATE,
    blocking=True,
    description="one cluster assignment per vector",
)
def clusters_cover_embeddings(storage: StorageRoot) -> AssetCheckResult:
    assigned = Dataset.open(storage.location("clusters")).rows
    vectors = EmbeddingStore.open(storage.location("embeddings")).rows
    return AssetCheckResult(passed=assigned == vectors, metadata={"assigned": assigned, "vectors": vectors})


# ------------------------------------------------------------ no empty outputs


def _rows(storage: StorageRoot, *parts: str) -> int:
    return Dataset.open(storage.location(*parts)).rows


def _not_empty(asset: AssetsDefinition, *parts: str):
    name = asset.key.to_user_string()

    @asset_check(
        asset=asset,
        name=f"{name}_not_empty",
        blocking=True,
        description="the output is not empty",
        automation_condition=AUTOMATE,
    )
    def _check(storage: StorageRoot) -> AssetCheckResult:
        rows = _rows(storage, *parts)
        return AssetCheckResult(passed=rows > 0, metadata={"rows": rows})

    return _check


exact_dedup_not_empty = _not_empty(exact_dedup, "exact_dedup", "documents")
fuzzy_dedup_not_empty = _not_empty(fuzzy_dedup, "fuzzy_dedup", "documents")
quality_not_empty = _not_empty(quality, "quality", "documents")
embeddings_not_empty = _not_empty(embeddings, "embeddings")
clusters_not_empty = _not_empty(clusters, "clusters")
semantic_dedup_not_empty = _not_empty(semantic_dedup, "semantic_dedup", "documents")
diverse_subset_not_empty = _not_empty(diverse_subset, "diverse_subset", "documents")


@asset_check(
    asset=tokenizer,
    automation_condition=AUTOMATE,
    blocking=True,
    description="the tokenizer loads and learned merges past the bytes",
)
def tokenizer_not_empty(storage: StorageRoot) -> AssetCheckResult:
    vocab = load_tokenizer(storage.location("tokenizer", TOKENIZER_FILE)).get_vocab_size()
    return AssetCheckResult(passed=vocab > 257, metadata={"vocab_size": vocab})


# ------------------------------------------------------------ shards


@asset_check(
    asset=shards,
    automation_condition=AUTOMATE,
    blocking=True,
    description="every shard's sha256 matches index.json",
)
def shards_checksums_match(storage: StorageRoot) -> AssetCheckResult:
    try:
        reader = ShardReader(storage.location("shards"), verify="open")
    except (IntegrityError, CurationError) as exc:
        return AssetCheckResult(passed=False, metadata={"problem": str(exc)})
    sequences = {s: reader.num_sequences(s) for s in reader.sources}
    return AssetCheckResult(
        passed=sum(sequences.values()) > 0,
        metadata={"sources": len(sequences), "sequences": sum(sequences.values()), "problem": ""},
    )


@asset_check(
    asset=shards,
    automation_condition=AUTOMATE,
    blocking=True,
    description="the selected count is within the budget, in its unit",
)
def shards_within_budget(storage: StorageRoot) -> AssetCheckResult:
    loc = storage.location("shards", SUBSET_FILE)
    with loc.fs.open_input_stream(loc.path) as handle:
        subset = json.loads(handle.read())
    budget, totals = subset["budget"], subset["totals"]
    counted = totals["tokens"] if budget["unit"] == "tokens" else totals["selected"]
    return AssetCheckResult(
        passed=0 < counted <= budget["asked"] and counted == budget["achieved"],
        metadata={
            "unit": budget["unit"],
            "asked": budget["asked"],
            "selected": counted,
            "tokens": totals["tokens"],
            "documents": totals["selected"],
        },
    )


# ------------------------------------------------------------ training


@asset_check(
    asset=trained_model,
    automation_condition=AUTOMATE,
    description="the final training and validation losses are finite",
)
def trained_model_loss_finite(storage: StorageRoot) -> AssetCheckResult:
    loc = storage.location("trained_model", "metrics.jsonl")
    with loc.fs.open_input_stream(loc.path) as handle:
        records = [json.loads(line) for line in handle.read().decode().splitlines() if line]
    last = records[-1] if records else {}
    evaluated = [r["eval"]["overall"] for r in records if r.get("eval")]
    losses = [last.get("loss", math.nan), *evaluated[-1:]]
    return AssetCheckResult(
        passed=bool(records) and all(math.isfinite(v) for v in losses),
        severity=AssetCheckSeverity.WARN,
        metadata={"steps": len(records), "final_loss": float(losses[0])},
    )


ALL_CHECKS = [
    documents_accounted,
    documents_not_empty,
    quarantine_rate,
    exact_dedup_one_decision_each,
    exact_dedup_ids_unique,
    exact_dedup_not_empty,
    fuzzy_dedup_one_decision_each,
    fuzzy_dedup_not_empty,
    quality_one_decision_each,
    quality_not_empty,
    embeddings_cover_documents,
    embeddings_not_empty,
    clusters_cover_embeddings,
    clusters_not_empty,
    semantic_dedup_one_decision_each,
    semantic_dedup_not_empty,
    diverse_subset_one_decision_each,
    diverse_subset_not_empty,
    tokenizer_not_empty,
    shards_checksums_match,
    shards_within_budget,
    trained_model_loss_finite,
]
