"""Learning-rate schedules as multipliers of the peak rate, over the steps actually run."""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("cosine", "wsd", "constant")


@dataclass(frozen=True)
class Schedule:
    """`cosine`: linear warmup then cosine to `min_ratio`.
    `wsd` (Warmup-Stable-Decay, MiniCPM): warmup, constant, then a decay over
    the last `decay_fraction` of steps, `linear` to zero or `exp` halving every
    `half_life` fraction of the decay phase."""

    kind: str = "cosine"
    warmup: int = 20
    min_ratio: float = 0.1
    decay_fraction: float = 0.1
    decay: str = "linear"
    half_life: float = 0.1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind {self.kind!r}: use cosine, wsd or constant")
        if self.decay not in ("linear", "exp"):
            raise ValueError(f"decay {self.decay!r}: use linear or exp")
        if not 0 < self.decay_fraction <= 1 or self.warmup < 0:
            raise ValueError("decay_fraction must be in (0, 1] and warmup >= 0")

    def multiplier(self, step: int, total: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            progress = (step - self.warmup) / max(1, total - self.warmup)
            cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            return self.min_ratio + (1 - self.min_ratio) * cosine
        return self._wsd(step, total)

    def decay_start(self, total: int) -> int:
        return max(self.warmup, total - round(self.decay_fraction * total))

    def _wsd(self, step: int, total: int) -> float:
        start = self.decay_start(total)
        if step < start:
            return 1.0
        progress = (step - start) / max(1, total - start)
        if self.decay == "linear":
            return max(0.0, 1 - progress)
        return 0.5 ** (progress / self.half_life)
