"""The `curation` command line."""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from curation.defaults import Defaults
from curation.errors import CurationError
from curation.progress import count_bar, file_bar, loss_bar, stage_bar
from curation.selectors.budget import BUDGET_FORMS, Budget

if TYPE_CHECKING:  # pyarrow and the stages load inside the commands: `curation --help` stays quick
    from curation.storage import IngestReport, InputSpec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Curate training data: ingest, deduplicate, select, mix, shard, train.",
)
console = Console(stderr=True)

# Option defaults are the library's, read when first needed (no stage module is imported to start).
INGEST = Defaults("curation.storage:IngestConfig")
DEDUP = Defaults("curation.selectors.dedup:DedupConfig")
EMBED = Defaults("curation.embeddings:embed_dataset")
KMEANS = Defaults("curation.embeddings:KMeansConfig")
SEMDEDUP = Defaults("curation.selectors.semdedup:SemDeDupConfig")
KMQ = Defaults("curation.selectors.diversity:KMQConfig")
PERPLEXITY = Defaults("curation.selectors.quality:PerplexityConfig")
MIXTURE = Defaults("curation.selectors.mixture:MixtureConfig")
SUBSET = Defaults("curation.subset:SubsetConfig")
SHARDS = Defaults("curation.storage.shards:ShardConfig")
TOKENIZER = Defaults("curation.storage.tokenizer:TokenizerConfig")
SCORING = Defaults("curation.train.clusters:ClusterScoring")


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


OVERWRITE_HELP = (
    "Write into a folder that holds files curation did not write; only curation's own are replaced."
)
Overwrite = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]


EngineName = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where the heavy work runs: local (this process) or ray (pip install 'curation\\[ray]').",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="With --engine ray: an existing Ray cluster (e.g. auto); default: start one."
    ),
]


def _engine(name: str, ray_address: str | None):
    """The engine a command runs on: opened here, closed when the command ends."""
    from curation.engine import engine_for

    return engine_for(name, ray_address)


def _permit(out, overwrite: bool):
    from curation.storage.output import overwrite_allowed

    return overwrite_allowed(out) if overwrite else nullcontext()


@app.command("ingest")
def ingest_command(
    inputs: Annotated[list[str], typer.Argument(help="Files or folders; SOURCE=PATH sets the source.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output documents dataset folder.")],
    source: Annotated[str | None, typer.Option(help="Source for inputs that name none.")] = None,
    text_field: Annotated[
        str, typer.Option(help="Field holding the text (dotted for nested).")
    ] = INGEST.text_field,
    source_field: Annotated[str | None, typer.Option(help="Record field naming its source.")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl|parquet|csv|txt; default: by extension.")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Stop at the first bad record instead of quarantining it.")
    ] = INGEST.strict,
    max_doc_bytes: Annotated[
        int, typer.Option(help="Larger documents are quarantined.")
    ] = INGEST.max_doc_bytes,
    overwrite: Overwrite = False,
) -> None:
    """Read raw files into a documents dataset (Parquet + manifest), quarantining bad records."""
    from curation.storage import IngestConfig, InputSpec, ingest

    try:
        config = IngestConfig(
            text_field=text_field,
            source_field=source_field,
            source=source,
            strict=strict,
            max_doc_bytes=max_doc_bytes,
        )
        specs = [_with_format(InputSpec.parse(i), fmt) for i in inputs]
        with _permit(out, overwrite), file_bar(console, "ingest") as on_file:
            report = ingest(specs, str(out), config, on_file=on_file)
    except CurationError as exc:
        _fail(exc)
    print_ingest(report)


def _with_format(spec: InputSpec, fmt: str | None) -> InputSpec:
    from curation.storage import InputSpec

    if fmt is None:
        return spec
    if fmt not in ("jsonl", "parquet", "csv", "txt"):
        raise CurationError(f"--format {fmt!r}: use jsonl, parquet, csv or txt")
    return InputSpec(spec.path, spec.source, fmt, spec.text_field)


def print_ingest(report: IngestReport) -> None:
    table = Table(title="ingest", show_header=False)
    table.add_row("files", str(report.files))
    table.add_row("records read", f"{report.records_read:,}")
    table.add_row("documents", f"{report.documents:,}")
    table.add_row("quarantined", f"{report.quarantined:,}")
    for reason, n in report.by_reason.items():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("output", report.output)
    console.print(table)
    if report.skipped_links:
        shown = ", ".join(report.skipped_links[:5]) + (", ..." if len(report.skipped_links) > 5 else "")
        console.print(f"not followed: {len(report.skipped_links)} symbolic links ({shown})", highlight=False)


