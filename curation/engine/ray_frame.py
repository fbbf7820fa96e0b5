"""A `Frame` on Ray Data: tables live in Ray's object store (spilled to disk when
full), row-wise steps are `map_batches`, regrouping is a shuffle (`groupby` by
the partition column, then `map_groups`) with the engine's shuffle strategy.

Steps are lazy; `materialize`, `count`, `sum` and `collect` run them, and a
task's error reaches the caller as itself (see `_unwrapped_errors`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .base import Frame
from .ray_engine import RayEngine, _fit_threads, _unwrapped_errors


class RayFrame(Frame):
    def __init__(self, engine: RayEngine, data):
        self.engine, self.data = engine, data

    @classmethod
    def build(cls, engine: RayEngine, fn, items: list, cpus: float) -> RayFrame:
        """One task of `cpus` CPUs per item: a dataset of rows {"i": n}, one per
        block, mapped one row per batch."""
        import ray.data as rd

        index = rd.from_items([{"i": i} for i in range(len(items))], override_num_blocks=max(len(items), 1))
        data = index.map_batches(
            _make,
            batch_format="pyarrow",
            concurrency=engine.workers,
            fn_kwargs={"fn": fn, "items": items},
            batch_size=1,
            num_cpus=cpus,
        )
        return cls(engine, data)

    def map(self, fn, **kwargs: Any) -> RayFrame:
        data = self.data.map_batches(
            fn, batch_format="pyarrow", concurrency=self.engine.workers, fn_kwargs=kwargs
        )
        return RayFrame(self.engine, data)

    def group(self, fn, key: str) -> RayFrame:
        return RayFrame(self.engine, self.data.groupby(key).map_groups(fn, batch_format="pyarrow"))

    def select(self, columns: list[str]) -> RayFrame:
        return RayFrame(self.engine, self.data.select_columns(columns))

    def materialize(self) -> RayFrame:
        with _unwrapped_errors():
            return RayFrame(self.engine, self.data.materialize())

    def count(self) -> int:
        with _unwrapped_errors():
            return self.data.count()

    def sum(self, column: str) -> int | float:
        with _unwrapped_errors():
            return self.data.sum(column) or 0

    def collect(self) -> pa.Table | None:
        with _unwrapped_errors():
            tables = [t for t in self.engine.ray.get(self.data.to_arrow_refs()) if t.num_rows]
        return pa.concat_tables(tables) if tables else None


def _make(batch: pa.Table, fn, items: list) -> pa.Table:
    _fit_threads()
    return pa.concat_tables([fn(items[i]) for i in batch.column("i").to_pylist()])
