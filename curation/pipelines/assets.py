"""Ingest and dedup assets: read input paths, call the library, write output, return metadata."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import itertools
import tempfile

from dagster import AssetExecutionContext, MaterializeResult, asset
from pydantic import Field

from curation import default_corpus
from curation.pipelines.config import (
    AUTOMATE,
    AUTOMATE_AFTER_INGEST,
    DedupMode,
    Normalization,
    ShortCount,
    StageConfig,
    check_run_settings,
    library_field,
    stage_config,
)
from curation.pipelines.corpora import (
    DEFAULT_CORPUS,
    combine_corpora,
    corpora,
    corpus_inputs,
    corpus_location,
    ingested_corpora,
    registered_corpora,
)
from curation.pipelines.report import Report
from curation.pipelines.resources import ExecutionEngine, StorageRoot
from curation.plots import bar_png, histogram_png, s_curve_png
from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.storage import IngestConfig, InputSpec, Location, ingest, open_quarantine
from curation.storage.ingest import QUARANTINE_DIR

OWNERS = ["team:curation"]
QUARANTINE_ROWS = 20  # quarantined records shown with the documents materialization


@stage_config("documents")
class DocumentsConfig(StageConfig):
    """Which raw files to ingest into this corpus and how. No inputs: the partition
    `stdlib` ingests the bundled corpus, any other partition its inbox entries."""

    inputs: list[str] = Field(
        default_factory=list,
        description=(
            "Files or folders (SOURCE=PATH names the source). Empty: the bundled corpus for "
            f"partition {DEFAULT_CORPUS!r}, else the inbox files or folders named like the partition."
        ),
    )
    text_field: str = library_field(
        IngestConfig, "text_field", "Field holding the text (dotted for nested JSON)."
    )
    source_field: str | None = library_field(IngestConfig, "source_field", "Record field naming its source.")
    strict: bool = library_field(
        IngestConfig, "strict", "Fail on the first bad record instead of quarantining it."
    )
    max_doc_bytes: int = library_field(IngestConfig, "max_doc_bytes", "Larger documents are quarantined.")

    def settings(self) -> IngestConfig:
        return IngestConfig(
            text_field=self.text_field,
            source_field=self.source_field,
            strict=self.strict,
            max_doc_bytes=self.max_doc_bytes,
        )


@asset(
    group_name="ingest",
    partitions_def=corpora,
    kinds={"parquet"},
    owners=OWNERS,
    tags={"stage": "ingest"},
    description=(
        "Raw files read into the documents dataset, one partition per corpus, written to "
        "`documents/CORPUS/`; records that cannot be read go to its quarantine table "
        "`documents/CORPUS/_quarantine/` (file, line, reason, snippet)."
    ),
)
def documents(
    context: AssetExecutionContext, config: DocumentsConfig, storage: StorageRoot
) -> MaterializeResult:
    check_run_settings(context)
    corpus = context.partition_key
    inputs = [InputSpec.parse(i) for i in config.inputs] or _default_inputs(storage, corpus)

    def on_file(file: str, done: int, total: int) -> None:
        context.log.info(f"{corpus}: ingested {done}/{total} files: {file}")

    out = corpus_location(storage, corpus)
    report = ingest(inputs, str(out), config.settings(), on_file=on_file)
    if report.quarantined:
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in report.by_reason.items())
        context.log.warning(
            f"{corpus}: {report.quarantined:,} of {report.records_read:,} records quarantined "
            f"({quarantine_rate(report):.1%}: {reasons}); see {out.join(QUARANTINE_DIR).uri}"
        )
    return documents_report(corpus, out, report).result()


def quarantine_rate(report) -> float:
    return report.quarantined / report.records_read if report.records_read else 0.0


def documents_report(corpus: str, out: Location, report) -> Report:
    page = Report(f"documents: {corpus}", f"{report.files:,} files read into `{out.uri}`.")
    page.value("corpus", corpus)
    page.path("path", out.uri)
    page.value("records_read", report.records_read)
    page.value("documents", report.documents)
    page.value("quarantined", report.quarantined)
    page.value("quarantine_rate", round(quarantine_rate(report), 6))
    page.value("seconds", report.seconds)
    page.path("quarantine", out.join(QUARANTINE_DIR).uri, "quarantine table")
    page.counts("quarantined_by_reason", report.by_reason, "reason", "records", "quarantined by reason")
    if report.quarantined:
        sample, folder = _quarantine_sample(out)
        title = f"quarantined records (the first {len(sample)} of {report.quarantined:,}; files in {folder})"
        page.table("quarantine_sample", sample, title)
    page.counts("documents_by_source", report.by_source, "source", "documents", "documents by source")
    chart = bar_png(report.by_source, f"{corpus}: documents per source", "documents", log=True)
    page.plot(chart, "documents per source")
    return page


def _quarantine_sample(out: Location) -> tuple[list[dict], str]:
    """The first quarantined records, their files named inside the folder they share."""
    columns = ["file", "line", "reason", "detail", "snippet"]
    rows = next(iter(open_quarantine(out).iter_batches(columns, batch_size=QUARANTINE_ROWS))).to_pylist()
    parts = [row["file"].split("/") for row in rows]  # paths or URIs
    same = itertools.takewhile(
        lambda names: len(set(names)) == 1, zip(*(p[:-1] for p in parts), strict=False)
    )
    shared = [names[0] for names in same]
    files = ["/".join(p[len(shared) :]) for p in parts]
    return [{**row, "file": file} for row, file in zip(rows, files, strict=True)], "/".join(shared)


def _default_inputs(storage: StorageRoot, corpus: str) -> list[InputSpec]:
    if corpus != DEFAULT_CORPUS:
        return corpus_inputs(storage, corpus)
    raw = storage.location("raw", "default-corpus")
    if raw.is_local:
        return default_corpus.build(raw.path)
    return default_corpus.build(tempfile.mkdtemp(prefix="curation-corpus-"))


MODE = "global: one index over all sources; local: one per source (duplicates must share it)."
NORMALIZE = "nfc, or ftfy (fix_text then NFC, as the reference's normalize_text.py; slow)."


@stage_config("exact_dedup")
class ExactDedupConfig(StageConfig):
    """The SlimPajama short filter and exact dedup; defaults are the recipe's."""

    mode: DedupMode = library_field(DedupConfig, "mode", MODE, DedupMode)
    min_chars: int = library_field(DedupConfig, "min_chars", "Short filter: shorter documents are dropped.")
    short_count: ShortCount = library_field(
        DedupConfig,
        "short_count",
        "What the short filter counts: content (no punctuation or whitespace, the paper) or cleaned "
        "(single spaces kept, the reference's filter.py).",
        ShortCount,
    )
    normalize: Normalization = library_field(DedupConfig, "normalize", NORMALIZE, Normalization)

    def settings(self) -> DedupConfig:
        return DedupConfig(
            mode=self.mode.value,
            min_chars=self.min_chars,
            short_count=self.short_count.value,
            normalize=self.normalize.value,
            exact=True,
            fuzzy=False,
        )


