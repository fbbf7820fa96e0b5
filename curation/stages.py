"""Stages: read a dataset, call a selector, write decisions and the kept documents.

The CLI, the Dagster assets and the demo all run stages through these
functions, so each stage's I/O is written once. Selectors stay pure.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from curation.device import CPU, Device, part_device
from curation.embeddings import (
    EmbeddingStore,
    Encoder,
    HashedEncoder,
    MiniLMEncoder,
    StaticEncoder,
    load_clustered,
    matching_store,
    read_clusters,
)
from curation.embeddings.store import vectors_of
from curation.engine import Engine, engine_for, local_default
from curation.errors import CurationError, IntegrityError
from curation.selectors.dedup import DedupConfig, dedup_documents, summarize_decisions
from curation.selectors.diversity import KMQ, KMQConfig, scoring_split, split_budget
from curation.storage import Dataset, InputSpec, ingest, resolve
from curation.storage.decisions import align_by_id, parquet_bytes, parquet_entry, read_id_table, write_stage
from curation.storage.fs import write_bytes_atomic
from curation.storage.lock import locks_output, output_lock
from curation.storage.manifest import Manifest, write_manifest
from curation.storage.output import clear_output, scratch_folder, shared_scratch
from curation.storage.ranges import (
    FileSpan,
    RowRange,
    file_spans,
    gather_rows,
    plan_ranges,
    portable,
    read_rows,
    spread_name,
    spread_rows,
)
from curation.storage.tokenizer import estimated_tokens

if TYPE_CHECKING:  # torch and matplotlib load only in the stages that use them
    from curation.selectors.quality import PerplexityConfig, QualityConfig, TextSettings
    from curation.selectors.semdedup import SemDeDupConfig

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
    start = time.perf_counter()
    folder = resolve(out)
    # The engine first (a run that cannot start leaves nothing), then the output for the whole run.
    with engine_for(engine, ray_address) as runner, output_lock(folder):
        with scratch_folder(folder) as scratch:
            decisions = dedup_documents(documents, config, scratch, progress, runner)
        summary = summarize_decisions(decisions)
        details = {
            "by_stage_reason": summary["by_stage_reason"],
            "clusters": summary["clusters"],
            "largest_clusters": summary["largest_clusters"],
            "engine": runner.name,
        }
        return _apply(name, documents, out, decisions, {"dedup": asdict(config)}, start, details)


ENCODERS = ("auto", "static", "minilm", "hashed")


def make_encoder(
    name: str,
    device: Device,
    max_tokens: int | None = None,
    max_chars: int | None = None,
    notify: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> Encoder | Callable[[Device], Encoder]:
    """`static` (distilled from MiniLM, built once on first use; `notify` hears
    about the build), `minilm` (all-MiniLM-L6-v2, offline), `hashed` (n-grams,
    lexical, no model), or `auto`: MiniLM on a GPU, static on a CPU, where
    MiniLM manages ~20 docs/s. `max_tokens`/`max_chars` override the encoder's
    window (None: its default; `hashed` reads only `max_chars`).

    For a distributed engine this returns a function of a `Device` instead, so
    each worker loads its own model (on its GPU when it has one) rather than
    receive one; `auto` then means MiniLM when the cluster has GPUs."""
    if name == "auto":
        name = "minilm" if device.is_cuda or (engine is not None and engine.gpus > 0) else "static"
    if name not in ENCODERS:
        raise CurationError(f"encoder {name!r}: use {', '.join(ENCODERS)}")
    built = build_encoder(name, device, max_tokens, max_chars, notify)  # a static model is made here, once
    if engine is None or not engine.distributed:
        return built
    return partial(build_encoder, name, max_tokens=max_tokens, max_chars=max_chars)


def build_encoder(
    name: str,
    device: Device,
    max_tokens: int | None = None,
    max_chars: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> Encoder:
    """The encoder called `name` (not `auto`) on `device`."""
    tokens = {"max_tokens": max_tokens} if max_tokens else {}
    if name == "static":
        return StaticEncoder(max_chars=max_chars, device=device, notify=notify, **tokens)
    if name == "minilm":
        return MiniLMEncoder(device=device, max_chars=max_chars, **tokens)
    return HashedEncoder(**({"max_chars": max_chars} if max_chars else {}))


def encoder_label(encoder: Encoder | Callable[[Device], Encoder]) -> str:
    """An encoder's class name, or the name a worker's factory builds."""
    return type(encoder).__name__ if isinstance(encoder, Encoder) else f"{encoder.args[0]} (built per worker)"


def default_k(rows: int) -> int:
    """About sqrt(n) clusters, at least 2 and at most 4096: small enough to train
    on this many points, large enough that SemDeDup's pairwise work stays small."""
    return int(min(4096, max(2, round(rows**0.5))))


