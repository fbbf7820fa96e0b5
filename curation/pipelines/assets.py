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
from curation.pipelines.resources import StorageRoot
from curation.plots import bar_png, markdown_image
from curation.storage import Dataset, IngestConfig, InputSpec, ingest


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