@stage_config("fuzzy_dedup")
class FuzzyDedupConfig(StageConfig):
    """MinHash LSH near-duplicate removal; defaults are the recipe's (9 bands of 13 rows)."""

    mode: DedupMode = library_field(DedupConfig, "mode", MODE, DedupMode)
    normalize: Normalization = library_field(DedupConfig, "normalize", NORMALIZE, Normalization)
    bands: int = library_field(DedupConfig, "bands", "LSH bands.")
    rows: int = library_field(DedupConfig, "rows", "LSH rows per band.")
    verify: bool = library_field(
        DedupConfig, "verify", "Keep only candidate pairs of shingle Jaccard >= 0.8."
    )

    def settings(self) -> DedupConfig:
        # exact_dedup already applied the short filter to its input; 0 turns it off here
        return DedupConfig(
            mode=self.mode.value,
            normalize=self.normalize.value,
            bands=self.bands,
            rows=self.rows,
            verify=self.verify,
            min_chars=0,
            exact=False,
            fuzzy=True,
        )


def _dedup_asset(context, settings: DedupConfig, engine: ExecutionEngine, documents_in: str, out: str):
    name = context.asset_key.to_user_string()

    def progress(step: str, done: int) -> None:
        context.log.info(f"{name}: {step} {done} documents")

    report = dedup_stage(documents_in, out, settings, progress, name=name, engine=engine.get())
    page = stage_report(name, report, settings)
    page.value("engine", engine.describe())
    return page


