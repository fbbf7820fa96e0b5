"""Settings for exact and fuzzy dedup; defaults are the SlimPajama recipe."""

from __future__ import annotations

from dataclasses import dataclass

from .clean import NORMALIZATIONS, SHORT_COUNTS, check_choice

MODES = ("global", "local")


@dataclass(frozen=True)
class DedupConfig:
    """What to deduplicate and how.

    Recipe defaults (SlimPajama-DC and Cerebras' reference scripts): 128 MinHash
    permutations, LSH with 9 bands of 13 rows (117 of the 128 values are used),
    character 13-grams, documents with fewer than 200 characters once ASCII
    punctuation and whitespace are removed are dropped (the paper; the
    reference's filter.py counts single spaces too: `short_count`), exact dedup
    runs before fuzzy dedup, and any band collision is an edge (no
    verification). Normalisation is NFC, as the paper documents; the
    reference's normalize_text.py runs ftfy first (`normalize`).

    Keep rule: in every duplicate group the document with the smallest
    `(source rank, id)` is kept. A source's rank is its position in
    `source_priority`; sources not listed rank after all listed ones, so with
    the default empty tuple the smallest id wins. Ids compare as Python strings.

    Fields:
        mode: "global" (one index over all sources) or "local" (one per source;
            exact and fuzzy duplicates must share the source).
        num_perm, bands, rows: MinHash size and LSH shape; bands * rows <= num_perm.
        ngram: shingle width in characters.
        min_chars: short filter threshold; 0 disables it.
        short_count: what the short filter counts: "content" (no punctuation and
            no whitespace at all: the paper and the reference README, default) or
            "cleaned" (the cleaned text, single spaces included: what the
            reference's filter.py computes; drops fewer).
        normalize: "nfc" (default) or "ftfy" (`ftfy.fix_text(text,
            normalization="NFC")` as in the reference's normalize_text.py; about
            40x slower than the rest of the stage). Applies to what is hashed and
            counted; the documents' text is kept as it came in.
        exact, fuzzy: which stages run.
        verify: keep only candidate pairs whose exact Jaccard similarity of
            shingle sets is >= verify_threshold (not in the reference recipe).
        verify_max_bucket: in verify mode, buckets up to this size yield all
            their pairs; larger buckets yield member-to-smallest-member pairs.
        seed: seeds the hash family; results depend on it and on nothing else.
        bands_per_pass: LSH bands sorted per pass; lowers peak memory.
        batch_chars: largest chunk of text (UTF-8 bytes) cleaned and hashed at once.
        num_threads: threads for the compiled kernels; 0 means all cores.
    """

    mode: str = "global"
    num_perm: int = 128
    bands: int = 9
    rows: int = 13
    ngram: int = 13
    min_chars: int = 200
    short_count: str = "content"
    normalize: str = "nfc"
    exact: bool = True
    fuzzy: bool = True
    verify: bool = False
    verify_threshold: float = 0.8
    verify_max_bucket: int = 32
    seed: int = 42
    source_priority: tuple[str, ...] = ()
    bands_per_pass: int = 3
    batch_chars: int = 32_000_000
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("num_perm", "bands", "rows", "ngram", "bands_per_pass", "batch_chars"):
            _check_int(name, getattr(self, name), low=1)
        _check_int("min_chars", self.min_chars, low=0)
        check_choice("short_count", self.short_count, SHORT_COUNTS)
        check_choice("normalize", self.normalize, NORMALIZATIONS)
        _check_int("num_threads", self.num_threads, low=0)
        _check_int("verify_max_bucket", self.verify_max_bucket, low=2)
        _check_int("seed", self.seed, low=0)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands * rows must be <= num_perm, got {self.bands} * {self.rows} = "
                f"{self.bands * self.rows} > {self.num_perm}"
            )
        threshold = self.verify_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"verify_threshold must be a number, got {threshold!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"verify_threshold must be in (0, 1], got {threshold}")
        for name in ("exact", "fuzzy", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        priority = self.source_priority
        if isinstance(priority, str) or not all(isinstance(s, str) for s in priority):
            raise ValueError(f"source_priority must be a tuple of source names, got {priority!r}")
        if len(set(priority)) != len(priority):
            raise ValueError(f"source_priority lists a source twice: {priority!r}")
        object.__setattr__(self, "source_priority", tuple(priority))

    @property
    def stages(self) -> tuple[str, ...]:
        """Stages that run, in order; the last one labels kept documents."""
        return ("short",) + (("exact",) if self.exact else ()) + (("fuzzy",) if self.fuzzy else ())


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
