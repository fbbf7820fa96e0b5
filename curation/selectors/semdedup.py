"""SemDeDup (arXiv 2303.09540): drop documents whose embedding nearly repeats
an earlier one in the same k-means cluster.

Inside each cluster, items are put in keep order (by distance to the
centroid: "hard" = farthest first, the paper's default; "easy" = nearest
first; "random"). Item j is a duplicate when its largest cosine similarity to
any earlier item of the cluster exceeds 1 - epsilon. As in the paper, earlier
items count whether or not they are themselves duplicates, so each item's
"max similarity to earlier" does not depend on epsilon: `fit` computes it
once (chunked matrix products in torch, on the GPU when the device has one)
and any epsilon is then a threshold on that column.

Choosing epsilon for a target kept fraction f is therefore exact, with no
trial runs and no interpolation (the reference tries two epsilons on a sample
of clusters and interpolates): sort the n values, take the one at rank
round(f * n), and keep every item at or below it. Only ties at that value,
and the first item of every cluster (always kept), can move the kept count.

Because that column is per cluster, the work splits by cluster: `groups`
gives each cluster's rows in keep order, `plan_parts` packs clusters into
parts, `cluster_similarities` runs on one cluster's vectors wherever a part
runs, and `decide` takes the assembled column (see `stages.semdedup_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from curation.device import CPU, Device
from curation.storage.decisions import DECISION_SCHEMA

STAGE = "semantic"
DUPLICATE, UNIQUE, REPRESENTATIVE = "semantic_duplicate", "unique", "representative"
KEEP_RULES = ("hard", "easy", "random")


@dataclass(frozen=True)
class SemDeDupConfig:
    """SemDeDup settings.

    Fields:
        epsilon: when set, the threshold itself: duplicate if the similarity
            to an earlier item is > 1 - epsilon; `target_fraction` is then unused.
        target_fraction: share of documents to keep when epsilon is not set;
            epsilon is derived exactly (see the module doc). Default 0.8, the
            paper's C4 setting that matched a near-dup baseline keeping 96%.
        keep: order inside a cluster, and so which copy survives: "hard"
            (farthest from the centroid first, the paper's default), "easy"
            (nearest first) or "random".
        seed: for keep="random".
        block_elements: the largest similarity block computed at once
            (rows x cluster size); bounds memory for big clusters.
    """

    epsilon: float | None = None
    target_fraction: float = 0.8
    keep: str = "hard"
    seed: int = 0
    block_elements: int = 1 << 24

    def __post_init__(self) -> None:
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {self.keep!r}")
        if self.epsilon is not None and not 0.0 <= self.epsilon <= 2.0:
            raise ValueError(f"epsilon must be in [0, 2], got {self.epsilon}")
        if not 0.0 < self.target_fraction <= 1.0:
            raise ValueError(f"target_fraction must be in (0, 1], got {self.target_fraction}")
        if self.block_elements < 1:
            raise ValueError("block_elements must be positive")


class SemDeDup:
    """`fit(embeddings, cluster, distance)`, then `select(ids, sources)`.

    After `fit`: `max_similarity_` (per row; -inf for the first item of a
    cluster), `nearest_` (row of that most similar earlier item, -1 if none),
    `threshold_`, `epsilon_`, `kept_` and `kept_fraction_`.
    """

    def __init__(self, config: SemDeDupConfig = SemDeDupConfig(), device: Device = CPU):
        self.config, self.device = config, device

    def fit(self, embeddings: np.ndarray, cluster: np.ndarray, distance: np.ndarray) -> SemDeDup:
        """All vectors in memory; `semdedup_stage` streams them a part at a time."""
        n = len(embeddings)
        if not len(cluster) == len(distance) == n:
            raise ValueError(f"{n} embeddings, {len(cluster)} cluster labels, {len(distance)} distances")
        max_similarity = np.full(n, -np.inf, dtype=np.float32)
        nearest = np.full(n, -1, dtype=np.int64)
        for rows in self.groups(cluster, distance):
            if len(rows) > 1:
                max_similarity[rows], nearest[rows] = cluster_similarities(
                    rows, embeddings[rows], self.device, self.config.block_elements
                )
        return self.decide(max_similarity, nearest)

    def groups(self, cluster: np.ndarray, distance: np.ndarray) -> list[np.ndarray]:
        """One array of row numbers per cluster, in keep order."""
        return cluster_groups(keep_order(cluster, distance, self.config.keep, self.config.seed), cluster)

    def decide(self, max_similarity: np.ndarray, nearest: np.ndarray) -> SemDeDup:
        """Threshold and kept rows from every row's max similarity to an earlier
        row of its cluster and that row (what `cluster_similarities` gives)."""
        self.max_similarity_, self.nearest_ = max_similarity, nearest
        self.threshold_ = self._threshold()
        self.epsilon_ = 1.0 - self.threshold_
        self.kept_ = self.max_similarity_ <= self.threshold_
        self.kept_fraction_ = float(self.kept_.mean()) if len(self.kept_) else 1.0
        return self

    def _threshold(self) -> float:
        if self.config.epsilon is not None:
            return 1.0 - self.config.epsilon
        return threshold_for_fraction(self.max_similarity_, self.config.target_fraction)

    def select(self, ids: pa.Array, sources: pa.Array) -> pa.Table:
        """The decision table: one row per input row, in input order."""
        if len(ids) != len(self.kept_) or len(sources) != len(self.kept_):
            raise ValueError(f"{len(ids)} ids and {len(sources)} sources for {len(self.kept_)} fitted rows")
        ids, sources = _flat(ids), _flat(sources)
        root = representatives(self.kept_, self.nearest_)
        followed = np.zeros(len(root), dtype=bool)
        followed[root[~self.kept_]] = True
        reason = np.where(~self.kept_, DUPLICATE, np.where(followed, REPRESENTATIVE, UNIQUE))
        alone = self.kept_ & ~followed
        cluster = pc.take(ids, pa.array(root, mask=alone))  # null when unique
        n = len(root)
        return pa.table(
            [ids, sources, pa.array([STAGE] * n), pa.array(self.kept_), pa.array(reason), cluster],
            schema=DECISION_SCHEMA,
        )


def keep_order(cluster: np.ndarray, distance: np.ndarray, keep: str, seed: int = 0) -> np.ndarray:
    """Row numbers sorted by cluster, then by keep order; ties by row number."""
    rows = np.arange(len(cluster))
    if keep == "hard":
        key = -np.asarray(distance, dtype=np.float64)
    elif keep == "easy":
        key = np.asarray(distance, dtype=np.float64)
    else:
        key = np.random.default_rng(seed).permutation(len(cluster)).astype(np.float64)
    return np.lexsort((rows, key, cluster))


def cluster_groups(order: np.ndarray, cluster: np.ndarray) -> list[np.ndarray]:
    """Split rows (already sorted by cluster) into one array per cluster."""
    labels = np.asarray(cluster)[order]
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    return np.split(order, cuts)


def cluster_similarities(
    rows: np.ndarray, x: np.ndarray, device: Device = CPU, block_elements: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray]:
    """For one cluster's rows in keep order and their vectors: each row's max
    cosine to an earlier row and that row's number (-inf and -1 for the first)."""
    values, nearest = max_similarity_to_earlier(x, device, block_elements)
    return values, np.where(nearest >= 0, rows[np.maximum(nearest, 0)], -1)


def plan_parts(groups: list[np.ndarray], max_rows: int) -> list[list[np.ndarray]]:
    """Consecutive clusters in parts of at most `max_rows` rows; a larger
    cluster is a part of its own. A part's vectors are what a worker holds."""
    parts: list[list[np.ndarray]] = []
    size = 0
    for rows in groups:
        if not parts or size + len(rows) > max_rows:
            parts.append([])
            size = 0
        parts[-1].append(rows)
        size += len(rows)
    return parts


def max_similarity_to_earlier(
    x: np.ndarray, device: Device = CPU, block_elements: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray]:
    """For each row j of unit vectors x: max cosine to rows i < j and its argmax
    (-inf and -1 for row 0). Blocks of rows bound the memory to block_elements."""
    vectors = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device.torch_device)
    m = len(vectors)
    block = max(1, block_elements // m)
    values = torch.empty(m, dtype=torch.float32, device=vectors.device)
    nearest = torch.empty(m, dtype=torch.int64, device=vectors.device)
    columns = torch.arange(m, device=vectors.device)
    for a in range(0, m, block):
        b = min(m, a + block)
        sims = vectors[a:b] @ vectors[:b].T  # float32: thresholds near 1 need the precision
        later = columns[None, :b] >= columns[a:b, None]  # the upper triangle and diagonal
        sims.masked_fill_(later, -torch.inf)
        values[a:b], nearest[a:b] = sims.max(dim=1)
    nearest[values == -torch.inf] = -1
    return values.cpu().numpy(), nearest.cpu().numpy()


def threshold_for_fraction(max_similarity: np.ndarray, fraction: float) -> float:
    """The similarity t such that keeping rows with value <= t keeps the share
    closest to `fraction` (exact up to ties; first-in-cluster rows are -inf)."""
    n = len(max_similarity)
    if n == 0:
        return 1.0
    values = np.sort(max_similarity)
    want = round(fraction * n)
    if want >= n:
        return float(max(values[-1], 1.0))
    floor = int(np.sum(values == -np.inf))  # always kept
    if want <= floor:
        return float(values[floor]) - 1.0 if floor < n else 1.0  # below every finite value
    above = values[want - 1]  # keeps >= want
    keep_above = np.searchsorted(values, above, side="right")
    below_at = np.searchsorted(values, above, side="left")  # keeps below_at < want
    if below_at > floor and (want - below_at) < (keep_above - want):
        return float(values[below_at - 1])
    return float(above)


def representatives(kept: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """For each row, the kept row its chain of nearest earlier items ends at
    (itself when kept). Pointer jumping: about log2(chain length) passes."""
    root = np.where(kept, np.arange(len(kept)), nearest)
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _flat(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())
