"""The local engine's frames: what `Frame.group` and the reductions promise."""

from __future__ import annotations

import pyarrow as pa

from curation.engine import LocalEngine, LocalFrame


def make(n: int) -> pa.Table:
    return pa.table({"x": list(range(n)), "key": [n % 2] * n})


def tag(table: pa.Table, step: int) -> pa.Table:
    return table.append_column("y", pa.array([step] * table.num_rows))


def group_size(rows: pa.Table) -> pa.Table:
    return pa.table({"key": [rows.column("key")[0].as_py()], "rows": [rows.num_rows]})


def test_group_calls_the_function_once_per_key_in_key_order_with_all_its_rows():
    frame = LocalEngine().frame(make, [3, 2, 0, 5]).map(tag, step=7).materialize()
    assert frame.count() == 10 and frame.sum("y") == 70
    sizes = frame.group(group_size, "key").collect()
    assert sizes.to_pylist() == [{"key": 0, "rows": 2}, {"key": 1, "rows": 8}]
    assert frame.select(["x"]).collect().column_names == ["x"]


def test_an_empty_frame_collects_to_none():
    empty = LocalFrame([make(0)])
    assert empty.collect() is None
    assert empty.count() == 0 and empty.sum("x") == 0
    assert empty.group(group_size, "key").collect() is None
