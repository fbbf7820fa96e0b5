"""The quality asset: heuristic rules, classifier and perplexity scores between
fuzzy dedup and the embeddings; a thin wrapper over `stages.quality_stage`."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from curation.errors import CurationError
from curation.pipelines.assets import fuzzy_dedup, plot, stage_metadata
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot
from curation.plots import bar_png
from curation.selectors.quality import ClassifierConfig, PerplexityConfig, QualityConfig
from curation.stages import QUALITY_SCORES, quality_stage


class QualityStageConfig(Config):
    """Which rules apply to which source, and the optional model scorers."""

    rules: list[str] = Field(
        default_factory=list,
        description=(
            "SOURCE=RULES items (RULES: prose, code, none, or gopher_quality,gopher_repetition,c4); a bare "
            "RULES covers the other sources. Default: prose rules, the code preset for a source named code."
        ),
    )
    reference: str = Field(
        default="",
        description="Reference documents (folder, file or dataset) for the classifier; empty: off.",
    )
    classifier_min: float | None = Field(default=None, description="Drop documents scored below this P.")
    perplexity: bool = Field(default=False, description="Score perplexity under a small reference model.")
    band: str = Field(default="", description="Keep a perplexity band per source: low, middle or high.")
    fraction: float = Field(default=0.5, description="The band's share of each source.")
    perplexity_steps: int = Field(default=200, description="Training steps of the reference model.")
    seed: int = Field(default=0, description="Samples, model initialisation and fastText's seed.")


@asset(
    group_name="dedup",
    deps=[fuzzy_dedup],
    description=(
        "Quality signals per document (scores.parquet): Gopher and C4 rules per source (documents that "
        "fail are dropped), a fastText classifier against a reference set, reference-model perplexity."
    ),
)
def quality(
    context: AssetExecutionContext,
    config: QualityStageConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    if config.classifier_min is not None and not config.reference:
        raise CurationError("quality: classifier_min needs a reference")
    scorer = None
    if config.perplexity or config.band:
        band = config.band or None
        scorer = PerplexityConfig(
            steps=config.perplexity_steps, band=band, fraction=config.fraction, seed=config.seed
        )
    settings = QualityConfig(
        rules=QualityConfig.parse_rules(config.rules),
        classifier=ClassifierConfig(min_score=config.classifier_min, seed=config.seed)
        if config.reference
        else None,
        perplexity=scorer,
    )

    def progress(step: str, done: int) -> None:
        context.log.info(f"quality: {step} {done} documents")

    report = engine.run(
        quality_stage,
        str(storage.location("fuzzy_dedup", "documents")),
        str(storage.location("quality")),
        settings,
        config.reference or None,
        device.resolve(),
        progress,
    )
    metadata = stage_metadata(report)
    metadata["scores"] = MetadataValue.path(str(storage.location("quality", QUALITY_SCORES)))
    metadata["rules_failed"] = MetadataValue.json(report.details["rules_failed"])
    metadata["score_summary"] = MetadataValue.json(report.details["score_summary"])
    if report.details["rules_failed"]:
        chart = bar_png(report.details["rules_failed"], "documents failing each rule", "documents")
        metadata["rules_plot"] = plot(chart, "rules failed")
    for path in report.details["plots"]:
        with open(path, "rb") as handle:
            metadata[f"{path.rsplit('/', 1)[-1].removesuffix('.png')}_plot"] = plot(handle.read(), path)
    return MaterializeResult(metadata=metadata)
