"""`curation demo`: the whole pipeline on the bundled corpus, then a summary.

raw files -> documents -> exact + fuzzy dedup -> quality (Gopher and C4
rules, a fastText classifier against the language reference) -> embeddings ->
clusters -> semantic dedup -> kMQ diversity drawn by the classifier's score ->
Cooldown mixture shards -> a short training run with RS2 subsets, evaluated
per source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console
from rich.table import Table

from curation import default_corpus
from curation.device import resolve as resolve_device
from curation.embeddings import EmbeddingStore, cluster_embeddings, embed_dataset
from curation.engine import Engine, engine_for
from curation.plots import cluster_sizes_png, weights_over_steps_png
from curation.presets import DEMO
from curation.progress import count_bar, file_bar, loss_bar, stage_bar
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.selectors.diversity import KMQConfig
from curation.selectors.mixture import Mixture
from curation.selectors.quality import ClassifierConfig, QualityConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import (
    QUALITY_SCORES,
    StageReport,
    dedup_stage,
    default_k,
    encoder_label,
    make_encoder,
    quality_stage,
    select_stage,
    semdedup_stage,
)
from curation.storage import IngestReport, ingest
from curation.subset import SubsetConfig, materialize_subset
from curation.train.loop import TrainConfig
from curation.train.run import train_on_shards

QUALITY_COLUMN = "classifier"  # kMQ draws by exp(P(reference-like)) inside clusters
KEEP_SEMANTIC = 0.8  # SemDeDup's target kept fraction (the paper's C4 setting)
SELECT_FRACTION = DEMO.select_fraction  # kMQ budget, as a share of what semantic dedup kept
TRAIN = DEMO.train


def run_demo(
    workdir: Path,
    console: Console,
    device: str = "auto",
    steps: int | None = None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
) -> dict:
    """The whole pipeline in `workdir`; every stage runs on one engine, opened here."""
    hardware = resolve_device(device)
    with engine_for(engine, ray_address) as runner:
        console.print(
            f"[bold]curation demo[/] in {workdir}/ on {hardware.describe()}, engine {runner.describe()}"
        )
        return _run(Path(workdir), console, hardware, steps, runner)


def _run(work: Path, console: Console, hardware, steps: int | None, engine: Engine) -> dict:
    with console.status("building the default corpus from the Python standard library"):
        inputs = default_corpus.build(work / "raw")
    with file_bar(console, "ingest") as on_file:
        ingested = ingest(inputs, str(work / "documents"), on_file=on_file)
    with stage_bar(console, ingested.documents) as progress:
        dedup = dedup_stage(
            str(work / "documents"), str(work / "dedup"), DedupConfig(), progress, engine=engine
        )
    # The language reference is the classifier's "high quality" set (DCLM's recipe).
    reference = next(i.path for i in inputs if i.source == "reference")
    with stage_bar(console, dedup.kept) as progress:
        quality = quality_stage(
            str(work / "dedup" / "documents"), str(work / "quality"),
            QualityConfig(classifier=ClassifierConfig()), reference, hardware, progress, engine=engine,
        )  # fmt: skip
    filtered = str(work / "quality" / "documents")
    encoder = make_encoder("auto", hardware, notify=console.print, engine=engine)  # static on a CPU
    with count_bar(console, f"embed ({encoder_label(encoder)})") as progress:
        embed_dataset(filtered, str(work / "embeddings"), encoder, progress=progress, engine=engine)
    rows = EmbeddingStore.open(work / "embeddings").rows
    clusters = cluster_embeddings(
        str(work / "embeddings"), str(work / "clusters"), default_k(rows), device=hardware, engine=engine
    )
    semantic = semdedup_stage(
        filtered, str(work / "embeddings"), str(work / "clusters"), str(work / "semdedup"),
        SemDeDupConfig(target_fraction=KEEP_SEMANTIC), hardware, engine=engine,
    )  # fmt: skip
    budget = Budget(fraction=SELECT_FRACTION).amount(semantic.kept)
    diverse = select_stage(
        str(work / "semdedup" / "documents"), str(work / "clusters"), str(work / "select"),
        KMQConfig(budget=budget, rounds=1),  # plain kMQ: the demo trains once
        quality=f"{work / 'quality' / QUALITY_SCORES}:{QUALITY_COLUMN}", engine=engine,
    )  # fmt: skip
    config = dataclasses.replace(TRAIN, steps=steps or TRAIN.steps)
    with console.status("training a tokenizer, packing shards"):
        subset = materialize_subset(
            str(work / "select" / "documents"), str(work / "shards"),
            SubsetConfig(budget=DEMO.shards_budget, mixture=config.mixture,
                         shards=DEMO.shards, tokenizer=DEMO.tokenizer),
            engine=engine,
        )  # fmt: skip
    with loss_bar(console, config.steps) as on_step:
        trained = train_on_shards(str(work / "shards"), config, work / "train", hardware, False, on_step)
    plots = _plots(work, clusters.sizes, subset.per_source, config)
    plots += [Path(p) for p in quality.details["plots"]]
    stages = [dedup, quality, semantic, diverse]
    _print_summary(console, ingested, stages, clusters, subset, trained, work, plots)
    console.print(f"engine: {engine.describe()}, one for every stage")
    return {
        "engine": engine.describe(),
        "ingest": ingested.to_dict(),
        **{s.stage: s.to_dict() for s in stages},
        "subset": subset.to_dict(),
        "train": dataclasses.asdict(trained),
    }


def _plots(work: Path, sizes, per_source: dict[str, int], config: TrainConfig) -> list[Path]:
    plots = work / "plots"
    plots.mkdir(exist_ok=True)
    (plots / "cluster_sizes.png").write_bytes(cluster_sizes_png(list(sizes)))
    mixture = Mixture(config.mixture).fit({s: n for s, n in per_source.items() if n}, config.steps)
    (plots / "mixture_weights.png").write_bytes(weights_over_steps_png(*mixture.weights_over_steps()))
    return [plots / "cluster_sizes.png", plots / "mixture_weights.png", work / "train" / "loss_curves.png"]


def _print_summary(console, ingested: IngestReport, stages: list[StageReport], clusters, subset, trained,
                   work: Path, plots: list[Path]) -> None:  # fmt: skip
    table = Table(title="summary")
    for column, justify in (("stage", "left"), ("in", "right"), ("kept", "right"), ("dropped", "left")):
        table.add_column(column, justify=justify)
    table.add_row(
        "ingest", f"{ingested.records_read:,}", f"{ingested.documents:,}", _reasons(ingested.by_reason)
    )
    for stage in stages:
        table.add_row(stage.stage, f"{stage.docs_in:,}", f"{stage.kept:,}", _reasons(stage.dropped_by_reason))
    console.print(table)
    for name, by_source in stages[1].details["score_summary"].items():
        medians = ", ".join(f"{s} {v['p50']:.2f}" for s, v in by_source.items())
        console.print(f"quality {name}, median by source: {medians} (kMQ draws by exp({QUALITY_COLUMN}))")
    console.print(
        f"clusters: {clusters.k} (k-means on {clusters.rows:,} embeddings); "
        f"shards: {subset.selected:,} documents, {subset.tokens:,} tokens"
    )
    shares = ", ".join(f"{s} {n:,}" for s, n in subset.per_source.items())
    console.print(f"documents per source in the shards: {shares}")
    if trained.eval:
        by_source = ", ".join(f"{s} {v:.3f}" for s, v in trained.eval["by_source"].items())
        console.print(
            f"training: {trained.steps} steps, {trained.tokens:,} tokens, "
            f"validation loss {trained.eval['overall']:.3f} ({by_source})"
        )
    dropped = sum(sum(s.dropped_by_reason.values()) for s in stages)
    balanced = ingested.records_read == ingested.quarantined + dropped + stages[-1].kept
    console.print(
        f"accounting: {ingested.records_read:,} records read = {ingested.quarantined:,} quarantined "
        f"+ {dropped:,} dropped + {stages[-1].kept:,} kept: {'ok' if balanced else 'MISMATCH'}"
    )
    console.print(f"outputs: {work}/  (shards: {work / 'shards'}, model: {trained.checkpoint})")
    console.print("plots: " + ", ".join(str(p) for p in plots))


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {reason}" for reason, n in counts.items()) or "-"
