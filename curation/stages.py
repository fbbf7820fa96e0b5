"""Stages: read a dataset, call a selector, write decisions and the kept documents.

The CLI, the Dagster assets and the demo all run stages through these
functions, so each stage's I/O is written once. Selectors stay pure.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from curation.device import CPU, Device
from curation.embeddings import (
    Encoder,
    HashedEncoder,
    MiniLMEncoder,
    StaticEncoder,
    load_clustered,
    read_clusters,
)
from curation.engine.base import Engine
from curation.errors import CurationError, IntegrityError
from curation.selectors.dedup import DedupConfig, summarize_decisions
from curation.selectors.diversity import KMQ, KMQConfig
from curation.selectors.semdedup import SemDeDup, SemDeDupConfig
from curation.storage import Dataset, resolve
from curation.storage.decisions import (
    DECISIONS_FILE,
    align_by_id,
    apply_decisions,
    read_id_table,
    write_decisions,
)
from curation.storage.fs import write_bytes_atomic
from curation.storage.lock import output_lock

Progress = Callable[[str, int], None]
KMQ_STATE = "kmq_state.json"


@dataclass
class StageReport:
    stage: str
    docs_in: int
    kept: int
    dropped_by_reason: dict[str, int]
    output: str  # the folder holding decisions.parquet and documents/
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        dropped = sum(self.dropped_by_reason.values())
        if self.docs_in != self.kept + dropped:
            raise AssertionError(f"{self.stage}: {self.docs_in} in != {self.kept} kept + {dropped} dropped")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dropped_by_reason(decisions: pa.Table) -> dict[str, int]:
    reasons = decisions.filter(pa.compute.invert(decisions.column("kept"))).column("reason")
    return dict(sorted(Counter(reasons.to_pylist()).items()))


def dedup_stage(
    documents: str,
    out: str,
    config: DedupConfig,
    progress: Progress | None = None,
    name: str = "dedup",
    engine: str | Engine = "local",
    ray_address: str | None = None,
) -> StageReport:
    """Exact and/or fuzzy dedup of a documents dataset into `out/documents`, on
    the local engine (this process) or Ray: the decisions are identical."""
    from curation.engine.stages import engine_for  # the engines import this module

    start = time.perf_counter()
    folder = resolve(out)
    scratch = folder.join("_work").path if folder.is_local else _local_scratch()
    with engine_for(engine, ray_address) as runner:
        decisions = runner.dedup(documents, config, scratch, progress)
    summary = summarize_decisions(decisions)
    details = {
        "by_stage_reason": summary["by_stage_reason"],
        "clusters": summary["clusters"],
        "largest_clusters": summary["largest_clusters"],
        "engine": runner.name,
    }
    return _apply(name, documents, out, decisions, {"dedup": asdict(config)}, start, details)


def _local_scratch() -> str:
    import tempfile

    return tempfile.gettempdir()


ENCODERS = ("auto", "static", "minilm", "hashed")


def make_encoder(
    name: str,
    device: Device,
    max_tokens: int | None = None,
    max_chars: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> Encoder:
    """`static` (distilled from MiniLM, built once on first use; `notify` hears
    about the build), `minilm` (all-MiniLM-L6-v2, offline), `hashed` (n-grams,
    lexical, no model), or `auto`: MiniLM on a GPU, static on a CPU, where
    MiniLM manages ~20 docs/s. `max_tokens`/`max_chars` override the encoder's
    window (None: its default; `hashed` reads only `max_chars`)."""
    if name == "auto":
        name = "minilm" if device.is_cuda else "static"
    tokens = {"max_tokens": max_tokens} if max_tokens else {}
    if name == "static":
        return StaticEncoder(max_chars=max_chars, device=device, notify=notify, **tokens)
    if name == "minilm":
        return MiniLMEncoder(device=device, max_chars=max_chars, **tokens)
    if name == "hashed":
        return HashedEncoder(**({"max_chars": max_chars} if max_chars else {}))
    raise CurationError(f"encoder {name!r}: use {', '.join(ENCODERS)}")


def default_k(rows: int) -> int:
    """About sqrt(n) clusters, at least 2 and at most 4096: small enough to train
    on this many points, large enough that SemDeDup's pairwise work stays small."""
    return int(min(4096, max(2, round(rows**0.5))))