@app.command("info")
def info_command(
    dataset: Annotated[str, typer.Argument(help="A dataset folder or URI.")],
    verify: Annotated[bool, typer.Option(help="Check every file's sha256.")] = False,
) -> None:
    """Show a dataset's or shard set's manifest: kind, rows, files; optionally verify checksums."""
    from curation.storage import Dataset, resolve
    from curation.storage.shards import INDEX_FILE

    if resolve(dataset).join(INDEX_FILE).exists():
        return _shard_set_info(dataset, verify)
    try:
        data = Dataset.open(dataset)
        if verify:
            data.verify()
    except CurationError as exc:
        _fail(exc)
    manifest = data.manifest
    console.print(
        f"{dataset}: {manifest.kind}, {manifest.rows:,} rows in "
        f"{len(manifest.files)} files, {manifest.bytes:,} bytes" + (", checksums ok" if verify else "")
    )
    if manifest.sidecars:
        console.print(
            f"  and {len(manifest.sidecars)} other files, {sum(f.bytes for f in manifest.sidecars):,} bytes"
        )
    for key, value in manifest.extra.get("report", {}).items():
        console.print(f"  {key}: {value}")


def _shard_set_info(path: str, verify: bool) -> None:
    from curation.storage.shards import ShardReader, verify_shard_set

    try:
        reader = verify_shard_set(path) if verify else ShardReader(path, verify="none")
    except CurationError as exc:
        _fail(exc)
    totals = reader.index.get("totals", {})
    shards = sum(len(s["shards"]) for s in reader.index["sources"].values())
    console.print(
        f"{path}: shard set, {totals.get('sequences', 0):,} sequences of {reader.seq_len} tokens "
        f"in {len(reader.sources)} sources, {shards} shard files" + (", checksums ok" if verify else "")
    )


@app.command("dedup")
def dedup_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset (from `curation ingest`).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Writes OUT/decisions.parquet and OUT/documents/.")],
    mode: Annotated[
        str, typer.Option(help="global: one index over all sources; local: one per source.")
    ] = DEDUP.mode,
    exact_only: Annotated[bool, typer.Option(help="Skip MinHash fuzzy dedup.")] = False,
    verify: Annotated[
        bool, typer.Option(help="Keep only candidate pairs with shingle Jaccard >= 0.8.")
    ] = False,
    min_chars: Annotated[
        int, typer.Option(help="Short filter: shorter documents are dropped.")
    ] = DEDUP.min_chars,
    short_count: Annotated[
        str, typer.Option(help="content (no spaces or punctuation, the paper) or cleaned (filter.py).")
    ] = DEDUP.short_count,
    normalize: Annotated[str, typer.Option(help="nfc, or ftfy (fix_text then NFC; slow).")] = DEDUP.normalize,
    bands: Annotated[int, typer.Option(help="LSH bands.")] = DEDUP.bands,
    rows: Annotated[int, typer.Option(help="LSH rows per band.")] = DEDUP.rows,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """Exact and SlimPajama fuzzy dedup (MinHash + LSH), global or per source."""
    from curation.selectors.dedup import DedupConfig
    from curation.stages import dedup_stage
    from curation.storage import Dataset

    try:
        config = DedupConfig(
            mode=mode, fuzzy=not exact_only, verify=verify, min_chars=min_chars, bands=bands, rows=rows,
            short_count=short_count, normalize=normalize,
        )  # fmt: skip
        total = Dataset.open(documents).rows
        with (
            _engine(engine, ray_address) as runner,
            _permit(out, overwrite),
            stage_bar(console, total) as progress,
        ):
            report = dedup_stage(documents, out, config, progress, engine=runner)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    print_stage(report)


def print_stage(report) -> None:
    table = Table(title=report.stage, show_header=False)
    table.add_row("documents in", f"{report.docs_in:,}")
    table.add_row("kept", f"{report.kept:,}")
    for reason, n in report.dropped_by_reason.items():
        table.add_row(f"  dropped: {reason}", f"{n:,}")
    table.add_row("seconds", f"{report.seconds:.1f}")
    table.add_row("output", report.output)
    console.print(table)


