"""Quality signals: heuristic rules (Gopher quality and repetition, C4), a
fastText classifier against a reference set (DCLM), and perplexity under a
small reference model (Ankner et al.). Pure functions and classes; the
quality stage in `curation.stages` does the I/O."""

from curation.selectors.quality.classifier import ClassifierConfig, QualityClassifier, load_classifier
from curation.selectors.quality.filters import (
    ANY_SOURCE,
    PASSED,
    STAGE,
    QualityConfig,
    decision_table,
    drop_reasons,
    rule_reasons,
)
from curation.selectors.quality.heuristics import (
    PRESETS,
    SIGNALS,
    C4Rules,
    GopherQuality,
    GopherRepetition,
    Rule,
    RuleSet,
    TextSettings,
    first_failed,
    measure,
    signal,
)
from curation.selectors.quality.perplexity import BANDS, PerplexityConfig, ReferenceModel, band_mask

__all__ = [
    "ANY_SOURCE",
    "BANDS",
    "PASSED",
    "PRESETS",
    "SIGNALS",
    "STAGE",
    "C4Rules",
    "ClassifierConfig",
    "GopherQuality",
    "GopherRepetition",
    "PerplexityConfig",
    "QualityClassifier",
    "QualityConfig",
    "ReferenceModel",
    "Rule",
    "RuleSet",
    "TextSettings",
    "band_mask",
    "decision_table",
    "drop_reasons",
    "first_failed",
    "load_classifier",
    "measure",
    "rule_reasons",
    "signal",
]
