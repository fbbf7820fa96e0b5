"""The engine: where per-part work runs. It schedules; it knows no stage.

    from curation.engine import get_engine
    from curation.embeddings import embed_dataset

    with get_engine("ray", ray_address="auto") as engine:
        embed_dataset("data/documents", "data/embeddings", encoder, engine=engine)

A library stage owns its bookkeeping (job fingerprint, resume, lock,
manifest, accounting), cuts its input into parts and calls
`engine.map(fn, parts)`. The local engine runs `fn` in this process (or a
process pool); the Ray engine runs it as Ray tasks, or on actors when the
stage needs per-worker state (an encoder on its GPU, a FAISS index). The
same `fn` runs either way, so outputs are the same bytes.

Stages that group rows by key (dedup's distributed path) build a `Frame`
with `engine.frame(fn, parts)`: a collection of Arrow tables that they map,
regroup by a partition column and reduce. The local engine keeps the tables
in a list in this process; the Ray engine keeps them in Ray's object store
(Ray Data). Either way the stage's functions see whole groups, so the
results are the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pyarrow as pa

from curation.errors import CurationError

ENGINES = ("local", "ray")
RAY_MISSING = (
    "the ray engine needs Ray, which is not installed: pip install 'curation[ray]' (or use engine 'local')"
)
Item = TypeVar("Item")
Result = TypeVar("Result")


class Frame(ABC):
    """A collection of Arrow tables, in memory or spread over a cluster.

    Steps are lazy where the engine allows (Ray); `materialize`, `count`, `sum`
    and `collect` run them. Functions given to `map` and `group` must be
    picklable (module-level functions) and return Arrow tables."""

    @abstractmethod
    def map(self, fn: Callable[..., pa.Table], **kwargs: Any) -> Frame:
        """`fn(table, **kwargs)` for each table (or slice of one): row-wise work."""

    @abstractmethod
    def group(self, fn: Callable[[pa.Table], pa.Table], key: str) -> Frame:
        """Rows regrouped by the integer column `key` (a partition number the
        stage computes); `fn(rows)` once per distinct value, with all its rows."""

    @abstractmethod
    def select(self, columns: list[str]) -> Frame:
        """Only these columns."""

    @abstractmethod
    def materialize(self) -> Frame:
        """Run the steps so far once; later steps start from their output."""

    @abstractmethod
    def count(self) -> int:
        """Rows in all tables."""

    @abstractmethod
    def sum(self, column: str) -> int | float:
        """Sum of a numeric column over all rows (0 when there are none)."""

    @abstractmethod
    def collect(self) -> pa.Table | None:
        """All rows in one table on the caller (None when there are none)."""


class Engine(ABC):
    """Runs per-part functions. Use as a context manager, or call close()."""

    name: str = ""
    distributed: bool = False  # parts may run on other machines (paths must be reachable there)

    @abstractmethod
    def map(
        self,
        fn: Callable[..., Result],
        items: Iterable[Item],
        *,
        setup: Callable[[], Any] | None = None,
        cpus: float = 1,
        gpus: float = 0,
    ) -> Iterator[Result]:
        """`fn(item)` for every item, results in the order of `items`.

        With `setup`, each worker calls `setup()` once and runs `fn(state,
        item)` (an encoder or a FAISS index built once per worker, not once per
        part). `cpus` and `gpus` are what one call needs. `fn` and `setup` must
        be picklable (module-level functions, `functools.partial` of them)."""

    @abstractmethod
    def frame(self, fn: Callable[[Item], pa.Table], items: Iterable[Item], *, cpus: float = 1) -> Frame:
        """A `Frame` of the tables `fn(item)` makes, one task per item (`cpus`
        each); see `Frame`. `fn` must be picklable, as for `map`."""

    @property
    def gpus(self) -> int:
        """GPUs the engine can hand to parts (0: parts run on CPUs)."""
        return 0

    @property
    def slots(self) -> int:
        """How many parts run at once."""
        return 1

    def describe(self) -> str:
        return self.name

    def close(self) -> None:  # noqa: B027 - engines with nothing to release keep this
        """Release what the engine started (nothing for the local engine)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require_ray():
    """The `ray` module, or a CurationError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise CurationError(RAY_MISSING) from exc
    return ray


def get_engine(name: str = "local", ray_address: str | None = None, **options: Any) -> Engine:
    """The engine called `name` ("local" or "ray").

    local: in this process; `workers=N` runs parts in N processes.
    ray: on the cluster at `ray_address` ("auto", "ray://host:10001", ...),
    or on a Ray started here for this process when it is None (or on the Ray
    this process already joined); see `RayEngine` for its options.
    """
    if name == "local":
        if ray_address:
            raise CurationError("ray_address is only for engine 'ray'")
        from .local import LocalEngine

        return LocalEngine(**options)
    if name == "ray":
        require_ray()
        from .ray_engine import RayEngine

        return RayEngine(address=ray_address, **options)
    raise CurationError(f"engine {name!r}: use one of {', '.join(ENGINES)}")


def local_default(engine: Engine | None) -> Engine:
    """The engine a stage was given, or the in-process one."""
    if engine is not None:
        return engine
    from .local import LocalEngine

    return LocalEngine()


@contextmanager
def engine_for(engine: str | Engine | None = "local", ray_address: str | None = None, **options: Any):
    """An engine for a block of work: opened here (and closed after) when given by
    name; an `Engine` already open is used and left open."""
    if isinstance(engine, Engine):
        yield engine
        return
    opened = get_engine(engine or "local", ray_address=ray_address, **options)
    try:
        yield opened
    finally:
        opened.close()
