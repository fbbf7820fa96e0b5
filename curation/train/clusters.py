"""Validation per cluster, so the trainer can say where the model still has the
most to learn; kMQ's next round reads those scores (cluster_scores.json).

By default each cluster is scored on the documents its select round held out
of the pool (`scoring_split`: fixed by the ids, never selected, so never
trained on). `on="selected"` scores the cluster's selected documents instead,
as the reference does (for-ai/iterative-data-selection, selection/iter.py,
`select_new_iter`: the reward gap on the round's selected examples).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from tokenizers import Tokenizer

from curation.errors import CurationError
from curation.selectors.diversity import HELD_OUT, SCORING_DOCS
from curation.stages import clusters_for, read_kmq_state
from curation.storage import Dataset
from curation.storage.decisions import DECISIONS_FILE, read_id_table
from curation.storage.fs import resolve, write_bytes_atomic
from curation.storage.tokenizer import eos_id

SCORES_FILE = "cluster_scores.json"
SCORE_ON = ("held_out", "selected")


@dataclass(frozen=True)
class ClusterScoring:
    """Which documents score each cluster.

    Fields:
        selection: an output of `select` (its state names the documents and clusters).
        on: "held_out" (the round's scoring split, default) or "selected" (the
            reference's: documents selected so far, which training has seen).
        per_cluster: at most this many documents per cluster.
        seed: which selected documents, when a cluster has more.
    """

    selection: str
    on: str = "held_out"
    per_cluster: int = SCORING_DOCS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.on not in SCORE_ON:
            raise ValueError(f"score on must be one of {SCORE_ON}, got {self.on!r}")
        if self.per_cluster < 1:
            raise ValueError(f"per_cluster must be >= 1, got {self.per_cluster}")


def scoring_documents(scoring: ClusterScoring) -> dict[int, list[str]]:
    """Per cluster, the ids of the documents that score it."""
    state = read_kmq_state(scoring.selection)
    where = resolve(scoring.selection).join(DECISIONS_FILE)
    decisions = read_id_table(where, "decisions", ("kept", "reason"))
    wanted = decisions.column("kept") if scoring.on == "selected" else pc.equal(decisions["reason"], HELD_OUT)
    ids = decisions.filter(wanted).column("id")
    if len(ids) == 0:
        raise CurationError(
            f"{scoring.selection}: no {scoring.on.replace('_', ' ')} documents to score clusters on"
            + (" (select with --rounds > 1 holds some out)" if scoring.on == "held_out" else "")
        )
    cluster = clusters_for(ids, state["clusters"])
    rng = np.random.default_rng(scoring.seed)
    names = ids.to_pylist()
    chosen: dict[int, list[str]] = {}
    for label in np.unique(cluster):
        rows = np.flatnonzero(cluster == label)
        if len(rows) > scoring.per_cluster:
            rows = np.sort(rng.choice(rows, size=scoring.per_cluster, replace=False))
        chosen[int(label)] = [names[r] for r in rows]
    return chosen


def cluster_validation(
    scoring: ClusterScoring, tokenizer: Tokenizer, context: int
) -> dict[int, torch.Tensor]:
    """The scoring documents of each cluster, packed into rows of context + 1 tokens."""
    state = read_kmq_state(scoring.selection)
    table = Dataset.open(state["documents"]).read_table(["id", "text"])
    text_of = dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    eos = eos_id(tokenizer)
    held: dict[int, torch.Tensor] = {}
    for label, ids in scoring_documents(scoring).items():
        stream: list[int] = []
        for doc_id in ids:
            stream += [*tokenizer.encode(text_of[doc_id], add_special_tokens=False).ids, eos]
        held[label] = torch.tensor(_pack(stream, context + 1, eos), dtype=torch.long)
    return held


def _pack(stream: list[int], width: int, pad: int) -> list[list[int]]:
    if len(stream) < width:
        stream = stream + [pad] * (width - len(stream))
    return [stream[i : i + width] for i in range(0, len(stream) - width + 1, width)]


def write_scores(out: Path, by_cluster: dict) -> Path:
    path = out / SCORES_FILE
    ordered = {str(k): v for k, v in sorted(by_cluster.items(), key=lambda kv: int(kv[0]))}
    write_bytes_atomic(resolve(path), json.dumps(ordered).encode())
    return path


def read_scores(path: str | Path, k: int) -> np.ndarray:
    """One score per cluster; clusters the trainer did not see get the mean."""
    scores = {int(c): float(v) for c, v in json.loads(Path(path).read_text()).items()}
    mean = float(np.mean(list(scores.values()))) if scores else 0.0
    return np.array([scores.get(c, mean) for c in range(k)], dtype=np.float64)
