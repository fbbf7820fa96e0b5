"""The local engine: parts run in this process, or in a pool of processes.

One process is the default: the compiled kernels, FAISS, torch and the
tokenizer already use every core. `workers=N` spreads parts over N spawned
processes, which helps work that runs on one core (the hashed encoder).

A local `Frame` is a list of Arrow tables in this process; `group`
concatenates them and calls the function once per key, in key order.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import CurationError

from .base import Engine, Frame


class LocalEngine(Engine):
    name = "local"

    def __init__(self, workers: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise CurationError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers

    @property
    def slots(self) -> int:
        return self.workers

    def describe(self) -> str:
        return f"local ({self.workers} worker{'s' if self.workers > 1 else ''})"

    def map(self, fn, items, *, setup=None, cpus=1, gpus=0) -> Iterator[Any]:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            return _in_process(fn, items, setup)
        return _in_pool(fn, items, setup, min(self.workers, len(items)))

    def frame(self, fn, items, *, cpus=1) -> LocalFrame:
        return LocalFrame(list(self.map(fn, items)))


class LocalFrame(Frame):
    """Arrow tables in a list; each step runs when it is called."""

    def __init__(self, tables: list[pa.Table]):
        self.tables = tables

    def map(self, fn, **kwargs) -> LocalFrame:
        return LocalFrame([fn(table, **kwargs) for table in self.tables])

    def group(self, fn, key: str) -> LocalFrame:
        rows = self.collect()
        if rows is None:
            return LocalFrame([])
        rows = rows.sort_by(key)  # a stable sort: rows keep their order inside a group
        keys = rows.column(key).to_numpy()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        stops = np.r_[starts[1:], keys.size]
        return LocalFrame([fn(rows.slice(a, b - a)) for a, b in zip(starts, stops, strict=True)])

    def select(self, columns: list[str]) -> LocalFrame:
        return LocalFrame([table.select(columns) for table in self.tables])

    def materialize(self) -> LocalFrame:
        return self

    def count(self) -> int:
        return sum(table.num_rows for table in self.tables)

    def sum(self, column: str) -> int | float:
        return sum(pc.sum(table.column(column)).as_py() or 0 for table in self.tables)

    def collect(self) -> pa.Table | None:
        tables = [table for table in self.tables if table.num_rows]
        return pa.concat_tables(tables) if tables else None


def _in_process(fn, items: list, setup) -> Iterator[Any]:
    state = setup() if setup is not None else None
    for item in items:
        yield fn(state, item) if setup is not None else fn(item)


def _in_pool(fn, items: list, setup, workers: int) -> Iterator[Any]:
    context = multiprocessing.get_context("spawn")  # no forked numba/torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start, initargs=(setup,)) as pool:
        yield from ordered((pool.submit(_call, fn, item) for item in items), 2 * workers, _result)


def ordered(submitted: Iterable, window: int, result: Callable[[Any], Any]) -> Iterator[Any]:
    """Results of submitted work in submission order, at most `window` in flight."""
    pending: deque = deque()
    for handle in submitted:
        pending.append(handle)
        if len(pending) >= window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


def _result(future) -> Any:
    return future.result()


_STATE: dict[str, Any] = {}


def _start(setup: Callable[[], Any] | None) -> None:
    _STATE["state"] = setup() if setup is not None else None
    _STATE["stateful"] = setup is not None


def _call(fn, item) -> Any:
    return fn(_STATE["state"], item) if _STATE["stateful"] else fn(item)
