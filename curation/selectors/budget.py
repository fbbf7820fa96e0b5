"""Budgets: how much to select, in one syntax for every stage (the CLI, Dagster
config, the subset, kMQ). `allocation.allocate` splits one over groups."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        to the nearest whole number, and is at least one document."""
        if self.fraction is not None:
            return max(1, round(self.fraction * candidates))
        return self.tokens if self.tokens is not None else self.documents


def _whole(number: float) -> int | float:
    """An integral float as an int; anything else as is, for Budget to refuse."""
    return int(number) if math.isfinite(number) and number == int(number) else number
