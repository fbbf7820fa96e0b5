"""kMQ, k-means quality selection (Diversify and Conquer, arXiv 2409.11378).

A budget (documents or tokens) is split across k-means clusters, in
proportion to cluster size (the paper) or evenly (the paper's code); inside a
cluster documents are drawn without replacement with probability
proportional to exp(quality), or uniformly when there is no quality score.

Drawing without replacement with weights exp(q) is done with Gumbel keys:
sorting by q + Gumbel noise gives exactly the order of successive weighted
draws, so one sort per round replaces a loop of draws.

Iterative refinement: `select` a first share of the budget, train, score each
cluster (e.g. validation loss still to learn), then `refine(scores)` draws the
next share from the unselected pool with cluster weights softmax(scores / T).
The scores come from documents held out of the pool (`scoring_split`: a fixed
split by a hash of the id, never selected, so never trained on).

The budget is met exactly: in documents, min(budget, pool) documents are
chosen; in tokens, the total never exceeds the budget and no unselected
document would still fit in what is left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.selectors.allocation import allocate
from curation.storage.decisions import DECISION_SCHEMA

STAGE = "diversity"
SELECTED, NOT_SELECTED, HELD_OUT = "selected", "not_selected", "held_out_for_scoring"
# Documents per cluster held out to score clusters between rounds: with 32 the
# standard error of a cluster's mean loss is under a fifth of the spread of
# per-document losses (see the README), small next to T = 1.
SCORING_DOCS = 32
SCORING_SHARE = 0.25  # never more than this share of a cluster is held out
UNITS = ("documents", "tokens")
SPLITS = ("proportional", "even")
DRAWS = ("sample", "expected")


@dataclass(frozen=True)
class KMQConfig:
    """kMQ settings.

    Fields:
        budget: how much to select, in `unit`s.
        unit: "documents", or "tokens" (then `fit` needs per-document token counts).
        split: "proportional" to cluster size (the paper, default) or "even"
            (the paper's released code); clusters too small for their share
            give the rest to the others.
        rounds: N, the number of rounds of iterative refinement (paper: 3);
            `split_budget(budget, rounds)` gives each round's share.
        holdout: documents per cluster held out of the pool to score clusters
            between rounds (`scoring_split`); used when rounds > 1.
        temperature: T in softmax(scores / T) over cluster scores when refining.
        refine_draw: how refinement turns cluster weights into counts:
            "sample" draws a cluster per unit by weight (the paper);
            "expected" gives each cluster its expected count, rounded.
        seed: all randomness comes from it.
    """

    budget: int
    unit: str = "documents"
    split: str = "proportional"
    rounds: int = 3
    holdout: int = SCORING_DOCS
    temperature: float = 1.0
    refine_draw: str = "sample"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int | np.integer) or self.budget < 0:
            raise ValueError(f"budget must be a whole number >= 0, got {self.budget!r}")
        for name, allowed in (("unit", UNITS), ("split", SPLITS), ("refine_draw", DRAWS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0, got {self.holdout}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def split_budget(budget: int, rounds: int) -> list[int]:
    """`rounds` shares that add up to `budget`, earlier rounds larger by at most one."""
    base, extra = divmod(budget, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def scoring_split(
    ids: Sequence[str], cluster: np.ndarray, per_cluster: int = SCORING_DOCS, share: float = SCORING_SHARE
) -> np.ndarray:
    """The documents held out to score clusters, as a mask: in each cluster the
    `per_cluster` with the smallest hash of their id, at most `share` of the
    cluster. Fixed by the ids alone: any order, any run, the same split."""
    cluster = np.asarray(cluster, dtype=np.int64)
    n = len(cluster)
    if n == 0:
        return np.zeros(0, dtype=bool)
    keys = np.fromiter((_id_hash(i) for i in ids), dtype=np.uint64, count=n)
    order = np.lexsort((keys, cluster))
    sizes = np.bincount(cluster)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    take = np.minimum(per_cluster, np.floor(sizes * share)).astype(np.int64)
    return rank < take[cluster]


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")


class KMQ:
    """`fit(cluster, quality, tokens)`, then `select()` (and `refine(...)`), then `decisions(...)`.

    After fitting: `round_` per row (0 = not selected, r = chosen in round r,
    -1 = held out for scoring, never selected).
    """

    def __init__(self, config: KMQConfig):
        self.config = config

    def fit(
        self,
        cluster: np.ndarray,
        quality: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
        held_out: np.ndarray | None = None,
    ) -> KMQ:
        cluster = np.asarray(cluster)
        if cluster.ndim != 1 or (len(cluster) and cluster.min() < 0):
            raise ValueError("cluster must be a 1-D array of labels >= 0")
        n = len(cluster)
        self.cluster_ = cluster.astype(np.int64)
        self.k_ = int(cluster.max()) + 1 if n else 0
        self.quality_ = _column(quality, n, "quality", np.float64)
        if self.config.unit == "tokens":
            if tokens is None:
                raise ValueError("unit='tokens' needs per-document token counts")
            self.cost_ = _column(tokens, n, "tokens", np.int64)
            if (self.cost_ < 0).any():
                raise ValueError("token counts must be >= 0")
        else:
            self.cost_ = np.ones(n, dtype=np.int64)
        self.round_ = np.zeros(n, dtype=np.int64)
        if held_out is not None:
            self.round_[_column(held_out, n, "held_out", bool)] = -1
        self._rounds = 0
        self._rng = np.random.default_rng(self.config.seed)
        return self

    @property
    def selected_(self) -> np.ndarray:
        return self.round_ > 0

    def select(self, budget: int | None = None) -> np.ndarray:
        """A kMQ draw of `budget` (default: the config's) from the unselected
        pool; returns the chosen row numbers, sorted."""
        budget = self.config.budget if budget is None else budget
        capacity = self._capacity()
        weights = capacity if self.config.split == "proportional" else (capacity > 0).astype(np.float64)
        return self._draw(budget, allocate(budget, weights, capacity))

    def refine(self, scores: np.ndarray, budget: int) -> np.ndarray:
        """Next round: cluster weights softmax(scores / T) over clusters with
        unselected documents; then within each cluster by exp(quality)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (self.k_,):
            raise ValueError(f"need one score per cluster ({self.k_}), got shape {scores.shape}")
        capacity = self._capacity()
        weights = softmax(scores / self.config.temperature, where=capacity > 0)
        if self.config.refine_draw == "sample":
            quotas = sample_counts(budget, weights, capacity, self._rng)
        else:
            quotas = allocate(budget, weights, capacity)
        return self._draw(budget, quotas)

    def decisions(self, ids: pa.Array, sources: pa.Array) -> pa.Table:
        """The decision table: kept = selected in any round; cluster is null
        (no document stands for another here)."""
        n = len(self.round_)
        if len(ids) != n or len(sources) != n:
            raise ValueError(f"{len(ids)} ids and {len(sources)} sources for {n} fitted rows")
        kept = self.selected_
        reason = np.where(kept, SELECTED, np.where(self.round_ < 0, HELD_OUT, NOT_SELECTED))
        columns = [ids, sources, pa.array([STAGE] * n), pa.array(kept), pa.array(reason)]
        return pa.table([*columns, pa.nulls(n, pa.string())], schema=DECISION_SCHEMA)

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round_.tolist(), "rounds": self._rounds, "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round_ = np.asarray(state["round"], dtype=np.int64)
        self._rounds = int(state["rounds"])
        self._rng.bit_generator.state = state["rng"]

    @property
    def rounds_done_(self) -> int:
        return self._rounds

    def _free(self) -> np.ndarray:
        return self.round_ == 0

    def _capacity(self) -> np.ndarray:
        """Budget units still available per cluster."""
        free = self._free()
        return np.bincount(self.cluster_[free], weights=self.cost_[free], minlength=self.k_).astype(np.int64)

    def _draw(self, budget: int, quotas: np.ndarray) -> np.ndarray:
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        free = np.flatnonzero(self._free())
        keys = self.quality_[free] + self._rng.gumbel(size=len(free))
        by_cluster = free[np.lexsort((-keys, self.cluster_[free]))]
        chosen = take_quota_prefixes(by_cluster, self.cluster_, self.cost_, quotas)
        by_key = free[np.argsort(-keys, kind="stable")]
        rest = by_key[~np.isin(by_key, chosen)]
        left = budget - int(self.cost_[chosen].sum())
        chosen = np.concatenate([chosen, fill(rest, self.cost_, left)])
        self._rounds += 1
        self.round_[chosen] = self._rounds
        return np.sort(chosen)


def sample_counts(
    total: int, weights: np.ndarray, capacity: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw a cluster per unit with probability `weights` (multinomial), redrawing
    units that land in a full cluster among those with room."""
    weights = np.where(capacity > 0, np.asarray(weights, dtype=np.float64), 0.0)
    counts = np.zeros(len(capacity), dtype=np.int64)
    left = min(int(total), int(capacity[weights > 0].sum()))
    while left > 0:
        room = (counts < capacity) & (weights > 0)
        p = np.where(room, weights, 0.0)
        drawn = rng.multinomial(left, p / p.sum())
        drawn = np.minimum(drawn, capacity - counts)
        counts += drawn
        left -= int(drawn.sum())
    return counts


def take_quota_prefixes(
    rows: np.ndarray, cluster: np.ndarray, cost: np.ndarray, quotas: np.ndarray
) -> np.ndarray:
    """From `rows` (grouped by cluster, best first), each cluster's longest
    prefix whose cost fits in its quota."""
    if len(rows) == 0:
        return rows
    labels = cluster[rows]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    cum = np.cumsum(cost[rows])
    before = np.repeat(np.r_[0, cum][starts], np.diff(np.r_[starts, len(rows)]))
    return rows[(cum - before) <= quotas[labels]]


def fill(rows: np.ndarray, cost: np.ndarray, left: int) -> np.ndarray:
    """Take rows in order whenever they still fit in `left`, until none does."""
    taken = []
    while left > 0 and len(rows):
        rows = rows[cost[rows] <= left]  # what does not fit now never will
        prefix = rows[np.cumsum(cost[rows]) <= left]
        if len(prefix) == 0:
            break
        taken.append(prefix)
        left -= int(cost[prefix].sum())
        rows = rows[len(prefix) :]
    return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


def softmax(x: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float64)
    if not where.any():
        return out
    shifted = np.exp(x[where] - x[where].max())
    out[where] = shifted / shifted.sum()
    return out


def _column(values, n: int, name: str, dtype) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=dtype)
    array = np.asarray(values, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"{name} must have one value per document ({n}), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has missing or infinite values")
    return array
