"""Which documents a subset takes: each source's share of the budget follows
the mixture's weights averaged over its schedule, and inside a source the
documents come in a seeded random order (keyed by the source's name, so adding
a source leaves the others' picks unchanged). A tokens budget is filled with
counted documents, so it is never exceeded. Storage reads the inputs and
writes the shards (`curation.subset`)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from curation.selectors.allocation import allocate
from curation.selectors.budget import Budget
from curation.selectors.mixture import Mixture, MixtureConfig

SCHEDULE_STEPS = 1_000_000  # only shapes the schedule average; any large number gives the same shares


def source_orders(names: list[str], codes: np.ndarray, candidates: np.ndarray, seed: int) -> list[np.ndarray]:
    """Each source's candidates in the seeded order the subset takes them in."""
    orders = []
    for position, name in enumerate(names):
        rows = np.flatnonzero(candidates & (codes == position))
        orders.append(rows[source_rng(seed, name).permutation(len(rows))])
    return orders


def subset_weights(
    names: list[str],
    codes: np.ndarray,
    candidates: np.ndarray,
    lengths: np.ndarray | None,
    mixture: MixtureConfig,
) -> dict[str, float]:
    """Share of the budget per source: the mixture's weights averaged over its schedule."""
    if mixture.unit == "tokens":
        sizes = np.bincount(codes[candidates], weights=lengths[candidates], minlength=len(names))
    else:
        sizes = np.bincount(codes[candidates], minlength=len(names))
    fitted = Mixture(mixture).fit(dict(zip(names, sizes.tolist(), strict=True)), SCHEDULE_STEPS)
    return fitted.average_weights()


def choose(
    codes: np.ndarray,
    candidates: np.ndarray,
    orders: list[np.ndarray],
    weights: Sequence[float],
    budget: Budget,
    mixture_unit: str,
    counts=None,
) -> np.ndarray:
    """The chosen-documents mask: each source's share of `budget` (by `weights`,
    token shares when `mixture_unit` is tokens) from the front of its order.
    `counts` gives token lengths (`TokenCounts`) where tokens matter."""
    w = np.asarray(weights, dtype=np.float64)
    lengths = counts.lengths(codes, candidates) if counts is not None else None
    asked = budget.amount(int(candidates.sum()))
    chosen = np.zeros(len(codes), dtype=bool)
    if budget.unit == "tokens":
        available = np.bincount(codes[candidates], weights=lengths[candidates], minlength=len(w))
        targets = allocate(asked, w, available, whole=False)
        for rows in counted_prefixes(counts, orders, targets, codes, candidates):
            chosen[rows] = True
        return chosen
    if mixture_unit == "tokens":
        w = _per_document(w, codes, candidates, lengths)
    targets = allocate(asked, w, np.bincount(codes[candidates], minlength=len(w)))
    for rows, target in zip(orders, targets, strict=True):
        chosen[rows[: int(target)]] = True
    return chosen


def counted_prefixes(counts, orders, targets, codes, candidates) -> list[np.ndarray]:
    """The longest prefix of each order that fits its target in counted tokens
    (never over the source's share). The prefixes and the document after each
    are counted, estimates replaced by counts until no decision rests on one."""
    while True:
        lengths = counts.lengths(codes, candidates)
        prefixes = _prefixes(orders, lengths, targets)
        deciding = [rows[: len(prefix) + 1] for rows, prefix in zip(orders, prefixes, strict=True)]
        if not any((counts.counted[rows] == 0).any() for rows in deciding):
            return prefixes
        # A tenth more than the estimate asks for, so that a low estimate rarely costs another pass.
        ahead = _prefixes(orders, lengths, 1.1 * np.asarray(targets), extra=1)
        counts.count(np.concatenate(ahead))


def _prefixes(orders, lengths: np.ndarray, targets, extra: int = 0) -> list[np.ndarray]:
    return [rows[: _fitting(lengths[rows], t) + extra] for rows, t in zip(orders, targets, strict=True)]


def _fitting(lengths: np.ndarray, target: float) -> int:
    fits = np.cumsum(lengths) <= target + 1e-6
    return int(np.argmin(fits)) if not fits.all() else len(lengths)


def _per_document(weights: np.ndarray, codes, candidates, lengths) -> np.ndarray:
    """Token shares as document shares: a source's weight over its mean document
    length, so that a documents budget gives each source its share of the tokens."""
    docs = np.bincount(codes[candidates], minlength=len(weights))
    tokens = np.bincount(codes[candidates], weights=lengths[candidates], minlength=len(weights))
    mean = np.divide(tokens, docs, out=np.ones(len(weights)), where=docs > 0)
    return weights / np.maximum(mean, 1.0)


def source_rng(seed: int, source: str) -> np.random.Generator:
    # Keyed by the source's name, so adding a source leaves the others' picks unchanged.
    return np.random.default_rng([seed, zlib.crc32(source.encode())])