def _apply(
    name: str, documents: str, out: str, decisions: pa.Table, settings: dict, start: float, details: dict
) -> StageReport:
    data = Dataset.open(documents)
    folder = resolve(out)
    with output_lock(folder):  # decisions and documents of one run, never two
        write_decisions(decisions, folder.join(DECISIONS_FILE))
        apply_decisions(
            data, decisions, folder.join("documents"), {"stage": name, "input": documents, **settings}
        )
    kept = int(pa.compute.sum(decisions.column("kept")).as_py() or 0)
    summary = summarize_decisions(decisions)
    report = StageReport(
        stage=name,
        docs_in=data.rows,
        kept=kept,
        dropped_by_reason=dropped_by_reason(decisions),
        output=str(folder),
        seconds=round(time.perf_counter() - start, 3),
        details={**details, "by_source": summary["by_source"]},
    )
    report.check()
    return report


def semdedup_stage(
    documents: str, embeddings: str, clusters: str, out: str, config: SemDeDupConfig, device: Device = CPU
) -> StageReport:
    """SemDeDup inside each cluster; decisions and kept documents under `out`."""
    start = time.perf_counter()
    data = load_clustered(documents, clusters, embeddings)
    fitted = SemDeDup(config, device).fit(data.embeddings, data.cluster, data.distance)
    decisions = fitted.select(data.ids, data.sources)
    details = {"epsilon": round(float(fitted.epsilon_), 6), "kept_fraction": round(fitted.kept_fraction_, 4)}
    return _apply("semantic_dedup", documents, out, decisions, {"semdedup": asdict(config)}, start, details)


def select_stage(
    documents: str,
    clusters: str,
    out: str,
    config: KMQConfig,
    refine_from: str | None = None,
    scores: np.ndarray | None = None,
    quality: str | None = None,
) -> StageReport:
    """kMQ diversity selection under a budget. `clusters` may cover a superset
    of `documents` (clusters made before semantic dedup): rows are matched by id.
    With unit=tokens a document's cost is estimated as ceil(chars / 4), since
    no tokenizer exists yet at this stage.

    Refinement: with `refine_from` (an earlier select output) and per-cluster
    `scores` (e.g. the trainer's cluster_scores.json), the next round of
    `config.budget` is drawn from the unselected pool with softmax(scores)
    cluster weights; kept = selected in any round so far."""
    start = time.perf_counter()
    table = Dataset.open(documents).read_table(["id", "source", "n_chars"])
    cluster = clusters_for(table.column("id"), clusters)
    tokens = -(-table.column("n_chars").to_numpy() // 4) if config.unit == "tokens" else None
    scores_of_docs = read_quality(quality, table.column("id")) if quality else None
    kmq = KMQ(config).fit(cluster, quality=scores_of_docs, tokens=tokens)
    if refine_from is None:
        kmq.select()
    else:
        state = json.loads(_read_text(refine_from))
        if len(state["round"]) != len(cluster):
            raise CurationError(f"{refine_from}: selected from {len(state['round'])} documents, not these")
        kmq.load_state_dict(state)
        kmq.refine(scores, config.budget)
    decisions = kmq.decisions(table.column("id"), table.column("source"))
    hit = len(set(cluster[kmq.selected_].tolist()))
    details = {"clusters_hit": hit, "clusters": int(kmq.k_), "rounds": int(kmq.round_.max())}
    report = _apply("diverse_subset", documents, out, decisions, {"kmq": asdict(config)}, start, details)
    write_bytes_atomic(resolve(out).join(KMQ_STATE), json.dumps(kmq.state_dict(), default=int).encode())
    return report


def read_quality(path: str, ids: pa.ChunkedArray) -> np.ndarray:
    """Per-document quality scores from a Parquet table (id, quality), in `ids` order."""
    table = read_id_table(path, "quality table", ("id", "quality"))
    kind = table.schema.field("quality").type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise CurationError(f"{path}: quality must be numeric, is {kind}")
    quality = align_by_id(ids, table, "quality", path, unknown_ok=True).cast(pl.Float64).to_numpy()
    unscored = np.flatnonzero(~np.isfinite(quality))  # null became NaN
    if len(unscored):
        first = ids[int(unscored[0])].as_py()
        raise CurationError(f"{path}: {len(unscored)} documents have no finite quality score, e.g. {first!r}")
    return quality


def _read_text(folder: str) -> str:
    loc = resolve(folder).join(KMQ_STATE)
    if not loc.exists():
        raise CurationError(f"{folder}: no {KMQ_STATE}; refine from the output of an earlier `select`")
    with loc.fs.open_input_stream(loc.path) as handle:
        return handle.read().decode()


def clusters_for(ids: pa.ChunkedArray, clusters: str) -> np.ndarray:
    """The cluster of each id, from a clusters dataset that lists them all."""
    found = read_clusters(clusters)
    positions = pa.compute.index_in(ids, value_set=found.ids)
    if positions.null_count:
        raise IntegrityError(
            f"{clusters}: {positions.null_count} documents have no cluster; re-run clustering"
        )
    return found.cluster[positions.to_numpy()]
