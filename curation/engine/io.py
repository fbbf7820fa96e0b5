"""Row ranges of a dataset: which files hold rows [start, stop), and reading just those rows.

A task on another process or node gets plain data (file paths and global row
numbers), opens the files itself and reads only the row groups it needs.
Global row numbers are what makes the distributed stages give the same
answers as the local ones: every document keeps its input position.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

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
    """Rows [start, stop) of the dataset, reading only the row groups that hold them."""
    tables: list[pa.Table] = []
    schema = None
    for span in spans:
        lo, hi = max(start, span.first), min(stop, span.first + span.rows)
        if lo >= hi and schema is not None:
            continue
        loc = resolve(span.uri)
        with loc.fs.open_input_file(loc.path) as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow if columns is None else pa.schema(
                [parquet.schema_arrow.field(c) for c in columns]
            )  # fmt: skip
            if lo >= hi:
                continue
            groups, group_start, offset = [], None, 0
            for g in range(parquet.num_row_groups):
                size = parquet.metadata.row_group(g).num_rows
                if offset + size > lo - span.first and offset < hi - span.first:
                    groups.append(g)
                    group_start = offset if group_start is None else group_start
                offset += size
            table = parquet.read_row_groups(groups, columns=columns)
        tables.append(table.slice(lo - span.first - group_start, hi - lo))
    if not tables:
        return schema.empty_table() if schema is not None else pa.table({})
    return pa.concat_tables(tables).combine_chunks()
