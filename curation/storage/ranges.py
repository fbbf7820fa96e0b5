"""Row ranges of a dataset: which files hold rows [start, stop), and reading just those rows.

A stage cuts its input into row ranges and hands each to the engine as a
part. The part's function, in this process or on another node, gets plain
data (file paths and global row numbers), opens the files itself and reads
only the row groups it needs.
Global row numbers are what makes the distributed stages give the same
answers as the local ones: every document keeps its input position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import IntegrityError
from curation.storage.dataset import Dataset
from curation.storage.fs import Location, resolve


@dataclass(frozen=True)
class FileSpan:
    """One Parquet file of a dataset: where it is and which global rows it holds."""

    uri: str  # an absolute local path or an object-store URI: valid on any node
    first: int  # global row number of the file's first row
    rows: int


@dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of a dataset; `index` orders the ranges."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def portable(loc: Location) -> str:
    """A string that `resolve` turns back into `loc` on any machine (local paths absolute)."""
    return loc.path if loc.is_local else loc.uri


def file_spans(dataset: Dataset) -> list[FileSpan]:
    """The dataset's files for tasks elsewhere, checked here once against the
    manifest (tasks read row groups, not whole files, so they cannot hash them)."""
    dataset.verify(fresh=False)
    spans, first = [], 0
    for entry, loc in zip(dataset.manifest.files, dataset.files(), strict=True):
        spans.append(FileSpan(portable(loc), first, entry.rows))
        first += entry.rows
    return spans


def plan_ranges(spans: list[FileSpan], rows_per_task: int, align: int = 1) -> list[RowRange]:
    """Consecutive ranges of at most `rows_per_task` rows that never cross a file,
    cut at multiples of `align` rows from the file's start (so a task's batches
    of `align` rows are exactly those a reader of the whole file would see)."""
    size = max(align, rows_per_task // align * align)
    ranges: list[RowRange] = []
    for span in spans:
        for offset in range(0, span.rows, size):
            stop = min(offset + size, span.rows)
            ranges.append(RowRange(len(ranges), span.first + offset, span.first + stop))
    return ranges


def read_rows(spans: list[FileSpan], start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
    """Rows [start, stop) of the dataset in one table."""
    batches = list(iter_rows(spans, start, stop, columns))
    schema = batches[0].schema if batches else _schema(spans, columns)
    return pa.Table.from_batches(batches, schema=schema).combine_chunks()


def iter_rows(
    spans: list[FileSpan], start: int, stop: int, columns: list[str] | None = None, batch_size: int = 8192
) -> Iterator[pa.RecordBatch]:
    """Rows [start, stop) in batches of at most `batch_size` rows, reading only the
    row groups that hold them; no batch spans row groups, so a small batch of long
    texts never pulls in more than its own rows."""
    for span in spans:
        lo, hi = max(start, span.first) - span.first, min(stop, span.first + span.rows) - span.first
        if lo < hi:
            yield from _file_rows(span.uri, lo, hi, columns, batch_size)


def _file_rows(uri: str, lo: int, hi: int, columns, batch_size: int) -> Iterator[pa.RecordBatch]:
    loc = resolve(uri)
    try:
        with loc.fs.open_input_file(loc.path) as handle:
            parquet = pq.ParquetFile(handle)
            offset = 0
            for group in range(parquet.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                if offset < hi and offset + size > lo:
                    yield from _group_rows(parquet, group, offset, lo, hi, columns, batch_size)
                offset += size
    except (OSError, pa.ArrowInvalid) as exc:  # changed since the driver checked it
        raise IntegrityError(f"{loc}: unreadable ({exc})") from exc


def _group_rows(parquet, group, offset, lo, hi, columns, batch_size) -> Iterator[pa.RecordBatch]:
    for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
        first, offset = offset, offset + batch.num_rows
        a, b = max(lo, first) - first, min(hi, offset) - first
        if a < b:
            yield batch.slice(a, b - a)


def _schema(spans: list[FileSpan], columns: list[str] | None) -> pa.Schema:
    if not spans:
        return pa.schema([])
    loc = resolve(spans[0].uri)
    with loc.fs.open_input_file(loc.path) as handle:
        schema = pq.ParquetFile(handle).schema_arrow
    return schema if columns is None else pa.schema([schema.field(c) for c in columns])


# ---------------------------------------------------------------- regrouping rows


def spread_name(owner: int, index: int) -> str:
    """The scratch file holding file `index`'s rows that belong to `owner`."""
    return f"o{owner:06d}-f{index:05d}.arrow"


def spread_rows(item: tuple[int, FileSpan, np.ndarray], *, scratch: str, columns: list[str]) -> int:
    """Regroup one file's rows by owner, as the map side of a shuffle through
    storage: file `index`'s rows with `owners >= 0` go to one scratch file per
    owner (global row number plus `columns`). Each file is read once, so a
    stage that regroups rows (SemDeDup by cluster) reads its input once, not
    once per group. Returns the rows written."""
    index, span, owners = item
    table = read_rows([span], span.first, span.first + span.rows, columns)
    table = table.add_column(0, "row", pa.array(np.arange(span.first, span.first + span.rows)))
    chosen = np.flatnonzero(owners >= 0)
    order = chosen[np.argsort(owners[chosen], kind="stable")]
    cuts = np.flatnonzero(np.diff(owners[order])) + 1
    folder = resolve(scratch)
    for rows in np.split(order, cuts) if len(order) else []:
        loc = folder.join(spread_name(int(owners[rows[0]]), index))
        with loc.fs.open_output_stream(loc.path) as out, pa.ipc.new_file(out, table.schema) as writer:
            writer.write_table(table.take(pa.array(rows)))
    return len(order)


def gather_rows(scratch: str, names: list[str]) -> pa.Table:
    """The reduce side: one owner's rows from its scratch files, in row order."""
    folder = resolve(scratch)
    tables = []
    for name in names:
        loc = folder.join(name)
        with loc.fs.open_input_file(loc.path) as handle:
            tables.append(pa.ipc.open_file(handle).read_all())
    table = pa.concat_tables(tables)
    return table.take(pc.sort_indices(table.column("row")))