def _apply(
    name: str,
    documents: str,
    out: str,
    decisions: pa.Table,
    settings: dict,
    start: float,
    details: dict,
    files: dict[str, bytes] | None = None,
) -> StageReport:
    data = Dataset.open(documents)
    folder = resolve(out)
    # decisions, documents and `files` of one run, never two (one manifest, written last)
    write_stage(folder, data, decisions, {"stage": name, "input": documents, **settings}, files)
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


SEMDEDUP_PART_ROWS = 262_144  # vectors a SemDeDup part holds (384 dims: 400 MB)


@locks_output("out")
def semdedup_stage(
    documents: str,
    embeddings: str,
    clusters: str,
    out: str,
    config: SemDeDupConfig,
    device: Device = CPU,
    engine: Engine | None = None,
    *,
    rows_per_part: int = SEMDEDUP_PART_ROWS,
) -> StageReport:
    """SemDeDup inside each cluster; decisions and kept documents under `out`.

    The clusters are packed into parts of at most `rows_per_part` rows (a
    larger cluster is a part of its own). `engine` (default: this process)
    first regroups the vectors by part, a shuffle through a scratch folder
    in `out` (each store part is read once and its rows written to one file
    per SemDeDup part), then runs each part: it reads its files and returns
    each row's max similarity to an earlier row of its cluster. Epsilon (fixed
    or for the target fraction) and the decisions are then made here, so they
    are the same on any engine.

    Memory: a worker holds one store part's vectors while regrouping, then
    one part's vectors (at most max(rows_per_part, largest cluster) * dim * 4
    bytes), a copy of the cluster it is on, and one similarity block (at
    most max(config.block_elements, cluster size) * 4 bytes, never more than
    the cluster's size^2 * 4). This process holds ids, sources, cluster
    labels, each row's part and the per-row results (tens of bytes a
    document), never the vectors. I/O: the store is read once; the vectors
    of rows in clusters of two or more are written once and read once."""
    from curation.selectors.semdedup import SemDeDup, plan_parts

    start = time.perf_counter()
    data = load_clustered(documents, clusters)
    store = matching_store(data.ids, embeddings)
    selector = SemDeDup(config, device)
    groups = [rows for rows in selector.groups(data.cluster, data.distance) if len(rows) > 1]
    with shared_scratch(resolve(out)) as scratch:
        max_similarity, nearest = _cluster_similarities(
            local_default(engine), store, plan_parts(groups, rows_per_part), config, device, portable(scratch)
        )
    fitted = selector.decide(max_similarity, nearest)
    decisions = fitted.select(data.ids, data.sources)
    details = {"epsilon": round(float(fitted.epsilon_), 6), "kept_fraction": round(fitted.kept_fraction_, 4)}
    return _apply("semantic_dedup", documents, out, decisions, {"semdedup": asdict(config)}, start, details)


def _cluster_similarities(engine: Engine, store: EmbeddingStore, parts: list, config, device, scratch: str):
    """Every row's max similarity to an earlier row of its cluster, and that row
    (-inf and -1 for the first of a cluster), the parts run by `engine`."""
    files = _spread_by_part(engine, store, parts, scratch)
    on, gpus = part_device(device, engine.gpus, engine.distributed)
    work = partial(semdedup_part, scratch=scratch, device=on, block_elements=config.block_elements)
    max_similarity = np.full(store.rows, -np.inf, dtype=np.float32)
    nearest = np.full(store.rows, -1, dtype=np.int64)
    for rows, values, near in engine.map(
        work, list(zip(files, parts, strict=True)), cpus=1 - gpus, gpus=gpus
    ):
        max_similarity[rows], nearest[rows] = values, near
    return max_similarity, nearest


