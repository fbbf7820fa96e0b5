"""Embedding, clustering, semantic dedup and diversity assets: thin wrappers over the library."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import dataclasses

import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, asset
from pydantic import Field

from curation.embeddings import (
    EmbeddingStore,
    KMeansConfig,
    auto_k,
    cluster_embeddings,
    embed_dataset,
    read_clusters,
)
from curation.pipelines.assets import OWNERS, stage_report
from curation.pipelines.config import (
    AUTOMATE,
    BudgetConfig,
    Encoder,
    KeepRule,
    ScoreOn,
    Split,
    StageConfig,
    budget_field,
    check_run_settings,
    library_field,
    stage_config,
    to_budget,
)
from curation.pipelines.quality import quality
from curation.pipelines.report import Report
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot
from curation.plots import cluster_map_png, cluster_sizes_png
from curation.presets import DEMO
from curation.selectors.budget import Budget
from curation.selectors.diversity import KMQConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import (
    QUALITY_SCORES,
    default_k,
    encoder_label,
    make_encoder,
    select_stage,
    semdedup_stage,
)
from curation.storage import Dataset
from curation.train.refine import ProbeConfig, iterative_kmq

MAP_POINTS = 3000  # points drawn on the cluster map


SEMANTIC = dict(
    group_name="semantic", owners=OWNERS, tags={"stage": "semantic"}, automation_condition=AUTOMATE
)


@stage_config("embeddings")
class EmbeddingsConfig(StageConfig):
    """Which encoder embeds the deduplicated documents."""

    encoder: Encoder = Field(
        default=Encoder.auto,
        description="auto (MiniLM on a GPU, the static encoder distilled from it on a CPU), "
        "static, minilm or hashed (n-grams: lexical, no model).",
    )
    batch_size: int = library_field(embed_dataset, "batch_size", "Texts sent to the encoder at once.")
    max_tokens: int = Field(default=0, description="Tokens read per document; 0: the default (256).")
    max_chars: int = Field(default=0, description="Characters read per document; 0: the encoder's default.")

    def settings(self) -> None:
        for name in ("batch_size", "max_tokens", "max_chars"):
            floor = 1 if name == "batch_size" else 0
            if getattr(self, name) < floor:
                raise ValueError(f"{name} must be >= {floor}, got {getattr(self, name)}")


@asset(
    deps=[quality],
    kinds={"parquet", "pytorch"},
    description="One vector per document kept by quality (GPU when the device resource has one).",
    **SEMANTIC,
)
def embeddings(
    context: AssetExecutionContext,
    config: EmbeddingsConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    check_run_settings(context)
    window = {"max_tokens": config.max_tokens or None, "max_chars": config.max_chars or None}
    hardware = device.resolve()
    encoder = make_encoder(
        config.encoder.value, hardware, notify=context.log.info, engine=engine.get(), **window
    )
    context.log.info(f"encoder {encoder_label(encoder)} on {hardware.describe()}")

    def progress(done: int, total: int) -> None:
        context.log.info(f"embeddings: {done}/{total} documents")

    report = embed_dataset(
        str(storage.location("quality", "documents")),
        str(storage.location("embeddings")),
        encoder,
        batch_size=config.batch_size,
        progress=progress,
        engine=engine.get(),
    )
    page = Report("embeddings", f"`{report.rows:,}` vectors of {report.dim} dimensions.")
    page.path("path", report.path)
    page.value("engine", engine.describe())
    for key in ("rows", "dim", "encoded", "parts", "parts_reused"):
        page.value(key, getattr(report, key))
    page.value("docs_per_second", round(report.docs_per_second, 1))
    page.value("seconds", round(report.seconds, 3))
    page.counts("encoder", report.encoder, "setting", "value")
    return page.result()


@stage_config("clusters")
class ClustersConfig(StageConfig):
    """k-means over the embeddings. Defaults follow SemDeDup (spherical, 100 iterations)."""

    k: int = Field(default=0, description="Clusters; 0 picks about sqrt(documents), between 2 and 4096.")
    auto_k: bool = Field(default=False, description="Choose k by silhouette over powers of two (ignores k).")
    niter: int = library_field(KMeansConfig, "niter", "Lloyd iterations per run.")
    nredo: int = library_field(KMeansConfig, "nredo", "Runs from different seeds; the best objective wins.")
    spherical: bool = library_field(KMeansConfig, "spherical", "Unit centroids and cosine assignment.")
    seed: int = library_field(KMeansConfig, "seed", "Seeds the training sample and the initialisation.")

    def settings(self) -> KMeansConfig:
        if self.k < 0:
            raise ValueError(f"k must be >= 0 (0: about sqrt(documents)), got {self.k}")
        return KMeansConfig(niter=self.niter, nredo=self.nredo, spherical=self.spherical, seed=self.seed)


@asset(
    deps=[embeddings],
    kinds={"parquet", "faiss"},
    description="FAISS k-means clusters of the embeddings (GPU FAISS when the device allows).",
    **SEMANTIC,
)
def clusters(
    context: AssetExecutionContext,
    config: ClustersConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    check_run_settings(context)
    store = EmbeddingStore.open(storage.location("embeddings"))
    settings = config.settings()
    k = config.k or default_k(store.rows)
    if config.auto_k:
        k, silhouettes = auto_k(store.dataset.folder, settings, device.resolve())
        context.log.info(f"clusters: k = {k} by silhouette {silhouettes}")
    out = storage.location("clusters")

    def progress(done: int, total: int) -> None:
        context.log.info(f"clusters: assigned {done}/{total}")

    report = cluster_embeddings(
        str(store.dataset.folder), str(out), k, settings, device.resolve(), progress, engine=engine.get()
    )
    sample = np.sort(np.random.default_rng(config.seed).permutation(store.rows)[:MAP_POINTS])
    assigned = read_clusters(out).cluster[sample]
    sizes = list(report.sizes)
    page = Report("clusters", f"`{report.rows:,}` documents in {report.k} clusters.")
    page.path("path", report.path)
    page.value("engine", engine.describe())
    for key in ("rows", "k", "train_points", "empty_clusters"):
        page.value(key, getattr(report, key))
    page.value("largest_cluster", max(sizes, default=0))
    page.value("smallest_cluster", min(sizes, default=0))
    page.value("objective", float(report.objective))
    page.value("seconds", round(report.seconds, 3))
    page.plot(cluster_sizes_png(sizes), "cluster sizes")
    page.plot(cluster_map_png(store.take(sample), assigned), "cluster map (PCA)")
    return page.result()


@stage_config("semantic_dedup")
class SemanticDedupConfig(StageConfig):
    """SemDeDup inside each cluster."""

    target_fraction: float = library_field(
        SemDeDupConfig,
        "target_fraction",
        "Share of documents to keep when epsilon is not set (the paper's C4 setting).",
    )
    epsilon: float | None = library_field(
        SemDeDupConfig,
        "epsilon",
        "Duplicate when cosine similarity > 1 - epsilon; overrides target_fraction.",
    )
    keep: KeepRule = library_field(
        SemDeDupConfig,
        "keep",
        "Which copy survives: hard (farthest from the centroid), easy or random.",
        KeepRule,
    )
    seed: int = library_field(SemDeDupConfig, "seed", "For keep=random.")

    def settings(self) -> SemDeDupConfig:
        return SemDeDupConfig(
            epsilon=self.epsilon, target_fraction=self.target_fraction, keep=self.keep.value, seed=self.seed
        )


@asset(
    deps=[quality, embeddings, clusters],
    kinds={"parquet", "pytorch"},
    description="SemDeDup: drop documents whose embedding nearly repeats another in its cluster.",
    **SEMANTIC,
)
def semantic_dedup(
    context: AssetExecutionContext,
    config: SemanticDedupConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    check_run_settings(context)
    report = semdedup_stage(
        str(storage.location("quality", "documents")),
        str(storage.location("embeddings")),
        str(storage.location("clusters")),
        str(storage.location("semantic_dedup")),
        config.settings(),
        device.resolve(),
        engine=engine.get(),
    )
    context.log.info(f"semantic_dedup: epsilon {report.details['epsilon']}, kept {report.kept}")
    page = stage_report("semantic_dedup", report)
    page.value("engine", engine.describe())
    page.value("epsilon", report.details["epsilon"])
    page.value("kept_fraction", report.details["kept_fraction"])
    return page.result()


@stage_config("diverse_subset")
class DiverseSubsetConfig(StageConfig):
    """k-means quality (kMQ) diversity selection under a budget."""

    budget: BudgetConfig = budget_field(
        Budget(fraction=DEMO.select_fraction),
        "How much kMQ selects from semantic_dedup's documents (tokens estimated as characters / 4).",
    )
    split: Split = library_field(
        KMQConfig, "split", "Budget per cluster: proportional (the paper) or even (its code).", Split
    )
    rounds: int = library_field(
        KMQConfig,
        "rounds",
        "Rounds of budget/N (the paper's 3); between rounds a probe run scores the clusters.",
    )
    holdout: int = library_field(KMQConfig, "holdout", "Documents per cluster held out to score clusters.")
    probe_steps: int = library_field(ProbeConfig, "train.steps", "Training steps of each probe run.")
    score_on: ScoreOn = library_field(
        ProbeConfig, "score_on", "held_out, or selected (the reference code's).", ScoreOn
    )
    own_clusters: bool = Field(
        default=False,
        description="Cluster for kMQ with the paper's k-means (300 iterations, best of 5, k by "
        "silhouette) instead of reusing the clusters asset (SemDeDup's settings).",
    )
    temperature: float = library_field(KMQConfig, "temperature", "Softmax temperature over cluster scores.")
    seed: int = library_field(KMQConfig, "seed", "All randomness comes from it.")
    quality: str = Field(
        default="",
        description=(
            "Draw by exp(score) inside clusters: a column of the quality asset's scores.parquet (e.g. "
            "classifier; -perplexity when lower is better). Empty: uniform."
        ),
    )

    def selection(self, rows: int) -> KMQConfig:
        """kMQ's settings for an input of `rows` documents."""
        budget = to_budget(self.budget)
        return KMQConfig(
            budget=budget.amount(rows),
            unit=budget.unit,
            split=self.split.value,
            rounds=self.rounds,
            holdout=self.holdout,
            temperature=self.temperature,
            seed=self.seed,
        )

    def probe(self) -> ProbeConfig:
        train = ProbeConfig().train
        steps = dataclasses.replace(train, steps=self.probe_steps, eval_every=self.probe_steps)
        return ProbeConfig(train=steps, score_on=self.score_on.value)

    def settings(self) -> tuple[KMQConfig, ProbeConfig]:
        return self.selection(rows=1), self.probe()