@app.command("embed")
def embed_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset.")],
    out: Annotated[str, typer.Option("--out", "-o", help="The embeddings store (Parquet parts + manifest).")],
    encoder: Annotated[
        str,
        typer.Option(
            help="auto (MiniLM on a GPU, static on a CPU), static (distilled from MiniLM, "
            "built once on first use), minilm, or hashed (n-grams: lexical, no model)."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Texts sent to the encoder at once.")] = EMBED.batch_size,
    max_tokens: Annotated[
        int | None, typer.Option(help="Tokens read per document (static and minilm: 256).")
    ] = None,
    max_chars: Annotated[
        int | None,
        typer.Option(help="Characters read per document, before tokenising (see the README)."),
    ] = None,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """Embed every document (L2-normalised vectors); a restarted job skips finished parts."""
    from curation.device import resolve as resolve_device
    from curation.embeddings import embed_dataset
    from curation.stages import encoder_label, make_encoder

    try:
        hardware = resolve_device(device)
        with _engine(engine, ray_address) as runner:
            model = make_encoder(encoder, hardware, max_tokens, max_chars, console.print, runner)
            with _permit(out, overwrite), count_bar(console, "embed") as progress:
                report = embed_dataset(
                    documents, out, model, batch_size=batch_size, progress=progress, engine=runner
                )
    except (CurationError, ValueError) as exc:
        _fail(exc)
    console.print(
        f"embedded {report.rows:,} documents ({report.encoded:,} encoded, "
        f"{report.parts_reused} parts reused) with {encoder_label(model)} on {hardware.describe()} "
        f"in {report.seconds:.1f}s -> {report.path}"
    )


models_app = typer.Typer(no_args_is_help=True, help="The static encoder's model: build it ahead, inspect it.")
app.add_typer(models_app, name="models")


@models_app.command("build")
def models_build_command(
    force: Annotated[bool, typer.Option(help="Rebuild even when a sound copy is cached.")] = False,
    vocabulary: Annotated[
        int | None, typer.Option(help="Keep the source's first N tokens (faster build, fewer words).")
    ] = None,
    pca_dims: Annotated[int, typer.Option(help="Dimensions after PCA.")] = 256,
    out: Annotated[
        Path | None, typer.Option(help="Build here instead of the cache (use with CURATION_STATIC_MODEL).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N: where MiniLM runs.")] = "auto",
) -> None:
    """Distil the static encoder from the bundled all-MiniLM-L6-v2 (offline), or check the cached one."""
    from curation.device import resolve as resolve_device
    from curation.embeddings.static import DistillSettings, cache_dir, ensure_built, read_record

    try:
        settings = DistillSettings(pca_dims=pca_dims, vocabulary=vocabulary)
        folder = out or cache_dir() / "models" / settings.folder_name()
        ensure_built(folder, settings, resolve_device(device), console.print, force)
    except (CurationError, ValueError, OSError) as exc:
        _fail(exc)
    record = read_record(folder) or {}
    console.print(
        f"static model ready: {folder} (source {record['source']['name']} "
        f"sha256 {record['source']['sha256'][:12]}..., built in {record['seconds']}s)"
    )


@models_app.command("info")
def models_info_command() -> None:
    """Where the static model lives and whether it can be used as it is."""
    from curation.embeddings.encoders import bundled_minilm_path
    from curation.embeddings.static import (
        MODEL_ENV,
        DistillSettings,
        cache_dir,
        cache_problem,
        read_record,
        source_fingerprint,
    )

    try:
        settings = DistillSettings()
        folder = cache_dir() / "models" / settings.folder_name()
        record = read_record(folder)
        source = source_fingerprint(bundled_minilm_path(), record.get("source") if record else None)
        problem = cache_problem(folder, settings, source)
    except (CurationError, OSError) as exc:
        _fail(exc)
    console.print(f"cache: {cache_dir()}")
    console.print(f"static model: {folder}: {problem or 'ready'}")
    if record:
        console.print(f"  settings: {record['settings']}")
    console.print(f"  source: {source['name']} sha256 {source['sha256']}")
    if os.environ.get(MODEL_ENV):
        console.print(f"{MODEL_ENV} is set: the static encoder uses {os.environ[MODEL_ENV]}")


@app.command("cluster")
def cluster_command(
    embeddings: Annotated[str, typer.Argument(help="An embeddings store (from `curation embed`).")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Writes (id, cluster, distance) and centroids.npy.")
    ],
    k: Annotated[
        str | None,
        typer.Option(help="Clusters: a number, or auto (best silhouette); default sqrt(n), auto for kmq."),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="semdedup (100 iterations, one run) or kmq (300 iterations, best of 5).")
    ] = "semdedup",
    iterations: Annotated[int | None, typer.Option(help="k-means iterations (overrides the preset).")] = None,
    restarts: Annotated[int | None, typer.Option(help="Runs; the best wins (overrides the preset).")] = None,
    spherical: Annotated[bool, typer.Option(help="Cosine (spherical) k-means.")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (FAISS GPU when built).")] = "auto",
    seed: Annotated[int, typer.Option()] = KMEANS.seed,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """FAISS k-means over embeddings; every document gets a cluster and its distance to the centroid."""
    from curation.device import resolve as resolve_device
    from curation.embeddings import cluster_embeddings

    try:
        hardware = resolve_device(device)
        config = _kmeans_config(preset, iterations, restarts, spherical, seed)
        k_value = _cluster_count(embeddings, k or ("auto" if preset == "kmq" else None), config, hardware)
        with (
            _engine(engine, ray_address) as runner,
            _permit(out, overwrite),
            count_bar(console, "assign") as progress,
        ):
            report = cluster_embeddings(embeddings, out, k_value, config, hardware, progress, engine=runner)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    sizes = sorted(report.sizes)
    console.print(
        f"{report.rows:,} documents in {report.k} clusters (trained on {report.train_points:,}); "
        f"sizes min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]}; "
        f"{report.empty_clusters} empty; {report.seconds:.1f}s -> {report.path}"
    )


def _kmeans_config(preset: str, iterations: int | None, restarts: int | None, spherical: bool, seed: int):
    from curation.embeddings import KMeansConfig

    if preset not in ("semdedup", "kmq"):
        raise CurationError(f"--preset {preset!r}: use semdedup or kmq")
    base = KMeansConfig.kmq() if preset == "kmq" else KMeansConfig()
    return KMeansConfig(
        niter=iterations or base.niter, nredo=restarts or base.nredo, spherical=spherical, seed=seed
    )


def _cluster_count(embeddings: str, k: str | None, config, device) -> int:
    """A number, `auto` (silhouette over powers of two), or None for about sqrt(n)."""
    from curation.embeddings import EmbeddingStore, auto_k
    from curation.stages import default_k

    if k is None:
        return default_k(EmbeddingStore.open(embeddings).rows)
    if k == "auto":
        with console.status("choosing k by silhouette"):
            best, scores = auto_k(embeddings, config, device)
        shown = ", ".join(f"{c}: {v:.3f}" for c, v in scores.items())
        console.print(f"k = {best} by silhouette ({shown})")
        return best
    if not k.isdigit() or int(k) < 1:
        raise CurationError(f"--k {k!r}: give a number of clusters or auto")
    return int(k)


@app.command("semdedup")
def semdedup_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset.")],
    embeddings: Annotated[str, typer.Option(help="Its embeddings store.")],
    clusters: Annotated[str, typer.Option(help="Its clusters (from `curation cluster`).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Writes OUT/decisions.parquet and OUT/documents/.")],
    target_fraction: Annotated[
        float, typer.Option(help="Share of documents to keep.")
    ] = SEMDEDUP.target_fraction,
    epsilon: Annotated[
        float | None, typer.Option(help="Fixed threshold 1-eps; overrides the target.")
    ] = None,
    keep: Annotated[
        str, typer.Option(help="hard (farthest from centroid kept), easy or random.")
    ] = SEMDEDUP.keep,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """SemDeDup: drop documents too similar to another in the same cluster."""
    from curation.device import resolve as resolve_device
    from curation.selectors.semdedup import SemDeDupConfig
    from curation.stages import semdedup_stage

    try:
        config = SemDeDupConfig(epsilon=epsilon, target_fraction=target_fraction, keep=keep)
        hardware = resolve_device(device)
        with (
            _engine(engine, ray_address) as runner,
            _permit(out, overwrite),
            console.status("pairwise similarities inside clusters"),
        ):
            report = semdedup_stage(documents, embeddings, clusters, out, config, hardware, engine=runner)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    print_stage(report)
    console.print(f"epsilon {report.details['epsilon']}, kept fraction {report.details['kept_fraction']}")


@app.command("select")
def select_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset.")],
    clusters: Annotated[str, typer.Option(help="Its clusters (from `curation cluster`).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Writes OUT/decisions.parquet and OUT/documents/.")],
    budget: Annotated[str, typer.Option(help=f"{BUDGET_FORMS}.")],
    split: Annotated[str, typer.Option(help="proportional (paper) or even (its code).")] = KMQ.split,
    rounds: Annotated[
        int, typer.Option(help="N rounds of budget/N (paper: 3); each --refine-from draws the next.")
    ] = KMQ.rounds,
    holdout: Annotated[
        int, typer.Option(help="With rounds > 1: documents per cluster held out to score clusters.")
    ] = KMQ.holdout,
    seed: Annotated[int, typer.Option()] = KMQ.seed,
    refine_from: Annotated[
        str | None, typer.Option(help="An earlier select output: draw the next round from what it left.")
    ] = None,
    scores: Annotated[
        Path | None, typer.Option(help="cluster_scores.json from `train --clusters`, for --refine-from.")
    ] = None,
    quality: Annotated[
        str | None,
        typer.Option(
            help="Draw by exp(quality) inside clusters: a Parquet table PATH (id, quality) or PATH:COLUMN "
            "(e.g. quality/scores.parquet:classifier; PATH:-COLUMN when lower is better)."
        ),
    ] = None,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """kMQ diversity selection: a budget split across clusters, sampled inside each
    (by exp(quality) with --quality, else uniformly).
    With --refine-from and --scores, the next round weighs clusters by softmax(score)."""
    from curation.selectors.diversity import KMQConfig
    from curation.stages import clusters_for, select_stage
    from curation.storage import Dataset
    from curation.train.clusters import read_scores

    try:
        rows = Dataset.open(documents).rows
        asked = Budget.parse(budget)
        config = KMQConfig(
            budget=asked.amount(rows), unit=asked.unit, split=split, rounds=rounds, holdout=holdout, seed=seed
        )
        by_cluster = None
        if (refine_from is None) != (scores is None):
            raise CurationError("--refine-from and --scores go together")
        if scores is not None:
            ids = Dataset.open(documents).read_table(["id"]).column("id")
            by_cluster = read_scores(scores, int(clusters_for(ids, clusters).max()) + 1)
        with _engine(engine, ray_address) as runner, _permit(out, overwrite):
            report = select_stage(
                documents, clusters, out, config, refine_from, by_cluster, quality, engine=runner
            )
    except (CurationError, ValueError) as exc:
        _fail(exc)
    print_stage(report)
    console.print(f"clusters hit: {report.details['clusters_hit']} of {report.details['clusters']}")
    done, total = report.details["round"], report.details["rounds"]
    if done < total:
        console.print(
            f"round {done} of {total}: train on it with `train --score-clusters {out}`, then "
            f"`select --refine-from {out} --scores RUN/cluster_scores.json` draws round {done + 1}"
        )


@app.command("quality")
def quality_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset (e.g. from `curation dedup`).")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Writes OUT/scores.parquet (+ decisions.parquet, documents/).")
    ],
    rules: Annotated[
        list[str] | None,
        typer.Option(
            help="SOURCE=RULES: prose, code, none, or groups from gopher_quality,gopher_repetition,c4 "
            "joined by commas; a bare RULES covers the other sources (default: prose, and code for "
            "a source named code)."
        ),
    ] = None,
    filter_rules: Annotated[
        bool, typer.Option("--filter/--no-filter", help="Drop documents that fail their rules.")
    ] = True,
    reference: Annotated[
        str | None, typer.Option(help="Reference documents (folder, file or dataset): trains the classifier.")
    ] = None,
    classifier_min: Annotated[
        float | None, typer.Option(help="Drop documents the classifier scores below this P(reference).")
    ] = None,
    perplexity: Annotated[bool, typer.Option(help="Score perplexity under a small reference model.")] = False,
    band: Annotated[
        str | None, typer.Option(help="Keep a perplexity band per source: low, middle or high[:FRACTION].")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps of the reference model.")] = PERPLEXITY.steps,
    seed: Annotated[int, typer.Option()] = PERPLEXITY.seed,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (the reference model).")] = "auto",
    engine: EngineName = "local",
    ray_address: RayAddress = None,
) -> None:
    """Quality signals: Gopher and C4 rules per source, a fastText classifier against
    --reference (DCLM), perplexity under a small reference model (Ankner et al.)."""
    from curation.device import resolve as resolve_device
    from curation.selectors.quality import ClassifierConfig, PerplexityConfig, QualityConfig
    from curation.stages import quality_stage
    from curation.storage import Dataset

    try:
        if classifier_min is not None and reference is None:
            raise CurationError("--classifier-min needs --reference")
        kind, _, fraction = (band or "").partition(":")
        scorer = None
        if perplexity or band:
            share = float(fraction or 0.5)
            scorer = PerplexityConfig(steps=steps, band=kind or None, fraction=share, seed=seed)
        config = QualityConfig(
            rules=QualityConfig.parse_rules(rules or []),
            filter=filter_rules,
            classifier=ClassifierConfig(min_score=classifier_min, seed=seed) if reference else None,
            perplexity=scorer,
        )
        total = Dataset.open(documents).rows
        hardware = resolve_device(device)
        with _engine(engine, ray_address) as runner, stage_bar(console, total) as progress:
            report = quality_stage(documents, out, config, reference, hardware, progress, engine=runner)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    print_quality(report)


def print_quality(report) -> None:
    """The stage table, what each rule would remove, score deciles per source, plots."""
    print_stage(report)
    failed = report.details["rules_failed"]
    if failed and report.dropped_by_reason.keys().isdisjoint(failed):
        counts = ", ".join(f"{k} {n:,}" for k, n in failed.items())
        console.print(f"failed rules (recorded, not dropped): {counts}")
    for name, by_source in report.details["score_summary"].items():
        table = Table(title=f"{name} (p10 / p50 / p90)")
        for column in ("source", "documents", "p10", "p50", "p90"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for source, s in by_source.items():
            table.add_row(source, f"{s['n']:,}", f"{s['p10']:.3f}", f"{s['p50']:.3f}", f"{s['p90']:.3f}")
        console.print(table)
    console.print(f"scores: {report.details['scores']}")
    for path in report.details["plots"]:
        console.print(f"plot: {path}")


def subset_config(
    budget: str, temperature: float, schedule: str, seq_len: int, vocab_size: int, seed: int, unit: str
):
    """The SubsetConfig the `subset` command builds from its options (bench/subset.py times it)."""
    from curation.selectors.mixture import MixtureConfig
    from curation.storage.shards import ShardConfig
    from curation.storage.tokenizer import TokenizerConfig
    from curation.subset import SubsetConfig

    return SubsetConfig(
        budget=Budget.parse(budget),
        mixture=MixtureConfig(schedule=schedule, temperature=temperature, unit=unit),
        seed=seed,
        shards=ShardConfig(seq_len=seq_len),
        tokenizer=TokenizerConfig(vocab_size=vocab_size),
    )


@app.command("subset")
def subset_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset.")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Writes shards/, text/, tokenizer.json, subset.json.")
    ],
    budget: Annotated[str, typer.Option(help=f"{BUDGET_FORMS}.")],
    selection: Annotated[
        list[str] | None, typer.Option(help="Decision tables; keep rows where kept is true.")
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Source temperature T (p ~ n^(1/T)).")
    ] = MIXTURE.temperature,
    schedule: Annotated[
        str, typer.Option(help="cooldown (T then 1 at half) or constant.")
    ] = MIXTURE.schedule,
    tokenizer: Annotated[str | None, typer.Option(help="A tokenizer.json; default: train one.")] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per packed sequence.")] = SHARDS.seq_len,
    vocab_size: Annotated[
        int, typer.Option(help="Vocabulary of a trained tokenizer.")
    ] = TOKENIZER.vocab_size,
    seed: Annotated[int, typer.Option(help="Which documents inside each source.")] = SUBSET.seed,
    unit: Annotated[
        str, typer.Option(help="Source sizes n_i in tokens (shares of tokens) or documents.")
    ] = MIXTURE.unit,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """Materialize a dataset subset: select under a budget and a mixture, write its shards."""
    from curation.subset import materialize_subset

    try:
        config = subset_config(budget, temperature, schedule, seq_len, vocab_size, seed, unit)
        with (
            _engine(engine, ray_address) as runner,
            _permit(out, overwrite),
            console.status("selecting, tokenising and packing"),
        ):
            report = materialize_subset(documents, out, config, selection or (), tokenizer, engine=runner)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    print_subset(report)


