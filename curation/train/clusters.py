"""Validation per cluster: a few documents of each k-means cluster, tokenised and
packed like the shards, so the trainer can say where the model still has the
most to learn. kMQ's refinement round reads those scores (cluster_scores.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from curation.stages import clusters_for
from curation.storage import Dataset
from curation.storage.fs import resolve, write_bytes_atomic
from curation.storage.tokenizer import eos_id

SCORES_FILE = "cluster_scores.json"


def cluster_validation(
    documents: str, clusters: str, tokenizer: Tokenizer, context: int, per_cluster: int = 4, seed: int = 0
) -> dict[int, torch.Tensor]:
    """Up to `per_cluster` documents per cluster, packed into rows of context + 1 tokens."""
    table = Dataset.open(documents).read_table(["id", "text"])
    cluster = clusters_for(table.column("id"), clusters)
    texts = table.column("text").to_pylist()
    rng = np.random.default_rng(seed)
    eos = eos_id(tokenizer)
    held: dict[int, torch.Tensor] = {}
    for label in np.unique(cluster):
        rows = rng.permutation(np.flatnonzero(cluster == label))[:per_cluster]
        stream: list[int] = []
        for row in sorted(rows):
            stream += [*tokenizer.encode(texts[row], add_special_tokens=False).ids, eos]
        held[int(label)] = torch.tensor(_pack(stream, context + 1, eos), dtype=torch.long)
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