def stage_report(name: str, report, settings: DedupConfig | None = None) -> Report:
    """Counts, drops by reason, per-source counts, seconds and plots of a selecting stage."""
    page = Report(name, f"`{report.docs_in:,}` documents in, `{report.kept:,}` kept.")
    page.path("path", report.output)
    page.value("rows_in", report.docs_in)
    page.value("kept", report.kept)
    page.value("dropped", report.docs_in - report.kept)
    page.value("seconds", report.seconds)
    page.counts("dropped_by_reason", report.dropped_by_reason, "reason", "documents", "dropped by reason")
    by_source = report.details.get("by_source", {})
    page.by_row("by_source", by_source, "source", "documents in and kept, by source")
    chart = bar_png({s: v["kept"] for s, v in by_source.items()}, "kept per source", "documents")
    page.plot(chart, "kept per source")
    if "largest_clusters" in report.details:
        largest = report.details["largest_clusters"]
        page.table("largest_clusters", largest, "largest duplicate groups")
        sizes = [c["size"] for c in largest]
        page.plot(histogram_png(sizes, "largest duplicate groups", "group size"), "duplicate group sizes")
    if settings is not None and settings.fuzzy:
        page.plot(s_curve_png(settings.bands, settings.rows, threshold=0.8), "LSH S-curve")
    return page


DEDUP = dict(group_name="dedup", kinds={"parquet", "numba"}, owners=OWNERS, tags={"stage": "dedup"})


@asset(
    deps=[documents],
    description=(
        "Every registered corpus combined (into combined/), then the short filter and exact dedup "
        "on cleaned text."
    ),
    automation_condition=AUTOMATE_AFTER_INGEST,
    **DEDUP,
)
def exact_dedup(
    context: AssetExecutionContext, config: ExactDedupConfig, storage: StorageRoot, engine: ExecutionEngine
) -> MaterializeResult:
    check_run_settings(context)
    keys = registered_corpora(context.instance)
    datasets = ingested_corpora(storage, keys)
    context.log.info(f"combining {len(keys)} corpora: {', '.join(keys)}")
    combined = combine_corpora(datasets, storage.location("combined"), keys)  # beside the output
    out = str(storage.location("exact_dedup"))
    page = _dedup_asset(context, config.settings(), engine, str(combined.folder), out)
    rows = {k: d.rows for k, d in zip(keys, datasets, strict=True)}
    page.counts("corpora", rows, "corpus", "documents", "corpora combined")
    return page.result()


@asset(
    deps=[exact_dedup],
    description="MinHash LSH near-duplicate removal (SlimPajama).",
    automation_condition=AUTOMATE,
    **DEDUP,
)
def fuzzy_dedup(
    context: AssetExecutionContext, config: FuzzyDedupConfig, storage: StorageRoot, engine: ExecutionEngine
) -> MaterializeResult:
    check_run_settings(context)
    documents_in = str(storage.location("exact_dedup", "documents"))
    out = str(storage.location("fuzzy_dedup"))
    return _dedup_asset(context, config.settings(), engine, documents_in, out).result()
