"""The local engine: parts run in this process, or in a pool of processes.

One process is the default: the compiled kernels, FAISS, torch and the
tokenizer already use every core. `workers=N` spreads parts over N spawned
processes, which helps work that runs on one core (the hashed encoder).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from curation.errors import CurationError

from .base import Engine


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
