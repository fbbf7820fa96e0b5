"""The one budget allocator: a budget split over groups (a subset's sources,
kMQ's clusters, CoLM's sources in a big batch)."""

from __future__ import annotations

import numpy as np


def allocate(
    total: float, weights: np.ndarray, capacity: np.ndarray, whole: bool = True, at_least: int = 0
) -> np.ndarray:
    """Shares of `total` over groups in proportion to `weights`, never above
    `capacity`: what a full group cannot take goes to the others in proportion
    to their weights. They sum to min(total, capacity of the groups with weight).

    whole: whole numbers, rounded by largest remainder (ties to the earlier
    group); else exact fractions.
    at_least: with whole, each group with a share gets at least this many (as far
    as its capacity goes) before the remainders are handed out; if that is more
    than the total, the largest shares give one back each (ties: the later group)."""
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity)
    share = _proportional(float(total), weights, capacity.astype(np.float64))
    return _rounded(share, capacity.astype(np.int64), at_least) if whole else share


def _proportional(total: float, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    share = np.zeros(len(capacity), dtype=np.float64)
    open_ = (capacity > 0) & (weights > 0)
    left = min(total, float(capacity[open_].sum()))
    while left > 1e-9 and open_.any():
        part = left * weights * open_ / weights[open_].sum()
        capped = open_ & (share + part >= capacity)
        if not capped.any():
            share += part
            break
        left -= float((capacity[capped] - share[capped]).sum())
        share[capped] = capacity[capped]
        open_ &= ~capped
    return share


def _rounded(share: np.ndarray, capacity: np.ndarray, at_least: int) -> np.ndarray:
    whole = np.minimum(np.floor(share + 1e-9).astype(np.int64), capacity)
    remainders = np.where(share > 0, share - whole, -np.inf)
    if at_least:
        whole = np.where(share > 0, np.maximum(whole, np.minimum(at_least, capacity)), whole)
    remainders[whole >= capacity] = -np.inf
    short = round(float(share.sum())) - int(whole.sum())
    for position in np.argsort(-remainders, kind="stable")[: max(short, 0)]:
        if np.isfinite(remainders[position]):
            whole[position] += 1
    for _ in range(max(-short, 0)):
        whole[len(whole) - 1 - int(np.argmax(whole[::-1]))] -= 1
    return whole
