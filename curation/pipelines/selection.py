"""Embedding, clustering, semantic dedup and diversity assets: thin wrappers over the library."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import dataclasses

import numpy as np
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from curation.embeddings import (
    EmbeddingStore,
    KMeansConfig,
    auto_k,
    cluster_embeddings,
    embed_dataset,
    read_clusters,
)
from curation.errors import CurationError
from curation.pipelines.assets import plot, stage_metadata
from curation.pipelines.quality import quality
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot
from curation.plots import cluster_map_png, cluster_sizes_png
from curation.selectors.diversity import KMQConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import QUALITY_SCORES, default_k, make_encoder, select_stage, semdedup_stage
from curation.storage import Dataset
from curation.train.refine import ProbeConfig, iterative_kmq

MAP_POINTS = 3000  # points drawn on the cluster map


class EmbeddingsConfig(Config):
    """Which encoder embeds the deduplicated documents."""

    encoder: str = Field(
        default="auto",
        description="auto (MiniLM on a GPU, the static encoder distilled from it on a CPU), "
        "static, minilm or hashed (n-grams: lexical, no model).",
    )
    batch_size: int = Field(default=1024, description="Texts sent to the encoder at once.")
    max_tokens: int = Field(default=0, description="Tokens read per document; 0: the default (256).")
    max_chars: int = Field(default=0, description="Characters read per document; 0: the encoder's default.")


@asset(
    group_name="embeddings",
    deps=[quality],
    description="One vector per document kept by quality (GPU when the device resource has one).",
)
def embeddings(
    context: AssetExecutionContext,
    config: EmbeddingsConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    window = {"max_tokens": config.max_tokens or None, "max_chars": config.max_chars or None}
    encoder = make_encoder(config.encoder, device.resolve(), notify=context.log.info, **window)
    context.log.info(f"encoder {type(encoder).__name__} on {device.resolve().describe()}")

    def progress(done: int, total: int) -> None:
        context.log.info(f"embeddings: {done}/{total} documents")

    report = engine.run(
        embed_dataset,
        str(storage.location("quality", "documents")),
        str(storage.location("embeddings")),
        encoder,
        batch_size=config.batch_size,
        progress=progress,
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(report.path),
            "rows": report.rows,
            "dim": report.dim,
            "encoded": report.encoded,
            "parts": report.parts,
            "parts_reused": report.parts_reused,
            "encoder": MetadataValue.json(report.encoder),
            "docs_per_second": round(report.docs_per_second, 1),
            "seconds": round(report.seconds, 3),
        }
    )


class ClustersConfig(Config):
    """k-means over the embeddings. Defaults follow SemDeDup (spherical, 100 iterations)."""

    k: int = Field(default=0, description="Clusters; 0 picks about sqrt(documents), between 2 and 4096.")
    auto_k: bool = Field(default=False, description="Choose k by silhouette over powers of two (ignores k).")
    niter: int = Field(default=100, description="Lloyd iterations per run.")
    nredo: int = Field(default=1, description="Runs from different seeds; the best objective wins.")
    spherical: bool = Field(default=True, description="Unit centroids and cosine assignment.")
    seed: int = Field(default=0, description="Seeds the training sample and the initialisation.")


@asset(
    group_name="embeddings",
    deps=[embeddings],
    description="FAISS k-means clusters of the embeddings (GPU FAISS when the device allows).",
)
def clusters(
    context: AssetExecutionContext,
    config: ClustersConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    store = EmbeddingStore.open(storage.location("embeddings"))
    settings = KMeansConfig(
        niter=config.niter, nredo=config.nredo, spherical=config.spherical, seed=config.seed
    )
    k = config.k or default_k(store.rows)
    if config.auto_k:
        k, silhouettes = auto_k(store.dataset.folder, settings, device.resolve())
        context.log.info(f"clusters: k = {k} by silhouette {silhouettes}")
    out = storage.location("clusters")

    def progress(done: int, total: int) -> None:
        context.log.info(f"clusters: assigned {done}/{total}")

    report = engine.run(
        cluster_embeddings, str(store.dataset.folder), str(out), k, settings, device.resolve(), progress
    )
    sample = np.sort(np.random.default_rng(config.seed).permutation(store.rows)[:MAP_POINTS])
    assigned = read_clusters(out).cluster[sample]
    sizes = list(report.sizes)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(report.path),
            "rows": report.rows,
            "k": report.k,
            "train_points": report.train_points,
            "empty_clusters": report.empty_clusters,
            "largest_cluster": max(sizes, default=0),
            "smallest_cluster": min(sizes, default=0),
            "objective": float(report.objective),
            "seconds": round(report.seconds, 3),
            "cluster_sizes_plot": plot(cluster_sizes_png(sizes), "cluster sizes"),
            "cluster_map_plot": plot(cluster_map_png(store.take(sample), assigned), "cluster map (PCA)"),
        }
    )


class SemanticDedupConfig(Config):
    """SemDeDup inside each cluster."""

    target_fraction: float = Field(
        default=0.8,
        description="Share of documents to keep when epsilon is not set (the paper's C4 setting).",
    )
    epsilon: float | None = Field(
        default=None, description="Duplicate when cosine similarity > 1 - epsilon; overrides target_fraction."
    )
    keep: str = Field(
        default="hard", description="Which copy survives: hard (farthest from the centroid), easy or random."
    )
    seed: int = Field(default=0, description="For keep=random.")


@asset(
    group_name="dedup",
    deps=[quality, embeddings, clusters],
    description="SemDeDup: drop documents whose embedding nearly repeats another in its cluster.",
)
def semantic_dedup(
    context: AssetExecutionContext,
    config: SemanticDedupConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    settings = SemDeDupConfig(
        epsilon=config.epsilon, target_fraction=config.target_fraction, keep=config.keep, seed=config.seed
    )
    report = engine.run(
        semdedup_stage,
        str(storage.location("quality", "documents")),
        str(storage.location("embeddings")),
        str(storage.location("clusters")),
        str(storage.location("semantic_dedup")),
        settings,
        device.resolve(),
    )
    context.log.info(f"semantic_dedup: epsilon {report.details['epsilon']}, kept {report.kept}")
    metadata = stage_metadata(report)
    metadata["epsilon"] = report.details["epsilon"]
    metadata["kept_fraction"] = report.details["kept_fraction"]
    return MaterializeResult(metadata=metadata)


class DiverseSubsetConfig(Config):
    """k-means quality (kMQ) diversity selection under a budget."""

    fraction: float = Field(
        default=0.6,
        description="Share of the semantic_dedup documents to keep when budget is 0 (unit documents).",
    )
    budget: int = Field(default=0, description="Budget in `unit`s; 0 uses `fraction` (documents only).")
    unit: str = Field(default="documents", description="documents, or tokens (estimated as chars / 4).")
    split: str = Field(default="proportional", description="Budget per cluster: proportional or even.")
    rounds: int = Field(
        default=3,
        description="Rounds of budget/N (the paper's 3); between rounds a probe run scores the clusters.",
    )
    holdout: int = Field(default=32, description="Documents per cluster held out to score clusters.")
    probe_steps: int = Field(default=100, description="Training steps of each probe run between rounds.")
    score_on: str = Field(default="held_out", description="held_out, or selected (the reference code's).")
    own_clusters: bool = Field(
        default=False,
        description="Cluster for kMQ with the paper's k-means (300 iterations, best of 5, k by "
        "silhouette) instead of reusing the clusters asset (SemDeDup's settings).",
    )
    temperature: float = Field(default=1.0, description="Softmax temperature over cluster scores.")
    seed: int = Field(default=0, description="All randomness comes from it.")
    quality: str = Field(
        default="",
        description=(
            "Draw by exp(score) inside clusters: a column of the quality asset's scores.parquet (e.g. "
            "classifier; -perplexity when lower is better). Empty: uniform."
        ),
    )


@asset(
    group_name="selection",
    deps=[semantic_dedup, clusters, quality],
    description="kMQ: a diverse subset, spread over the clusters, under a budget.",
)
def diverse_subset(
    context: AssetExecutionContext,
    config: DiverseSubsetConfig,
    storage: StorageRoot,
    engine: ExecutionEngine,
    device: ComputeDevice,
) -> MaterializeResult:
    documents_in = storage.location("semantic_dedup", "documents")
    rows = Dataset.open(documents_in).rows
    if config.unit == "tokens" and not config.budget:
        raise CurationError("diverse_subset: with unit tokens, give the budget in tokens (budget > 0)")
    budget = config.budget or max(1, round(config.fraction * rows))
    settings = KMQConfig(
        budget=budget,
        unit=config.unit,
        split=config.split,
        rounds=config.rounds,
        holdout=config.holdout,
        temperature=config.temperature,
        seed=config.seed,
    )
    context.log.info(f"diverse_subset: budget {budget} {config.unit} of {rows} documents")
    clusters_at = str(storage.location("clusters"))
    if config.own_clusters:
        clusters_at = _kmq_clusters(context, storage, device, config.seed)
    out = str(storage.location("diverse_subset"))
    quality = f"{storage.location('quality', QUALITY_SCORES)}:{config.quality}" if config.quality else None
    if config.rounds == 1:
        report = engine.run(select_stage, str(documents_in), clusters_at, out, settings, quality=quality)
    else:
        report = engine.run(
            iterative_kmq, str(documents_in), clusters_at, out, settings, _probe(config),
            device.resolve(), log=context.log.info, quality=quality,
        )  # fmt: skip
    metadata = stage_metadata(report)
    metadata["budget"] = budget
    metadata["unit"] = config.unit
    metadata["clusters_hit"] = report.details["clusters_hit"]
    metadata["clusters"] = report.details["clusters"]
    metadata["rounds"] = report.details["round"]
    metadata["held_out_for_scoring"] = report.details["held_out"]
    return MaterializeResult(metadata=metadata)


def _probe(config: DiverseSubsetConfig) -> ProbeConfig:
    train = ProbeConfig().train
    steps = dataclasses.replace(train, steps=config.probe_steps, eval_every=config.probe_steps)
    return ProbeConfig(train=steps, score_on=config.score_on)


def _kmq_clusters(context, storage: StorageRoot, device: ComputeDevice, seed: int) -> str:
    """k-means with kMQ's settings over the same embeddings, into its own folder."""
    embeddings_at = storage.location("embeddings")
    settings = KMeansConfig.kmq(seed=seed)
    k, silhouettes = auto_k(embeddings_at, settings, device.resolve())
    context.log.info(f"diverse_subset: kMQ clusters, k = {k} by silhouette {silhouettes}")
    out = storage.location("kmq_clusters")
    cluster_embeddings(str(embeddings_at), str(out), k, settings, device.resolve())
    return str(out)