@app.command("shards")
def shards_command(
    documents: Annotated[str, typer.Argument(help="A documents dataset.")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Writes shards/, text/, tokenizer.json, subset.json.")
    ],
    tokenizer: Annotated[str | None, typer.Option(help="A tokenizer.json; default: train one.")] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per packed sequence.")] = SHARDS.seq_len,
    vocab_size: Annotated[
        int, typer.Option(help="Vocabulary of a trained tokenizer.")
    ] = TOKENIZER.vocab_size,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
    overwrite: Overwrite = False,
) -> None:
    """Tokenise and pack every document into per-source shards."""
    from curation.subset import materialize_subset

    try:
        config = subset_config("fraction=1", 1.0, "constant", seq_len, vocab_size, 0, "documents")
        with (
            _engine(engine, ray_address) as runner,
            _permit(out, overwrite),
            console.status("tokenising and packing"),
        ):
            report = materialize_subset(documents, out, config, (), tokenizer, engine=runner)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    print_subset(report)


def print_subset(report) -> None:
    table = Table(title="subset", show_header=False)
    table.add_row("documents in", f"{report.documents_in:,}")
    table.add_row("candidates", f"{report.candidates:,}")
    table.add_row("selected", f"{report.selected:,}")
    table.add_row("tokens", f"{report.tokens:,}")
    table.add_row("budget", f"{report.budget_achieved:,} of {report.budget_asked:,} {report.budget_unit}")
    for source, n in report.per_source.items():
        table.add_row(f"  {source}", f"{n:,} docs, {report.per_source_tokens.get(source, 0):,} tokens")
    table.add_row("output", str(report.output))
    console.print(table)


