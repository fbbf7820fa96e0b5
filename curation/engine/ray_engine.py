"""The Ray engine: parts run as Ray tasks, or on Ray actors, locally or on a cluster.

`map` sends each part to a 1-CPU task (the function travels once, through
the object store), or, when the stage hands it a `setup`, to a pool of actors
that build their state once: one actor per GPU (`gpus=1`) for encoders when
the cluster has GPUs, else one per worker CPU. Results come back in input
order; at most two parts per slot are in flight, so the driver holds a
bounded number of results.

Dedup's distributed path (shuffles by key and large-star / small-star
rounds over the edge list) runs on Ray Data here until it moves behind
`frame`.
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

from curation import errors
from curation.errors import CurationError
from curation.selectors.dedup import DedupConfig
from curation.selectors.dedup import distributed as ops
from curation.storage.dataset import Dataset
from curation.storage.ranges import file_spans, plan_ranges, read_rows

from .base import Engine, require_ray
from .local import ordered

Progress = Callable[[str, int], None]


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
    distributed = True

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

    @property
    def slots(self) -> int:
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
        return max(2 * self.slots, math.ceil(rows / self.rows_per_partition))

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
        per_task = max(1024, min(self.rows_per_task, math.ceil(n / (4 * self.slots)) or 1))
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

    # ------------------------------------------------------------ parts

    def frame(self, fn, items, *, cpus=1):
        from .ray_frame import RayFrame  # it imports this module

        return RayFrame.build(self, fn, list(items), cpus)

    def map(self, fn, items, *, setup=None, cpus=1, gpus=0) -> Iterator[Any]:
        items = list(items)
        if not items:
            return iter(())
        if setup is None:
            return self._in_tasks(fn, items, cpus, gpus)
        return self._on_actors(fn, items, setup, cpus, gpus)

    def _in_tasks(self, fn, items, cpus, gpus) -> Iterator[Any]:
        call = self.ray.remote(num_cpus=cpus, num_gpus=gpus)(_call)
        fn_ref = self.ray.put(fn)  # sent once, not once per part
        with _unwrapped_errors():
            yield from ordered((call.remote(fn_ref, item) for item in items), 2 * self.slots, self.ray.get)

    def _on_actors(self, fn, items, setup, cpus, gpus) -> Iterator[Any]:
        from ray.util import ActorPool

        room = self.gpus // gpus if gpus else int(self.slots // max(cpus, 1))
        worker = self.ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus)
        actors = [worker.remote(setup) for _ in range(max(1, min(room, len(items))))]
        try:
            with _unwrapped_errors():
                yield from ActorPool(actors).map(lambda actor, item: actor.call.remote(fn, item), items)
        finally:
            for actor in actors:
                self.ray.kill(actor)


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


def _call(fn, item) -> Any:
    _fit_threads()
    return fn(item)


class _Worker:
    """An actor that builds its state once (an encoder, an index) and runs parts with it."""

    def __init__(self, setup):
        _fit_threads()
        self.state = setup()

    def call(self, fn, item) -> Any:
        return fn(self.state, item)


def _fit_threads() -> None:
    """Kernels already loaded use the CPUs this task was given, not every core of the
    node (Ray sets OMP_NUM_THREADS for what loads later)."""
    import sys

    cpus = _task_cpus()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(cpus)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(cpus)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(cpus, numba.config.NUMBA_NUM_THREADS))


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
        if isinstance(getattr(errors, kind, None), type) and issubclass(getattr(errors, kind), CurationError):
            raise getattr(errors, kind)(message) from exc  # a file named in the message stays named
        raise CurationError(f"a Ray task failed: {kind}: {message}") from exc


def _is_ray_error(exc: BaseException) -> bool:
    return any(k.__module__.split(".")[0] == "ray" for k in type(exc).__mro__)


_RAISED = re.compile(r"^(?:[\w]+\.)*(?P<kind>\w+): (?P<message>.+)$", re.MULTILINE)


def _task_error(text: str) -> tuple[str, str] | None:
    """(exception class name, message) of the error a Ray task raised, from its
    traceback text: the last of its chain that is not Ray's own wrapper."""
    found = None
    for segment in text.split("The above exception was the direct cause"):
        for match in _RAISED.finditer(segment):
            line = match.group(0)
            if line.startswith(" ") or "ray.exceptions" in line or match.group("kind").startswith("Ray"):
                continue
            found = match.group("kind"), match.group("message")
            break
    return found


__all__ = ["RayEngine"]