def _spread_by_part(engine: Engine, store: EmbeddingStore, parts: list, scratch: str) -> list[list[str]]:
    """Write every store part's vectors regrouped by SemDeDup part; the scratch
    files each part will read."""
    owner = np.full(store.rows, -1, dtype=np.int32)
    for number, part in enumerate(parts):
        owner[np.concatenate(part)] = number
    items = [
        (i, span, owner[span.first : span.first + span.rows])
        for i, span in enumerate(file_spans(store.dataset))
    ]
    items = [item for item in items if (item[2] >= 0).any()]
    written = sum(engine.map(partial(spread_rows, scratch=scratch, columns=["embedding"]), items))
    if written != int((owner >= 0).sum()):
        raise IntegrityError(
            f"{store.dataset.folder}: {written} vectors regrouped for {(owner >= 0).sum()} rows"
        )
    files: list[list[str]] = [[] for _ in parts]
    for index, _, owners in items:
        for number in np.unique(owners[owners >= 0]):
            files[number].append(spread_name(int(number), index))
    return files


def semdedup_part(
    item: tuple[list[str], list[np.ndarray]], *, scratch: str, device: Device, block_elements: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One part of SemDeDup: (rows, max similarity to an earlier row, that row)
    for the rows of its clusters, from the part's regrouped vectors."""
    from curation.selectors.semdedup import cluster_similarities

    names, groups = item
    table = gather_rows(scratch, names)
    wanted = table.column("row").to_numpy()
    if not np.array_equal(wanted, np.sort(np.concatenate(groups))):
        raise IntegrityError(f"{scratch}: the regrouped vectors are not this part's rows")
    column = table.column("embedding").combine_chunks()
    vectors = vectors_of(column, column.type.list_size)
    results = [
        cluster_similarities(rows, vectors[np.searchsorted(wanted, rows)], device, block_elements)
        for rows in groups
    ]
    values, near = zip(*results, strict=True)
    return np.concatenate(groups), np.concatenate(values), np.concatenate(near)


@locks_output("out")
def select_stage(
    documents: str,
    clusters: str,
    out: str,
    config: KMQConfig,
    refine_from: str | None = None,
    scores: np.ndarray | None = None,
    quality: str | None = None,
    engine: Engine | None = None,
) -> StageReport:
    """kMQ diversity selection under a budget. `clusters` may cover a superset
    of `documents` (clusters made before semantic dedup): rows are matched by id.
    With unit=tokens a document's cost is `estimated_tokens` of its characters,
    since no tokenizer exists yet at this stage.

    Rounds: `config.budget` is the total over `config.rounds` rounds; this call
    draws the next round's share (`split_budget`). With rounds > 1,
    `config.holdout` documents per cluster (`scoring_split`) are held out of the
    pool so the trainer can score clusters on documents it never trained on.
    Refinement: with `refine_from` (an earlier select output) and per-cluster
    `scores` (e.g. the trainer's cluster_scores.json), the next round is drawn
    from the unselected pool with softmax(scores) cluster weights; kept =
    selected in any round so far.

    Runs on the driver: ids and cluster labels, ~16 bytes a document, and
    O(n) work over them. `engine` is taken so every stage is called alike;
    nothing here is heavy enough to hand it."""
    start = time.perf_counter()
    table = Dataset.open(documents).read_table(["id", "source", "n_chars"])
    ids = table.column("id")
    cluster = clusters_for(ids, clusters)
    tokens = estimated_tokens(table.column("n_chars").to_numpy()) if config.unit == "tokens" else None
    scores_of_docs = read_quality(quality, ids) if quality else None
    held = scoring_split(ids.to_pylist(), cluster, config.holdout) if config.rounds > 1 else None
    kmq = KMQ(config).fit(cluster, quality=scores_of_docs, tokens=tokens, held_out=held)
    shares = split_budget(config.budget, config.rounds)
    if refine_from is None:
        kmq.select(shares[0])
    else:
        _resume(kmq, refine_from, len(cluster))
        if kmq.rounds_done_ >= config.rounds:
            raise CurationError(f"{refine_from}: all {config.rounds} rounds are done (see --rounds)")
        kmq.refine(scores, shares[kmq.rounds_done_])
    decisions = kmq.decisions(ids, table.column("source"))
    hit = len(set(cluster[kmq.selected_].tolist()))
    details = {
        "clusters_hit": hit,
        "clusters": int(kmq.k_),
        "round": kmq.rounds_done_,
        "rounds": config.rounds,
        "held_out": int((kmq.round_ < 0).sum()),
    }
    state = {**kmq.state_dict(), "documents": str(documents), "clusters": str(clusters)}
    extra = {KMQ_STATE: json.dumps(state, default=int).encode()}
    return _apply("diverse_subset", documents, out, decisions, {"kmq": asdict(config)}, start, details, extra)


def _resume(kmq: KMQ, refine_from: str, rows: int) -> None:
    """Load an earlier round's state; its held-out split must be this one."""
    state = read_kmq_state(refine_from)
    if len(state["round"]) != rows:
        raise CurationError(f"{refine_from}: selected from {len(state['round'])} documents, not these")
    held = kmq.round_ < 0
    kmq.load_state_dict(state)
    if not np.array_equal(kmq.round_ < 0, held):
        raise CurationError(f"{refine_from}: held out other documents for scoring (another --holdout?)")


def read_kmq_state(folder: str) -> dict[str, Any]:
    """An earlier select output's state: rounds per document, and the
    documents and clusters it selected from."""
    return json.loads(_read_text(folder))


def read_quality(spec: str, ids: pa.ChunkedArray) -> np.ndarray:
    """Per-document quality scores in `ids` order from a Parquet table: `PATH`
    (columns id, quality), `PATH:COLUMN` (any numeric column, e.g. the quality
    stage's scores.parquet:classifier) or `PATH:-COLUMN` (negated: lower is
    better, e.g. perplexity)."""
    path, column, sign = quality_column(spec)
    table = read_id_table(path, "quality table", ("id", column))
    kind = table.schema.field(column).type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise CurationError(f"{path}: {column} must be numeric, is {kind}")
    quality = sign * align_by_id(ids, table, column, path, unknown_ok=True).cast(pl.Float64).to_numpy()
    unscored = np.flatnonzero(~np.isfinite(quality))  # null became NaN
    if len(unscored):
        first = ids[int(unscored[0])].as_py()
        count = len(unscored)
        raise CurationError(f"{path}: {count} documents have no finite {column} score, e.g. {first!r}")
    return quality


def quality_column(spec: str) -> tuple[str, str, float]:
    """(path, column, sign) of `PATH`, `PATH:COLUMN` or `PATH:-COLUMN`."""
    path, colon, column = spec.rpartition(":")
    if not colon or not path or "/" in column or "\\" in column:
        return spec, "quality", 1.0  # no column named (or the colon of a URI scheme)
    if column.startswith("-"):
        return path, column[1:], -1.0
    return path, column, 1.0


def _read_text(folder: str) -> str:
    if not resolve(folder).join(KMQ_STATE).exists():
        raise CurationError(f"{folder}: no {KMQ_STATE}; refine from the output of an earlier `select`")
    loc = Dataset.open(folder).sidecar(KMQ_STATE)  # the state of the run the folder holds, checked
    with loc.fs.open_input_stream(loc.path) as handle:
        return handle.read().decode()


def clusters_for(ids: pa.ChunkedArray, clusters: str) -> np.ndarray:
    """The cluster of each id, from a clusters dataset that lists them all."""
    found = read_clusters(clusters)
    table = pa.table({"id": found.ids, "cluster": found.cluster})
    return align_by_id(ids, table, "cluster", clusters, unknown_ok=True, missing_ok=False).to_numpy()


QUALITY_PART_ROWS = 8192  # documents a worker measures or scores at once
QUALITY_SCORES = "scores.parquet"
QUALITY_KIND = "quality_scores"
CLASSIFIER_MODEL = "classifier.bin"
SCORED_PLOTS = ("classifier", "perplexity")  # score columns drawn per source


@locks_output("out")
def quality_stage(
    documents: str,
    out: str,
    config: QualityConfig,
    reference: str | None = None,
    device: Device = CPU,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> StageReport:
    """Score every document into `out/scores.parquet` (id, source, one column per
    heuristic signal, failed_rule, and classifier / perplexity when on). With a
    threshold set (`config.decides`), also decisions and the kept documents.
    `reference` (a folder or file of documents, or a documents dataset) trains
    the classifier. Documents dropped by the rules are not model-scored (null).
    Models and plots are made in scratch and committed with the scores by one
    manifest, so the folder never mixes two runs.

    `engine` (default: this process) measures and model-scores the documents
    in row ranges of QUALITY_PART_ROWS; the classifier and the reference model
    are fitted here (one model each) and handed to the workers, so the scores
    are the same on any engine. A worker holds one range's texts and a model;
    this process holds the ids, sources, signals and scores (about 160 bytes a
    document) and the models' training texts."""
    from curation.selectors.quality import decision_table

    start = time.perf_counter()
    if config.classifier is not None and reference is None:
        raise CurationError("the quality classifier needs a reference set of documents")
    data = Dataset.open(documents)
    folder = resolve(out)
    with scratch_folder(folder) as scratch:
        work = Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        runner = local_default(engine)
        files, details, reasons = _score_documents(data, config, reference, device, progress, work, runner)
    details["scores"] = str(folder.join(QUALITY_SCORES))
    details["plots"] = [str(folder.join(name)) for name in sorted(files) if name.startswith("plots/")]
    settings = {"quality": asdict(config)}
    if not config.decides:
        _commit_scores(folder, files, {"stage": "quality", "input": documents, **settings})
        return StageReport("quality", data.rows, data.rows, {}, str(folder), _since(start), details)
    decisions = decision_table(*_ids_and_sources(data), reasons)
    return _apply("quality", documents, out, decisions, settings, start, details, files)


def _score_documents(data: Dataset, config: QualityConfig, reference, device, progress, work: Path, engine):
    """(files to commit, details, drop reason per document) of one quality run."""
    from curation.selectors.quality import ReferenceModel, drop_reasons, load_classifier, rule_reasons

    spans = file_spans(data)  # checked once, read by every pass below
    ranges = plan_ranges(spans, QUALITY_PART_ROWS)
    ids, sources, values = _measure_documents(spans, ranges, config, progress, engine)
    failed = rule_reasons(values, sources.to_numpy(zero_copy_only=False), config)
    pool = np.flatnonzero(failed == "") if config.filter else np.arange(len(failed))
    columns = {"id": ids, "source": sources, **_signal_columns(values), "failed_rule": failed.tolist()}
    details: dict[str, Any] = {"rules_failed": dict(sorted(Counter(failed[failed != ""].tolist()).items()))}
    scores, files = {}, {}
    if reference is not None:
        classifier = _fit_classifier(data, reference, pool, config, work)
        classifier.save(str(work / CLASSIFIER_MODEL))
        files[CLASSIFIER_MODEL] = (work / CLASSIFIER_MODEL).read_bytes()
        # fastText models do not pickle: workers load the saved bytes
        setup = partial(load_classifier, files[CLASSIFIER_MODEL], classifier.config)
        scores["classifier"] = _score_rows(
            data.rows, spans, ranges, pool, "classifier", progress, engine, setup
        )
    if config.perplexity is not None:
        model = _fit_reference_model(data, pool, config.perplexity, work / "perplexity", device)
        on, gpus = part_device(device, engine.gpus, engine.distributed)
        # sent on the CPU (a worker may have no GPU), moved to the worker's device there
        setup = partial(ReferenceModel.on, model.on(CPU), on)
        scores["perplexity"] = _score_rows(
            data.rows, spans, ranges, pool, "perplexity", progress, engine, setup, gpus
        )
        files.update(_reference_model_files(work / "perplexity"))
    names = sources.to_numpy(zero_copy_only=False)
    reasons = drop_reasons(names, failed, config, scores.get("classifier"), scores.get("perplexity"))
    for name, values_of in scores.items():
        columns[name] = pa.array(values_of, mask=np.isnan(values_of))
    files[QUALITY_SCORES] = parquet_bytes(pa.table(columns))
    details["score_summary"] = {n: _summary(s, names) for n, s in scores.items()}
    files.update(_quality_plots(scores, names, reasons == ""))
    return files, details, reasons


def _ids_and_sources(data: Dataset) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    table = data.read_table(["id", "source"])
    return table.column("id"), table.column("source")


def _commit_scores(folder, files: dict[str, bytes], config: dict) -> None:
    """A score-only quality output: the scores as the manifest's part, models and
    plots as sidecars, the manifest last."""
    clear_output(folder)
    for name, body in sorted(files.items()):
        write_bytes_atomic(folder.join(name), body)
    entry, schema = parquet_entry(QUALITY_SCORES, files[QUALITY_SCORES])
    write_manifest(folder, Manifest(QUALITY_KIND, [entry], schema, config))


def _reference_model_files(run: Path) -> dict[str, bytes]:
    """The reference model's weights and tokenizer, kept beside the scores."""
    from curation.train.checkpoint import latest_checkpoint  # train imports this module

    checkpoint = latest_checkpoint(run / "checkpoints")
    return {
        "perplexity/model.safetensors": (checkpoint / "model.safetensors").read_bytes(),
        "perplexity/tokenizer.json": (run / "tokenizer.json").read_bytes(),
    }


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _measure_documents(spans, ranges: list[RowRange], config: QualityConfig, progress, engine: Engine):
    """(ids, sources, signals) of every document, each row range measured by `engine`."""
    from curation.selectors.quality import SIGNALS

    work = partial(measure_part, spans=spans, settings=config.text)
    ids, sources, parts = [], [], []
    for part, (part_ids, part_sources, values) in zip(ranges, engine.map(work, ranges), strict=True):
        ids.append(part_ids)
        sources.append(part_sources)
        parts.append(values)
        if progress:
            progress("rules", part.stop)
    values = np.concatenate(parts) if parts else np.zeros((0, len(SIGNALS)), dtype=np.float32)
    return pa.chunked_array(ids, pa.string()), pa.chunked_array(sources, pa.string()), values


def measure_part(part: RowRange, *, spans: list[FileSpan], settings: TextSettings):
    """(ids, sources, heuristic signals as float32) of one row range."""
    from curation.selectors.quality import measure

    table = read_rows(spans, part.start, part.stop, ["id", "source", "text"])
    values = measure(table.column("text"), settings).astype(np.float32)
    return table.column("id").combine_chunks(), table.column("source").combine_chunks(), values


def _signal_columns(values: np.ndarray) -> dict[str, np.ndarray]:
    from curation.selectors.quality import SIGNALS

    return {name: values[:, i] for i, name in enumerate(SIGNALS)}


def _texts_at(data: Dataset, rows: np.ndarray) -> list[str]:
    """The texts of the given row numbers (sorted), streaming the dataset once."""
    wanted = np.zeros(data.rows, dtype=bool)
    wanted[rows] = True
    texts, offset = [], 0
    for batch in data.iter_batches(["text"], batch_size=8192):
        mask = wanted[offset : offset + batch.num_rows]
        offset += batch.num_rows
        if mask.any():
            texts.extend(batch.column(0).filter(pa.array(mask)).to_pylist())
    return texts


def _sample(rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded sample of `rows` without replacement, in row order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(size, len(rows)), replace=False))


def _score_rows(
    total: int, spans, ranges: list[RowRange], rows: np.ndarray, label, progress, engine, setup, gpus=0
):
    """A model's scores of the given (sorted) rows of `total`, NaN for the others:
    `setup` builds the model once per worker, `engine` scores each row range."""
    out = np.full(total, np.nan)
    cuts = np.searchsorted(rows, [(r.start, r.stop) for r in ranges]).reshape(-1, 2)
    items = [(r, rows[lo:hi]) for r, (lo, hi) in zip(ranges, cuts, strict=True)]
    work = partial(score_part, spans=spans)
    for (part, wanted), scores in zip(
        items, engine.map(work, items, setup=setup, cpus=1 - gpus, gpus=gpus), strict=True
    ):
        out[wanted] = scores
        if progress:
            progress(label, part.stop)
    return out


def score_part(model, item: tuple[RowRange, np.ndarray], *, spans: list[FileSpan]) -> np.ndarray:
    """`model.score` of the texts at the given rows of one row range."""
    part, rows = item
    if not len(rows):
        return np.zeros(0)
    texts = read_rows(spans, part.start, part.stop, ["text"]).column("text")
    return model.score(texts.take(pa.array(rows - part.start)).to_pylist())


def _fit_classifier(data: Dataset, reference: str, pool: np.ndarray, config: QualityConfig, work: Path):
    from curation.selectors.quality import ClassifierConfig, QualityClassifier

    settings = config.classifier or ClassifierConfig()
    positives = reference_texts(reference, work / "reference", settings.max_examples, settings.seed)
    if not len(pool):
        raise CurationError(f"{data.folder}: no documents left to sample negatives from")
    wanted = min(settings.max_examples, math.ceil(settings.negatives_per_positive * len(positives)))
    negatives = _texts_at(data, _sample(pool, wanted, settings.seed))
    return QualityClassifier(settings).fit(positives, negatives)


def reference_texts(reference: str, work: Path, limit: int, seed: int) -> list[str]:
    """Up to `limit` texts (a seeded sample) of a reference set: a documents
    dataset, or files and folders that `ingest` reads (ingested under `work`)."""
    loc = resolve(reference)
    if not loc.exists():
        raise CurationError(f"{reference}: no such reference file or folder")
    if loc.join("manifest.json").exists():
        data = Dataset.open(reference)
    else:
        data = Dataset.open(ingest([InputSpec(reference, source="reference")], str(work)).output)
    if data.rows == 0:
        raise CurationError(f"{reference}: the reference set holds no documents")
    return _texts_at(data, _sample(np.arange(data.rows), limit, seed))


def _fit_reference_model(data: Dataset, pool: np.ndarray, config: PerplexityConfig, work: Path, device):
    if not len(pool):
        raise CurationError(f"{data.folder}: no documents left to train the reference model on")
    from curation.selectors.quality import ReferenceModel

    texts = _texts_at(data, _sample(pool, config.slice_documents, config.seed))
    try:
        return ReferenceModel(config, device).fit(texts, work)
    except ValueError as exc:
        raise CurationError(f"{data.folder}: {exc}") from exc


def _summary(scores: np.ndarray, sources: np.ndarray) -> dict[str, dict[str, float]]:
    """Deciles 10/50/90 and the mean of a score, per source (scored documents only)."""
    out = {}
    for source in np.unique(sources):
        values = scores[(sources == source) & np.isfinite(scores)]
        if len(values):
            p10, p50, p90 = np.percentile(values, [10, 50, 90])
            out[str(source)] = {
                "p10": round(float(p10), 4),
                "p50": round(float(p50), 4),
                "p90": round(float(p90), 4),
                "mean": round(float(values.mean()), 4),
                "n": len(values),
            }
    return out


def _quality_plots(scores: dict, sources: np.ndarray, kept: np.ndarray) -> dict[str, bytes]:
    from curation.plots import score_histograms_png

    return {
        f"plots/{name}.png": score_histograms_png(scores[name], sources, kept, "quality", name)
        for name in SCORED_PLOTS
        if name in scores
    }