@app.command("train")
def train_command(
    shards: Annotated[str, typer.Argument(help="A shard set (from `curation subset` or `shards`).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Checkpoints, metrics.jsonl, loss_curves.png.")],
    config: Annotated[Path | None, typer.Option(help="TOML or JSON training settings.")] = None,
    steps: Annotated[int | None, typer.Option(help="Override the step count.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = True,
    score_clusters: Annotated[
        str | None,
        typer.Option(help="A kMQ select output: score its clusters; writes cluster_scores.json."),
    ] = None,
    score_on: Annotated[
        str, typer.Option(help="held_out (its scoring split) or selected (the reference's choice).")
    ] = SCORING.on,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start over, removing only what a curation run wrote in OUT.")
    ] = False,
) -> None:
    """Train the bundled GPT on shards, with the mixture, RS2 and CoLM from the config."""
    from curation.train.clusters import ClusterScoring
    from curation.train.config import load_train_config
    from curation.train.run import train_on_shards, with_rs2_steps

    try:
        settings = with_rs2_steps(load_train_config(config, steps=steps), shards)
        scoring = ClusterScoring(score_clusters, on=score_on) if score_clusters else None
        with _permit(out, overwrite), loss_bar(console, settings.steps) as on_step:
            result = train_on_shards(
                shards, settings, out, device, resume and not overwrite, on_step, scoring
            )
    except (CurationError, ValueError) as exc:
        _fail(exc)
    if result.resumed_from == result.steps:
        console.print(
            f"{out}: found a finished run of {result.steps:,} steps with these settings; nothing to train"
        )
    elif result.resumed_from:
        console.print(f"{out}: resumed a run of these settings from step {result.resumed_from:,}")
    table = Table(title="train", show_header=False)
    table.add_row("steps", f"{result.steps:,}")
    table.add_row("tokens", f"{result.tokens:,}")
    table.add_row("final train loss", f"{result.final_loss:.4f}")
    if result.eval:
        table.add_row("validation loss", f"{result.eval['overall']:.4f}")
        for source, loss in result.eval["by_source"].items():
            table.add_row(f"  {source}", f"{loss:.4f}")
    for source, rounds in (result.rs2_rounds or {}).items():
        table.add_row(f"  RS2 rounds, {source}", f"{rounds:.2f}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    table.add_row("metrics", result.metrics_path)
    console.print(table)


@app.command("demo")
def demo_command(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path("curation-demo"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    steps: Annotated[int | None, typer.Option(help="Training steps (default 150).")] = None,
    engine: EngineName = "local",
    ray_address: RayAddress = None,
) -> None:
    """Run the whole pipeline on the bundled default corpus and print a summary."""
    from curation.demo import run_demo

    try:
        run_demo(workdir, console, device, steps, engine, ray_address)
    except (CurationError, ValueError) as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - entry point
    sys.exit(app())
