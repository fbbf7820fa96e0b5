"""The Ray engine: the heavy stages on Ray Data, locally or on an existing cluster.

What runs where (the driver is the process that calls the engine):

- dedup: tasks read row ranges of the documents' Parquet files and compute
  cleaning, fingerprints and MinHash band hashes (`map_batches`). Exact
  groups and LSH buckets are found by shuffling rows by a hash of their key
  (`groupby` on a partition column), which yields star edges. Connected
  components run as large-star / small-star rounds over the edge list, a
  shuffle each, until the list is a set of stars or holds at most
  `local_edges` edges; then the driver joins what is left with union-find.
  The driver holds, as the local engine does, the decision table: ids,
  sources and about 24 bytes per document.
- embeddings: a pool of actors (one per GPU with `num_gpus=1` when the
  cluster has GPUs, else one per worker CPU) encodes whole parts of the
  store and writes them; the driver writes the manifest.
- clusters: tasks read the training sample, the driver fits k-means, the
  centroids go to the object store once and tasks assign whole parts.
- shards: tasks tokenise row ranges; the driver packs the token streams in
  input order (packing is sequential by design: it defines the shards).

Results equal the local engine's: same decisions, vectors, clusters, shards.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.device import CPU, Device
from curation.device import resolve as resolve_device
from curation.embeddings.cluster import ClusterReport, KMeansConfig, KMeansModel
from curation.embeddings.encoders import Encoder
from curation.embeddings.store import EmbeddingStore, EmbedReport
from curation.errors import CurationError
from curation.selectors.dedup import DedupConfig
from curation.storage.dataset import Dataset
from curation.storage.fs import resolve
from curation.storage.shards import ShardConfig

from . import dedup_ops as ops
from .base import Engine, Progress, require_ray
from .common import assign_job, assign_report, assign_with, cluster_with, embed_with, template_encoder
from .io import FileSpan, file_spans, plan_ranges, read_rows
from .tasks import (
    assign_part,
    check_keep,
    embed_part,
    sample_rows,
    split_tokens_tables,
    tokenize_range,
    tokens_table,
    write_shards_from,
)


class RayEngine(Engine):
    """Ray Data engine.

    address: an existing cluster ("auto", "ray://head:10001", ...); None starts
        a Ray for this process with `num_cpus` CPUs (default: all), no
        dashboard, and its temporary files under `temp_dir` (default: a new
        folder in the system temp dir, removed by close()). When Ray is
        already initialised in this process, that Ray is used and left running.
    workers: most tasks or actors a stage runs at once (default: as many as
        the cluster's CPUs allow).
    rows_per_task: documents read by one dedup or tokenisation task.
    rows_per_partition: rows per shuffle partition (bounds a task's memory).
    local_edges: when the fuzzy edge list holds at most this many edges, the
        driver finishes the components with union-find (16 bytes an edge).
    shuffle: Ray Data's shuffle strategy for the groupbys.
    runtime_env: passed to ray.init when connecting to a cluster.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        temp_dir: str | None = None,
        workers: int | None = None,
        rows_per_task: int = 16_384,
        rows_per_partition: int = 2_000_000,
        local_edges: int = 20_000_000,
        shuffle: str = "sort_shuffle_pull_based",
        runtime_env: dict[str, Any] | None = None,
    ):
        for name, value in (("rows_per_task", rows_per_task), ("rows_per_partition", rows_per_partition)):
            if value < 1:
                raise CurationError(f"{name} must be >= 1, got {value}")
        if workers is not None and workers < 1:
            raise CurationError(f"workers must be >= 1, got {workers}")
        self.ray = require_ray()
        self.address, self.workers = address, workers
        self.rows_per_task, self.rows_per_partition = rows_per_task, rows_per_partition
        self.local_edges, self.shuffle = max(0, local_edges), shuffle
        self._owns_ray, self._temp_dir = False, None
        if not self.ray.is_initialized():
            self._start(address, num_cpus, temp_dir, runtime_env)
        self._configure_data()

    # ------------------------------------------------------------ lifecycle

    def _start(self, address, num_cpus, temp_dir, runtime_env) -> None:
        settings: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address:
            settings.update(address=address, runtime_env=runtime_env)
        else:
            if temp_dir is None:
                # Ray's socket paths must stay under ~100 characters: a short folder.
                temp_dir = self._temp_dir = tempfile.mkdtemp(prefix="curation-ray-")
            settings.update(num_cpus=num_cpus or os.cpu_count(), _temp_dir=os.path.abspath(temp_dir))
        self.ray.init(**settings)
        self._owns_ray = True

    def _configure_data(self) -> None:
        from ray.data import DataContext
        from ray.data.context import ShuffleStrategy

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.shuffle_strategy = ShuffleStrategy(self.shuffle)
        for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_ray = False
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        where = self.address or "local Ray"
        gpus = f", {int(resources.get('GPU', 0))} GPU" if resources.get("GPU") else ""
        return f"ray ({where}: {int(resources.get('CPU', 0))} CPU{gpus})"

    @property
    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    @property
    def gpus(self) -> int:
        return int(self.ray.cluster_resources().get("GPU", 0))

    def _slots(self) -> int:
        return min(self.workers or self.cpus, self.cpus)

    # ------------------------------------------------------------ helpers

    def _tasks(self, count: int):
        """A dataset of `count` rows {"i": n}, one per block, so each map call gets one task."""
        import ray.data as rd

        return rd.from_items([{"i": i} for i in range(count)], override_num_blocks=max(count, 1))

    def _map(self, ds, fn, **kwargs):
        return ds.map_batches(fn, batch_format="pyarrow", concurrency=self.workers, **kwargs)

    def _shuffle(self, ds, fn):
        return ds.groupby(ops.PART).map_groups(fn, batch_format="pyarrow")

    def _partitions(self, rows: int) -> int:
        return max(2 * self._slots(), math.ceil(rows / self.rows_per_partition))

    def _collect(self, ds) -> pa.Table:
        tables = [t for t in self.ray.get(ds.to_arrow_refs()) if t.num_rows]
        return pa.concat_tables(tables) if tables else None

    # ------------------------------------------------------------ dedup

    def dedup(
        self, documents, config: DedupConfig, workdir=None, progress: Progress | None = None
    ) -> pa.Table:
        """`run_dedup` on Ray; `workdir` is not used (intermediate data lives in Ray's object store)."""
        if config.verify:
            raise CurationError("dedup with verify=True runs on the local engine only; use engine 'local'")
        data = Dataset.open(documents)
        spans = file_spans(data)
        n = data.rows
        per_task = max(1024, min(self.rows_per_task, math.ceil(n / (4 * self._slots())) or 1))
        ranges = plan_ranges(spans, per_task)
        self.timings: dict[str, float] = {}
        clock = _Clock(self.timings)
        with _unwrapped_errors():
            if not ranges:
                return ops.decide_rows(
                    pa.table({c: [] for c in ops.DOC_COLUMNS}), _no_edges(), _no_edges(), config
                )
            sigs = self._map(
                self._tasks(len(ranges)),
                _signature_task,
                fn_kwargs={"ranges": ranges, "spans": spans, "config": config},
                batch_size=1,
                num_cpus=1,
            ).materialize()
            docs = self._collect(sigs.select_columns(ops.DOC_COLUMNS)).sort_by("row")
            if config.mode == "local":
                ops.check_scopes(docs.column("source"))
            clock("signatures")
            if progress:
                progress("signatures", n)
            eligible = int(pc.sum(docs.column("eligible")).as_py() or 0)
            owners = edges = _no_edges()
            if eligible and (config.exact or config.fuzzy):
                parts = self._partitions(eligible)
                keyed = self._map(sigs, ops.exact_keys, fn_kwargs={"partitions": parts})
                owners = _pairs(self._collect(self._shuffle(keyed, ops.exact_edges)))
                clock("exact")
            if eligible and config.fuzzy:
                parts = self._partitions(eligible * config.bands)
                rows = self._map(sigs, ops.band_rows, fn_kwargs={"bands": config.bands, "partitions": parts})
                buckets = self._shuffle(rows, ops.bucket_edges).materialize()
                clock("lsh")
                edges = self._components(buckets)
                clock("components")
            if progress:
                progress("lsh", n)
            decisions = ops.decide_rows(docs, owners, edges, config)
            clock("decide")
        if progress:
            progress("decide", n)
        return decisions

    def _components(self, edges) -> tuple[np.ndarray, np.ndarray]:
        """Rewrite the edge list with large-star / small-star rounds until it is a
        set of stars (or small enough), then hand it to the driver."""
        self.rounds = 0
        while True:
            count = edges.count()
            if count <= self.local_edges or count == 0:
                break
            parts = self._partitions(2 * count)
            large = self._shuffle(
                self._map(edges, ops.for_large_star, fn_kwargs={"partitions": parts}), ops.large_star
            )
            large = large.materialize()
            small = self._shuffle(
                self._map(large, ops.for_small_star, fn_kwargs={"partitions": parts}), ops.small_star
            )
            small = small.materialize()
            self.rounds += 1
            changed = (large.sum("changed") or 0) + (small.sum("changed") or 0)
            edges = small.select_columns(["u", "v"]).materialize()
            if changed == 0:
                break
        return _pairs(self._collect(edges))

    # ------------------------------------------------------------ embeddings

    def embed(
        self, documents, out, encoder, batch_size=1024, rows_per_part=32_768, dtype="float32", progress=None
    ) -> EmbedReport:
        gpus = self.gpus if not isinstance(encoder, Encoder) else 0
        actors = gpus or self._slots()

        def run(tasks, spans, folder) -> Iterator[dict[str, Any]]:
            ds = self._tasks(len(tasks)).map_batches(
                _EncodeParts,
                batch_format="pyarrow",
                batch_size=1,
                concurrency=min(actors, len(tasks)),
                num_gpus=1 if gpus else 0,
                num_cpus=0 if gpus else 1,
                fn_constructor_kwargs={
                    "encoder": encoder,
                    "gpu": bool(gpus),
                    "tasks": tasks,
                    "spans": spans,
                    "folder": folder,
                    "dtype": dtype,
                    "batch_size": batch_size,
                },
            )
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                yield from table.to_pylist()

        with _unwrapped_errors():
            return embed_with(
                run, documents, out, template_encoder(encoder), batch_size, rows_per_part, dtype, progress
            )

    # ------------------------------------------------------------ clusters

    def cluster(self, embeddings, out, k, config=KMeansConfig(), device: Device = CPU) -> ClusterReport:
        with _unwrapped_errors():
            return cluster_with(
                self._gather, self._assign_run(config, device), embeddings, out, k, config, device
            )

    def assign(self, embeddings, out, model: KMeansModel, config=KMeansConfig(), device: Device = CPU):
        start = time.perf_counter()
        store = EmbeddingStore.open(embeddings)
        folder = resolve(out)
        with _unwrapped_errors():
            job = assign_job(store, model, config)
            sizes = assign_with(self._assign_run(config, device), store, folder, model, job, 0)
        return assign_report(store, folder, model, sizes, start)

    def _gather(self, wanted: list[tuple[FileSpan, np.ndarray]]) -> list[np.ndarray]:
        if not wanted:
            return []
        refs = [self.ray.remote(num_cpus=1)(sample_rows).remote(span, rows) for span, rows in wanted]
        return self.ray.get(refs)

    def _assign_run(self, config: KMeansConfig, device: Device) -> Callable:
        use_gpu = device.is_cuda and self.gpus > 0

        def run(spans, folder, model):
            model_ref = self.ray.put(model)  # the centroids travel once, not once per task
            ds = self._map(
                self._tasks(len(spans)),
                _assign_task,
                batch_size=1,
                fn_kwargs={
                    "spans": spans,
                    "folder": folder,
                    "model": model_ref,
                    "batch_size": config.assign_batch,
                    "device": device if use_gpu else CPU,
                },
                num_cpus=0 if use_gpu else 1,
                num_gpus=1 if use_gpu else 0,
            )
            return self._collect(ds).to_pylist()

        return run

    # ------------------------------------------------------------ shards

    def tokenize(
        self,
        documents,
        out,
        tokenizer,
        config: ShardConfig | None = None,
        keep: np.ndarray | None = None,
        extra=None,
    ) -> dict[str, Any]:
        from ray.data import DataContext

        config = config or ShardConfig()
        dataset = Dataset.open(documents)
        check_keep(dataset, keep)
        spans = file_spans(dataset)
        ranges = plan_ranges(spans, self.rows_per_task, align=config.batch_documents)
        context = DataContext.get_current()
        before = context.execution_options.preserve_order
        context.execution_options.preserve_order = True  # the driver packs in input order
        try:
            with _unwrapped_errors():
                tables: Iterator[pa.Table] = iter(())
                if ranges:
                    ds = self._map(
                        self._tasks(len(ranges)),
                        _tokenize_task,
                        batch_size=1,
                        num_cpus=1,
                        fn_kwargs={
                            "ranges": ranges,
                            "spans": spans,
                            "tokenizer": tokenizer.to_str(),
                            "batch_documents": config.batch_documents,
                            "keep": keep,
                        },
                    )
                    tables = ds.iter_batches(batch_format="pyarrow", batch_size=None)
                return write_shards_from(out, tokenizer, config, split_tokens_tables(tables), extra)
        finally:
            context.execution_options.preserve_order = before


# ---------------------------------------------------------------- remote functions


def _task_cpus() -> int:
    import ray

    try:
        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # not inside a Ray worker
        return 1


@contextmanager
def _kernel_threads():
    """Compiled kernels use the CPUs this task was given, not every core of the node."""
    from curation.selectors.dedup.pipeline import kernel_threads

    with kernel_threads(_task_cpus()):
        yield


def _signature_task(batch: pa.Table, ranges, spans, config: DedupConfig) -> pa.Table:
    out = []
    with _kernel_threads():
        for i in batch.column("i").to_pylist():
            r = ranges[i]
            table = read_rows(spans, r.start, r.stop, ["id", "source", "text"])
            out.append(ops.signature_rows(table, r.start, config))
    return pa.concat_tables(out)


def _assign_task(batch: pa.Table, spans, folder, model, batch_size, device) -> pa.Table:
    import faiss
    import ray

    faiss.omp_set_num_threads(_task_cpus())
    if isinstance(model, ray.ObjectRef):
        model = ray.get(model)
    rows = [
        assign_part(i, spans[i], folder, model, batch_size, device) for i in batch.column("i").to_pylist()
    ]
    return pa.Table.from_pylist(rows)


def _tokenize_task(batch: pa.Table, ranges, spans, tokenizer, batch_documents, keep) -> pa.Table:
    tables = []
    for i in batch.column("i").to_pylist():
        r = ranges[i]
        part = keep[r.start : r.stop] if keep is not None else None
        for number, (docs, tokens) in enumerate(
            tokenize_range(spans, r.start, r.stop, tokenizer, batch_documents, part)
        ):
            tables.append(tokens_table(docs, tokens, i, number))
    if not tables:
        return pa.table({"_task": pa.array([], pa.int64())})
    return pa.concat_tables(tables)


class _EncodeParts:
    """An actor that builds its encoder once (on its GPU when it has one) and encodes parts."""

    def __init__(self, encoder, gpu: bool, tasks, spans, folder, dtype, batch_size):
        device = resolve_device("cuda") if gpu else CPU
        self.encoder = encoder if isinstance(encoder, Encoder) else encoder(device)
        if not gpu:
            import torch

            torch.set_num_threads(_task_cpus())
        self.tasks, self.spans, self.folder = tasks, spans, folder
        self.dtype, self.batch_size = dtype, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [
            embed_part(self.tasks[i], self.spans, self.folder, self.encoder, self.dtype, self.batch_size)
            for i in batch.column("i").to_pylist()
        ]
        return pa.Table.from_pylist(rows)


# ---------------------------------------------------------------- driver helpers


class _Clock:
    """Seconds per step, into `into[step]`."""

    def __init__(self, into: dict[str, float]):
        self.into, self.last = into, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.into[step] = round(now - self.last, 3)
        self.last = now


def _no_edges() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def _pairs(table: pa.Table | None) -> tuple[np.ndarray, np.ndarray]:
    if table is None or table.num_rows == 0:
        return _no_edges()
    return table.column("u").to_numpy(), table.column("v").to_numpy()


@contextmanager
def _unwrapped_errors():
    """A task's error reaches the caller as the error it was, not as a page of Ray wrappers.

    Ray sends a failed task's exception back as text (its chained cause does
    not survive pickling), so the original type and message are read from it:
    a ValueError stays a ValueError (bad input, as the local engine raises
    it), anything else becomes a CurationError naming the original type.
    The Ray exception stays attached as the cause."""
    try:
        yield
    except CurationError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "ray" and not _is_ray_error(exc):
            raise
        found = _task_error(str(exc))
        if found is None:
            raise
        kind, message = found
        if kind == "ValueError":
            raise ValueError(message) from exc
        raise CurationError(f"a Ray task failed: {kind}: {message}") from exc


def _is_ray_error(exc: BaseException) -> bool:
    return any(k.__module__.split(".")[0] == "ray" for k in type(exc).__mro__)


_RAISED = re.compile(r"^(?:[\w]+\.)*(?P<kind>\w+): (?P<message>.+)$", re.MULTILINE)


def _task_error(text: str) -> tuple[str, str] | None:
    """(exception class name, message) of the first error in a Ray task's traceback text."""
    head = text.split("The above exception was the direct cause")[0]
    for match in _RAISED.finditer(head):
        line = match.group(0)
        if line.startswith(" ") or "ray.exceptions" in line:
            continue
        return match.group("kind"), match.group("message")
    return None


__all__ = ["RayEngine"]
