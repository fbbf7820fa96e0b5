"""Exact and fuzzy (MinHash LSH) dedup following the SlimPajama recipe.

    from curation.selectors.dedup import DedupConfig, run_dedup, summarize_decisions

    decisions = run_dedup(lambda: iter(table.to_batches()), DedupConfig(), "work/")
    summarize_decisions(decisions)

See DedupConfig for the recipe's defaults and the keep rule.
"""

from .clean import clean_text, content_chars, shingle_set
from .config import DedupConfig
from .minhash import HashFamily, band_hashes, signatures
from .pipeline import run_dedup
from .summary import summarize_decisions

__all__ = [
    "DedupConfig",
    "HashFamily",
    "band_hashes",
    "clean_text",
    "content_chars",
    "run_dedup",
    "shingle_set",
    "signatures",
    "summarize_decisions",
]
