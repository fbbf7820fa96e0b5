"""Budgets: how much to select (`Budget`, one syntax for every stage) and how a
budget splits over groups (`allocate`: sources of a subset, kMQ's clusters,
CoLM's sources in a big batch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curation.errors import CurationError

BUDGET_FORMS = "documents=N (or N), tokens=N, or fraction=F (or F < 1)"


@dataclass(frozen=True)
class Budget:
    """Exactly one of: `documents`, `tokens` (EOS included, as in the shards), or
    `fraction` of the candidate documents."""

    documents: int | None = None
    tokens: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("documents", "tokens", "fraction") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of documents, tokens or fraction; got {given or 'none'}")
        for name in ("documents", "tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} budget must be an integer >= 1, got {value!r}")
        if self.fraction is not None:
            if isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float):
                raise ValueError(f"fraction budget must be a number in (0, 1], got {self.fraction!r}")
            if not 0.0 < self.fraction <= 1.0:
                raise ValueError(f"fraction budget must be in (0, 1], got {self.fraction}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """`documents=N`, `tokens=N`, `fraction=F`, or the short forms `N`
        (documents) and `F` (a fraction below 1). N may be written 2e6."""
        kind, sep, value = (part.strip() for part in text.partition("="))
        try:
            if not sep:
                number = float(kind)
                return cls(fraction=number) if 0 < number < 1 else cls(documents=_whole(number))
            if kind in ("documents", "tokens"):
                return cls(**{kind: _whole(float(value))})
            if kind == "fraction":
                return cls(fraction=float(value))
        except ValueError as exc:
            raise CurationError(f"budget {text!r}: {exc}; write {BUDGET_FORMS}") from exc
        raise CurationError(f"budget {text!r}: write {BUDGET_FORMS}")

    @property
    def unit(self) -> str:
        return "tokens" if self.tokens is not None else "documents"

    def amount(self, candidates: int) -> int:
        """The budget in its unit; a fraction of `candidates` documents is rounded
        down, and is at least one document."""
        if self.fraction is not None:
            return max(1, math.floor(self.fraction * candidates + 1e-9))
        return self.tokens if self.tokens is not None else self.documents


def _whole(number: float) -> int | float:
    """An integral float as an int; anything else as is, for Budget to refuse."""
    return int(number) if math.isfinite(number) and number == int(number) else number


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
