"""The Ray engine: parts run as Ray tasks, or on Ray actors, locally or on a cluster.

`map` sends each part to a 1-CPU task (the function travels once, through
the object store), or, when the stage hands it a `setup`, to a pool of actors
that build their state once: one actor per GPU (`gpus=1`) for encoders when
the cluster has GPUs, else one per worker CPU. Results come back in input
order; at most one part per slot (`workers`, or every CPU) is in flight, so
the driver holds a bounded number of results.

`frame` gives a `RayFrame` (ray_frame.py): tables in Ray's object store,
mapped and shuffled with Ray Data, for stages that group rows by key
(dedup's distributed path).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from curation import errors
from curation.errors import CurationError

from .base import Engine, require_ray
from .local import ordered


class RayEngine(Engine):
    """Ray Data engine.

    address: an existing cluster ("auto", "ray://head:10001", ...); None starts
        a Ray for this process with `num_cpus` CPUs (default: all), no
        dashboard, and its temporary files under `temp_dir` (default: a new
        folder in the system temp dir, removed by close()). When Ray is
        already initialised in this process, that Ray is used and left running.
    workers: most tasks or actors a stage runs at once (default: as many as
        the cluster's CPUs allow).
    shuffle: Ray Data's shuffle strategy for `Frame.group`.
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
        shuffle: str = "sort_shuffle_pull_based",
        runtime_env: dict[str, Any] | None = None,
    ):
        if workers is not None and workers < 1:
            raise CurationError(f"workers must be >= 1, got {workers}")
        self.ray = require_ray()
        self.address, self.workers, self.shuffle = address, workers, shuffle
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
            yield from ordered((call.remote(fn_ref, item) for item in items), self.slots, self.ray.get)

    def _on_actors(self, fn, items, setup, cpus, gpus) -> Iterator[Any]:
        from ray.util import ActorPool

        room = self.gpus // gpus if gpus else int(self.slots // max(cpus, 1))
        worker = self.ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus)
        actors = [worker.remote(setup) for _ in range(max(1, min(room, len(items))))]
        try:
            with _unwrapped_errors():
                fn_ref = self.ray.put(fn)  # sent once, not once per part
                yield from ActorPool(actors).map(lambda actor, item: actor.call.remote(fn_ref, item), items)
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


# ---------------------------------------------------------------- errors


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
