"""The quality asset: heuristic rules, classifier and perplexity scores between
fuzzy dedup and the embeddings; a thin wrapper over `stages.quality_stage`."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

from dagster import AssetExecutionContext, MaterializeResult, asset
from pydantic import Field

from curation.pipelines.assets import OWNERS, fuzzy_dedup, stage_report
from curation.pipelines.config import (
    AUTOMATE,
    PerplexityBand,
    StageConfig,
    check_run_settings,
    library_field,
    stage_config,
)
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot
from curation.plots import bar_png
from curation.selectors.quality import ClassifierConfig, PerplexityConfig, QualityConfig
from curation.stages import QUALITY_SCORES, quality_stage


@stage_config("quality")
class QualityStageConfig(StageConfig):
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
    classifier_min: float | None = library_field(
        ClassifierConfig, "min_score", "Drop documents the classifier scores below this P(reference)."
    )
    perplexity: bool = Field(default=False, description="Score perplexity under a small reference model.")
    band: PerplexityBand | None = library_field(
        PerplexityConfig, "band", "Keep a perplexity band per source: low, middle or high (none: keep all)."
    )
    fraction: float = library_field(PerplexityConfig, "fraction", "The band's share of each source.")
    perplexity_steps: int = library_field(PerplexityConfig, "steps", "Training steps of the reference model.")
    seed: int = library_field(PerplexityConfig, "seed", "Samples, model initialisation and fastText's seed.")

    def settings(self) -> QualityConfig:
        if self.classifier_min is not None and not self.reference:
            raise ValueError("classifier_min needs a reference")
        scorer = None
        if self.perplexity or self.band:
            band = self.band.value if self.band else None
            scorer = PerplexityConfig(
                steps=self.perplexity_steps, band=band, fraction=self.fraction, seed=self.seed
            )
        classifier = (
            ClassifierConfig(min_score=self.classifier_min, seed=self.seed) if self.reference else None
        )
        return QualityConfig(
            rules=QualityConfig.parse_rules(self.rules), classifier=classifier, perplexity=scorer
        )


@asset(
    group_name="quality",
    deps=[fuzzy_dedup],
    kinds={"parquet", "fasttext", "pytorch"},
    owners=OWNERS,
    tags={"stage": "quality"},
    automation_condition=AUTOMATE,
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
    check_run_settings(context)

    def progress(step: str, done: int) -> None:
        context.log.info(f"quality: {step} {done} documents")

    report = quality_stage(
        str(storage.location("fuzzy_dedup", "documents")),
        str(storage.location("quality")),
        config.settings(),
        config.reference or None,
        device.resolve(),
        progress,
        engine=engine.get(),
    )
    page = stage_report("quality", report)
    page.value("engine", engine.describe())
    page.path("scores", str(storage.location("quality", QUALITY_SCORES)), "scores table")
    page.counts(
        "rules_failed", report.details["rules_failed"], "rule", "documents", "documents failing each rule"
    )
    for name, by_source in report.details["score_summary"].items():
        page.by_row(f"{name}_by_source", by_source, "source", f"{name} score by source (deciles)")
    if report.details["rules_failed"]:
        page.plot(
            bar_png(report.details["rules_failed"], "documents failing each rule", "documents"),
            "rules failed",
        )
    for path in report.details["plots"]:
        with open(path, "rb") as handle:
            page.plot(handle.read(), path.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " "))
    return page.result()
