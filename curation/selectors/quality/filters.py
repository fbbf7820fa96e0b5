"""The quality stage's settings and its decisions: which rules apply to which
source, and which thresholds turn scores into kept / dropped."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.selectors.quality.classifier import ClassifierConfig
from curation.selectors.quality.heuristics import PRESETS, RuleSet, TextSettings, first_failed
from curation.selectors.quality.perplexity import PerplexityConfig, band_mask
from curation.storage.decisions import DECISION_SCHEMA

STAGE = "quality"
PASSED = "passed"
BELOW_MIN = "classifier_below_min"
ANY_SOURCE = "*"
DEFAULT_RULES = {ANY_SOURCE: PRESETS["prose"], "code": PRESETS["code"]}


@dataclass(frozen=True)
class QualityConfig:
    """Fields:
    rules: the rule set of each source; ANY_SOURCE ("*") covers the others.
        Default: prose rules everywhere, the code preset for a source named `code`.
    filter: drop documents that fail their source's rules (else only record them).
    text: how the heuristic signals are measured.
    classifier: the fastText scorer (needs a reference set); None: off.
    perplexity: the reference-model scorer; None: off.
    """

    rules: dict[str, RuleSet] = field(default_factory=lambda: dict(DEFAULT_RULES))
    filter: bool = True
    text: TextSettings = field(default_factory=TextSettings)
    classifier: ClassifierConfig | None = None
    perplexity: PerplexityConfig | None = None

    def rules_for(self, source: str) -> RuleSet:
        return self.rules.get(source, self.rules.get(ANY_SOURCE, RuleSet(None, None, None)))

    @property
    def decides(self) -> bool:
        """Whether any threshold is set, so that the stage keeps and drops."""
        return (
            self.filter
            or (self.classifier is not None and self.classifier.min_score is not None)
            or (self.perplexity is not None and self.perplexity.band is not None)
        )

    @staticmethod
    def parse_rules(items: list[str]) -> dict[str, RuleSet]:
        """`SOURCE=RULES` items (RULES: a preset or groups, see RuleSet.parse);
        a bare RULES sets the default for every other source."""
        rules = dict(DEFAULT_RULES)
        for item in items:
            source, _, spec = item.rpartition("=")
            rules[source or ANY_SOURCE] = RuleSet.parse(spec)
        return rules


def rule_reasons(values: np.ndarray, sources: np.ndarray, config: QualityConfig) -> np.ndarray:
    """The first rule of its source's rule set each document fails, or ""."""
    reasons = np.full(len(values), "", dtype=object)
    for source in np.unique(sources):
        rows = np.flatnonzero(sources == source)
        reasons[rows] = first_failed(values[rows], config.rules_for(str(source)).rules())
    return reasons


def drop_reasons(
    sources: np.ndarray,
    rule_failed: np.ndarray,
    config: QualityConfig,
    classifier: np.ndarray | None = None,
    perplexity: np.ndarray | None = None,
) -> np.ndarray:
    """Why each document is dropped ("" when kept): its failed rule when filtering,
    then the classifier's minimum, then the perplexity band, cut per source among
    the documents still kept."""
    reasons = rule_failed.copy() if config.filter else np.full(len(sources), "", dtype=object)
    c, p = config.classifier, config.perplexity
    if c is not None and c.min_score is not None and classifier is not None:
        reasons[(reasons == "") & (classifier < c.min_score)] = BELOW_MIN
    if p is not None and p.band is not None and perplexity is not None:
        rows = np.flatnonzero(reasons == "")
        inside = band_mask(perplexity[rows], sources[rows], p.band, p.fraction)
        reasons[rows[~inside]] = f"perplexity_not_{p.band}"
    return reasons


def decision_table(ids: pa.Array, sources: pa.Array, reasons: np.ndarray) -> pa.Table:
    """One row per document, the schema every selecting stage writes."""
    kept = reasons == ""
    n = len(reasons)
    columns = [
        ids,
        sources,
        pa.array([STAGE] * n),
        pa.array(kept),
        pa.array(np.where(kept, PASSED, reasons).tolist()),
        pa.nulls(n, pa.string()),
    ]
    return pa.table(columns, schema=DECISION_SCHEMA)
