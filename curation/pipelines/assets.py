"""Assets: read input paths, call the library, write output, return metadata."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import tempfile

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from curation import default_corpus
from curation.errors import IntegrityError
from curation.pipelines.resources import StorageRoot
from curation.plots import bar_png, histogram_png, markdown_image, s_curve_png
from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.storage import Dataset, IngestConfig, InputSpec, ingest
from curation.storage.decisions import DECISIONS_FILE, check_one_decision_each, read_decisions


class DocumentsConfig(Config):
    """Which raw files to ingest and how. No inputs means the bundled default corpus."""

    inputs: list[str] = Field(
        default_factory=list,
        description="Files or folders (SOURCE=PATH names the source). Empty: bundled corpus.",
    )
    text_field: str = Field(default="text", description="Field holding the text.")
    source_field: str | None = Field(default=None, description="Record field naming its source.")
    strict: bool = Field(default=False, description="Fail on the first bad record.")
    max_doc_bytes: int = Field(default=8 << 20, description="Larger documents are quarantined.")


@asset(group_name="ingest", description="Raw files read into the documents dataset.")
def documents(
    context: AssetExecutionContext, config: DocumentsConfig, storage: StorageRoot
) -> MaterializeResult:
    inputs = [InputSpec.parse(i) for i in config.inputs] or _default_inputs(storage)
    settings = IngestConfig(
        text_field=config.text_field,
        source_field=config.source_field,
        strict=config.strict,
        max_doc_bytes=config.max_doc_bytes,
    )

    def on_file(file: str, done: int, total: int) -> None:
        context.log.info(f"ingested {done}/{total}: {file}")

    out = storage.location("documents")
    report = ingest(inputs, str(out), settings, on_file=on_file)
    chart = bar_png(report.by_source, "documents per source", "documents", log=True)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(out.uri),
            "records_read": report.records_read,
            "documents": report.documents,
            "quarantined": report.quarantined,
            "dropped_by_reason": MetadataValue.json(report.by_reason),
            "documents_by_source": MetadataValue.json(report.by_source),
            "seconds": report.seconds,
            "sources_plot": MetadataValue.md(markdown_image(chart, "documents per source")),
        }
    )


def _default_inputs(storage: StorageRoot) -> list[InputSpec]:
    raw = storage.location("raw", "default-corpus")
    if raw.is_local:
        return default_corpus.build(raw.path)
    return default_corpus.build(tempfile.mkdtemp(prefix="curation-corpus-"))


@asset_check(asset=documents, blocking=True, description="records read = documents + quarantined")
def documents_accounted(storage: StorageRoot) -> AssetCheckResult:
    data = Dataset.open(storage.location("documents"))
    report = data.manifest.extra["report"]
    balance = report["documents"] + report["quarantined"]
    passed = report["records_read"] == balance and data.rows == report["documents"]
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "records_read": report["records_read"],
            "documents": data.rows,
            "quarantined": report["quarantined"],
        },
    )


@asset_check(asset=documents, blocking=True, description="the dataset is not empty")
def documents_not_empty(storage: StorageRoot) -> AssetCheckResult:
    rows = Dataset.open(storage.location("documents")).rows
    return AssetCheckResult(passed=rows > 0, metadata={"rows": rows})


class DedupStageConfig(Config):
    """SlimPajama dedup settings; defaults are the recipe's."""

    mode: str = Field(default="global", description="global: one index over all sources; local: per source.")
    min_chars: int = Field(default=200, description="Short filter on content characters.")
    bands: int = Field(default=9, description="LSH bands.")
    rows: int = Field(default=13, description="LSH rows per band.")
    verify: bool = Field(default=False, description="Check candidate pairs by shingle Jaccard.")


def _dedup_asset(context, config: DedupStageConfig, storage: StorageRoot, name: str, source: str, **stage):
    settings = DedupConfig(
        mode=config.mode,
        min_chars=config.min_chars,
        bands=config.bands,
        rows=config.rows,
        verify=config.verify,
        **stage,
    )
    upstream = storage.location(source) if source == "documents" else storage.location(source, "documents")
    documents_in = str(upstream)

    def progress(step: str, done: int) -> None:
        context.log.debug(f"{name}: {step} {done}")

    report = dedup_stage(documents_in, str(storage.location(name)), settings, progress, name=name)
    return MaterializeResult(metadata=stage_metadata(report, settings))


def stage_metadata(report, settings: DedupConfig) -> dict:
    sizes = [c["size"] for c in report.details["largest_clusters"]]
    metadata = {
        "path": MetadataValue.path(report.output),
        "rows_in": report.docs_in,
        "kept": report.kept,
        "dropped_by_reason": MetadataValue.json(report.dropped_by_reason),
        "largest_clusters": MetadataValue.json(report.details["largest_clusters"]),
        "seconds": report.seconds,
        "cluster_sizes_plot": MetadataValue.md(
            markdown_image(histogram_png(sizes, "largest duplicate groups", "group size"), "cluster sizes")
        ),
    }
    if settings.fuzzy:
        curve = s_curve_png(settings.bands, settings.rows, threshold=0.8)
        metadata["lsh_s_curve"] = MetadataValue.md(markdown_image(curve, "LSH S-curve"))
    return metadata


@asset(group_name="dedup", deps=[documents], description="Short filter and exact dedup on cleaned text.")
def exact_dedup(
    context: AssetExecutionContext, config: DedupStageConfig, storage: StorageRoot
) -> MaterializeResult:
    return _dedup_asset(context, config, storage, "exact_dedup", "documents", exact=True, fuzzy=False)


@asset(group_name="dedup", deps=[exact_dedup], description="MinHash LSH near-duplicate removal (SlimPajama).")
def fuzzy_dedup(
    context: AssetExecutionContext, config: DedupStageConfig, storage: StorageRoot
) -> MaterializeResult:
    return _dedup_asset(context, config, storage, "fuzzy_dedup", "exact_dedup", exact=False, fuzzy=True)


def _one_decision_each(storage: StorageRoot, name: str, source_dataset) -> AssetCheckResult:
    documents_in = Dataset.open(source_dataset)
    decisions = read_decisions(storage.location(name, DECISIONS_FILE))
    try:
        check_one_decision_each(documents_in, decisions)
        passed, problem = True, ""
    except IntegrityError as exc:
        passed, problem = False, str(exc)
    return AssetCheckResult(passed=passed, metadata={"decisions": decisions.num_rows, "problem": problem})


@asset_check(asset=exact_dedup, blocking=True, description="every input id has exactly one decision")
def exact_dedup_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "exact_dedup", storage.location("documents"))


@asset_check(asset=fuzzy_dedup, blocking=True, description="every input id has exactly one decision")
def fuzzy_dedup_one_decision_each(storage: StorageRoot) -> AssetCheckResult:
    return _one_decision_each(storage, "fuzzy_dedup", storage.location("exact_dedup", "documents"))
