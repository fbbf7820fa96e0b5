"""Ingest and dedup assets: read input paths, call the library, write output, return metadata."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import tempfile

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from curation import default_corpus
from curation.pipelines.corpora import (
    DEFAULT_CORPUS,
    combine_corpora,
    corpora,
    corpus_inputs,
    corpus_location,
    ingested_corpora,
    registered_corpora,
)
from curation.pipelines.resources import ExecutionEngine, StorageRoot
from curation.plots import bar_png, histogram_png, markdown_image, s_curve_png
from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.storage import IngestConfig, InputSpec, ingest


def plot(png: bytes, alt: str) -> MetadataValue:
    """A PNG shown inline in the Dagster UI."""
    return MetadataValue.md(markdown_image(png, alt))


class DocumentsConfig(Config):
    """Which raw files to ingest into this corpus and how. No inputs: the partition
    `stdlib` ingests the bundled corpus, any other partition its inbox entry."""

    inputs: list[str] = Field(
        default_factory=list,
        description=(
            "Files or folders (SOURCE=PATH names the source). Empty: the bundled corpus for "
            f"partition {DEFAULT_CORPUS!r}, else the inbox file or folder named like the partition."
        ),
    )
    text_field: str = Field(default="text", description="Field holding the text (dotted for nested JSON).")
    source_field: str | None = Field(default=None, description="Record field naming its source.")
    strict: bool = Field(default=False, description="Fail on the first bad record instead of quarantining.")
    max_doc_bytes: int = Field(default=8 << 20, description="Larger documents are quarantined (8 MiB).")


@asset(
    group_name="ingest",
    partitions_def=corpora,
    description="Raw files read into the documents dataset, one partition per corpus: documents/<corpus>/.",
)
def documents(
    context: AssetExecutionContext, config: DocumentsConfig, storage: StorageRoot
) -> MaterializeResult:
    corpus = context.partition_key
    inputs = [InputSpec.parse(i) for i in config.inputs] or _default_inputs(storage, corpus)
    settings = IngestConfig(
        text_field=config.text_field,
        source_field=config.source_field,
        strict=config.strict,
        max_doc_bytes=config.max_doc_bytes,
    )

    def on_file(file: str, done: int, total: int) -> None:
        context.log.info(f"{corpus}: ingested {done}/{total}: {file}")

    out = corpus_location(storage, corpus)
    report = ingest(inputs, str(out), settings, on_file=on_file)
    chart = bar_png(report.by_source, f"{corpus}: documents per source", "documents", log=True)
    return MaterializeResult(
        metadata={
            "corpus": corpus,
            "path": MetadataValue.path(out.uri),
            "records_read": report.records_read,
            "documents": report.documents,
            "quarantined": report.quarantined,
            "dropped_by_reason": MetadataValue.json(report.by_reason),
            "documents_by_source": MetadataValue.json(report.by_source),
            "seconds": report.seconds,
            "sources_plot": plot(chart, "documents per source"),
        }
    )


def _default_inputs(storage: StorageRoot, corpus: str) -> list[InputSpec]:
    if corpus != DEFAULT_CORPUS:
        return corpus_inputs(storage, corpus)
    raw = storage.location("raw", "default-corpus")
    if raw.is_local:
        return default_corpus.build(raw.path)
    return default_corpus.build(tempfile.mkdtemp(prefix="curation-corpus-"))


class DedupStageConfig(Config):
    """SlimPajama dedup settings; defaults are the recipe's."""

    mode: str = Field(default="global", description="global: one index over all sources; local: per source.")
    min_chars: int = Field(default=200, description="Short filter: shorter documents are dropped.")
    short_count: str = Field(
        default="content",
        description="Short filter counts: content (the paper) or cleaned (single spaces kept, filter.py).",
    )
    normalize: str = Field(default="nfc", description="nfc, or ftfy (fix_text then NFC; slow).")
    bands: int = Field(default=9, description="LSH bands (fuzzy only).")
    rows: int = Field(default=13, description="LSH rows per band (fuzzy only).")
    verify: bool = Field(default=False, description="Check candidate pairs by shingle Jaccard (fuzzy only).")


def _dedup_asset(
    context, config: DedupStageConfig, engine: ExecutionEngine, documents_in: str, out: str, **stage
):
    settings = DedupConfig(
        mode=config.mode,
        min_chars=config.min_chars,
        short_count=config.short_count,
        normalize=config.normalize,
        bands=config.bands,
        rows=config.rows,
        verify=config.verify,
        **stage,
    )
    name = context.asset_key.to_user_string()

    def progress(step: str, done: int) -> None:
        context.log.info(f"{name}: {step} {done} documents")

    report = engine.run(dedup_stage, documents_in, out, settings, progress, name=name, engine="local")
    return stage_metadata(report, settings)


def stage_metadata(report, settings: DedupConfig | None = None) -> dict:
    """Counts, drops by reason, seconds and plots of a selecting stage's report."""
    kept_by_source = {s: v["kept"] for s, v in report.details.get("by_source", {}).items()}
    metadata = {
        "path": MetadataValue.path(report.output),
        "rows_in": report.docs_in,
        "kept": report.kept,
        "dropped": report.docs_in - report.kept,
        "dropped_by_reason": MetadataValue.json(report.dropped_by_reason),
        "by_source": MetadataValue.json(report.details.get("by_source", {})),
        "seconds": report.seconds,
        "kept_by_source_plot": plot(
            bar_png(kept_by_source, "kept per source", "documents"), "kept per source"
        ),
    }
    if "largest_clusters" in report.details:
        sizes = [c["size"] for c in report.details["largest_clusters"]]
        metadata["largest_clusters"] = MetadataValue.json(report.details["largest_clusters"])
        metadata["cluster_sizes_plot"] = plot(
            histogram_png(sizes, "largest duplicate groups", "group size"), "cluster sizes"
        )
    if settings is not None and settings.fuzzy:
        curve = s_curve_png(settings.bands, settings.rows, threshold=0.8)
        metadata["lsh_s_curve"] = plot(curve, "LSH S-curve")
    return metadata


@asset(
    group_name="dedup",
    deps=[documents],
    description=(
        "Every registered corpus combined (into combined/), then the short filter and exact dedup "
        "on cleaned text."
    ),
)
def exact_dedup(
    context: AssetExecutionContext, config: DedupStageConfig, storage: StorageRoot, engine: ExecutionEngine
) -> MaterializeResult:
    keys = registered_corpora(context.instance)
    datasets = ingested_corpora(storage, keys)
    context.log.info(f"combining {len(keys)} corpora: {', '.join(keys)}")
    combined = combine_corpora(datasets, storage.location("combined"), keys)  # beside the output
    metadata = _dedup_asset(
        context,
        config,
        engine,
        str(combined.folder),
        str(storage.location("exact_dedup")),
        exact=True,
        fuzzy=False,
    )
    metadata["corpora"] = MetadataValue.json({k: d.rows for k, d in zip(keys, datasets, strict=True)})
    return MaterializeResult(metadata=metadata)


@asset(group_name="dedup", deps=[exact_dedup], description="MinHash LSH near-duplicate removal (SlimPajama).")
def fuzzy_dedup(
    context: AssetExecutionContext, config: DedupStageConfig, storage: StorageRoot, engine: ExecutionEngine
) -> MaterializeResult:
    metadata = _dedup_asset(
        context,
        config,
        engine,
        str(storage.location("exact_dedup", "documents")),
        str(storage.location("fuzzy_dedup")),
        exact=False,
        fuzzy=True,
    )
    return MaterializeResult(metadata=metadata)
