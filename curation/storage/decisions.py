"""Decision tables: one row per input id saying whether a stage kept it, and why.

`apply_decisions` streams a documents dataset and its decisions side by side
(both in input order) and writes the kept documents, so memory stays at one
batch whatever the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import CurationError, IntegrityError
from curation.storage.dataset import Dataset, write_dataset
from curation.storage.fs import Location, resolve, write_bytes_atomic
from curation.storage.ingest import DOCUMENTS_SCHEMA

DECISIONS_FILE = "decisions.parquet"


def write_decisions(table: pa.Table, path: str | Location) -> None:
    """One Parquet file, written whole and atomically; same table, same bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(resolve(path), sink.getvalue().to_pybytes())


def read_decisions(path: str | Location) -> pa.Table:
    loc = resolve(path)
    with loc.fs.open_input_file(loc.path) as handle:
        return pq.read_table(handle)


def read_id_table(path: str | Location, what: str, columns: tuple[str, ...] = ("id",)) -> pa.Table:
    """A Parquet table keyed by id that must hold `columns`; errors name the file."""
    loc = resolve(path)
    if not loc.exists():
        raise CurationError(f"{loc}: no such {what}")
    try:
        table = read_decisions(loc)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CurationError(f"{loc}: not a readable Parquet table ({exc})") from exc
    for name in columns:
        if name not in table.column_names:
            raise CurationError(f"{loc}: has no {name} column (columns: {table.column_names})")
    return table


def align_by_id(ids, table: pa.Table, column: str, where: str, unknown_ok: bool = False) -> pl.Series:
    """`table[column]` in the order of `ids` (null where `table` has no row for
    an id). An id listed twice is refused; so is one not among `ids`, unless
    `unknown_ok` (a table that covers a superset, e.g. scored before dedup)."""
    listed = pl.from_arrow(table.select(["id", column]))
    repeated = listed.filter(pl.col("id").is_duplicated())
    if repeated.height:
        raise CurationError(f"{where}: id {repeated['id'][0]!r} appears more than once")
    wanted = pl.from_arrow(pa.table({"id": ids})).with_row_index("row")
    if not unknown_ok:
        unknown = listed.join(wanted, on="id", how="anti")
        if unknown.height:
            raise CurationError(
                f"{where}: {unknown.height} ids are not in the documents, e.g. {unknown['id'][0]!r}"
            )
    return wanted.join(listed, on="id", how="left").sort("row")[column]


def check_one_decision_each(documents: Dataset, decisions: pa.Table) -> None:
    """Every input id has exactly one decision, in input order."""
    if decisions.num_rows != documents.rows:
        raise IntegrityError(f"{decisions.num_rows} decisions for {documents.rows} documents")
    offset = 0
    for batch in documents.iter_batches(["id"], batch_size=65536):
        expected = decisions.column("id").slice(offset, batch.num_rows).combine_chunks()
        if not expected.equals(batch.column("id")):
            raise IntegrityError(f"decision ids differ from document ids near row {offset}")
        offset += batch.num_rows


def apply_decisions(
    documents: Dataset, decisions: pa.Table, out: str | Location, config: dict[str, Any]
) -> Dataset:
    """Write the documents whose decision is `kept` to `out`, streaming."""
    check_one_decision_each(documents, decisions)
    kept = decisions.column("kept")

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for batch in documents.iter_batches(batch_size=8192):
            mask = kept.slice(offset, batch.num_rows)
            offset += batch.num_rows
            yield batch.filter(mask.combine_chunks())

    extra = {"report": {"documents": int(pc.sum(kept).as_py() or 0), "input": documents.rows}}
    return write_dataset(out, batches(), DOCUMENTS_SCHEMA, "documents", config, extra)
