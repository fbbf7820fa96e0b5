"""Exact and fuzzy (MinHash LSH) dedup following the SlimPajama recipe.

    from curation.selectors.dedup import DedupConfig, run_dedup, summarize_decisions

    decisions = run_dedup(lambda: iter(table.to_batches()), DedupConfig(), "work/")
    summarize_decisions(decisions)

See DedupConfig for the recipe's defaults and the keep rule. `dedup_documents`
runs it over a documents dataset on an engine: `run_dedup` here, or
`dedup_distributed` (distributed.py) on a cluster.
"""

from .clean import clean_text, content_chars, shingle_set
from .config import DedupConfig
from .distributed import DistributedRun, dedup_distributed
from .minhash import HashFamily, band_hashes, signatures
from .pipeline import dedup_documents, run_dedup
from .summary import summarize_decisions

__all__ = [
    "DedupConfig",
    "DistributedRun",
    "HashFamily",
    "band_hashes",
    "clean_text",
    "content_chars",
    "dedup_distributed",
    "dedup_documents",
    "run_dedup",
    "shingle_set",
    "signatures",
    "summarize_decisions",
]