@asset(
    group_name="selection",
    deps=[semantic_dedup, clusters, quality],
    kinds={"parquet", "pytorch"},
    owners=OWNERS,
    tags={"stage": "selection"},
    automation_condition=AUTOMATE,
    description="kMQ: a diverse subset, spread over the clusters, under a budget.",
)
def diverse_subset(
    context: AssetExecutionContext,
    config: DiverseSubsetConfig,
    storage: StorageRoot,
    engine: ExecutionEngine,
    device: ComputeDevice,
) -> MaterializeResult:
    check_run_settings(context)
    documents_in = storage.location("semantic_dedup", "documents")
    rows = Dataset.open(documents_in).rows
    settings = config.selection(rows)
    context.log.info(f"diverse_subset: budget {settings.budget} {settings.unit} of {rows} documents")
    clusters_at = str(storage.location("clusters"))
    if config.own_clusters:
        clusters_at = _kmq_clusters(context, storage, device, config.seed, engine)
    out, runner = str(storage.location("diverse_subset")), engine.get()
    quality = f"{storage.location('quality', QUALITY_SCORES)}:{config.quality}" if config.quality else None
    if config.rounds == 1:
        report = select_stage(str(documents_in), clusters_at, out, settings, quality=quality, engine=runner)
    else:
        report = iterative_kmq(
            str(documents_in), clusters_at, out, settings, config.probe(),
            device.resolve(), log=context.log.info, quality=quality, engine=runner,
        )  # fmt: skip
    page = stage_report("diverse_subset", report)
    page.value("engine", engine.describe())
    page.value("budget", settings.budget)
    page.value("unit", settings.unit)
    page.value("clusters_hit", report.details["clusters_hit"])
    page.value("clusters", report.details["clusters"])
    page.value("rounds", report.details["round"])
    page.value("held_out_for_scoring", report.details["held_out"])
    return page.result()


def _kmq_clusters(
    context, storage: StorageRoot, device: ComputeDevice, seed: int, engine: ExecutionEngine
) -> str:
    """k-means with kMQ's settings over the same embeddings, into its own folder."""
    embeddings_at = storage.location("embeddings")
    settings = KMeansConfig.kmq(seed=seed)
    k, silhouettes = auto_k(embeddings_at, settings, device.resolve())
    context.log.info(f"diverse_subset: kMQ clusters, k = {k} by silhouette {silhouettes}")
    out = storage.location("kmq_clusters")
    cluster_embeddings(str(embeddings_at), str(out), k, settings, device.resolve(), engine=engine.get())
    return str(out)
