"""Decision tables: one row per input id saying whether a stage kept it, and why.

`apply_decisions` streams a documents dataset and its decisions side by side
(both in input order) and writes the kept documents, so memory stays at one
batch whatever the corpus size. `write_stage` writes a stage's whole output
folder: decisions.parquet, documents/ and any other files, committed together
by one manifest written last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import CurationError, IntegrityError
from curation.storage.dataset import Dataset, schema_to_dict, write_dataset
from curation.storage.fs import Location, resolve, write_bytes_atomic
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.lock import output_lock
from curation.storage.manifest import FileEntry, Manifest, write_manifest
from curation.storage.output import clear_output

DECISIONS_FILE = "decisions.parquet"
# One row per input document: what a stage decided about it. `cluster` names
# the document another one stands for (a duplicate's), null where none does.
DECISION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),
        ("kept", pa.bool_()),
        ("reason", pa.string()),
        ("cluster", pa.string()),
    ]
)


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """A table as one Parquet file's bytes; same table, same bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def parquet_entry(name: str, data: bytes) -> tuple[FileEntry, dict[str, str]]:
    """The manifest entry and schema of a Parquet file's bytes."""
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    entry = FileEntry(name, meta.num_rows, len(data), hashlib.sha256(data).hexdigest())
    return entry, schema_to_dict(meta.schema.to_arrow_schema())


def write_decisions(table: pa.Table, path: str | Location) -> FileEntry:
    """One Parquet file, written whole and atomically; same table, same bytes."""
    data = parquet_bytes(table)
    loc = resolve(path)
    write_bytes_atomic(loc, data)
    return FileEntry(loc.path.rsplit("/", 1)[-1], table.num_rows, len(data), hashlib.sha256(data).hexdigest())


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


def align_by_id(
    ids,
    table: pa.Table,
    column: str,
    where,
    unknown_ok: bool = False,
    missing_ok: bool = True,
    same_order: bool = False,
) -> pl.Series:
    """`table[column]` in the order of `ids` (null where `table` has no row for
    an id). Refused, with an error naming `where`: an id listed twice; an id not
    among `ids`, unless `unknown_ok` (a table that covers a superset, e.g. scored
    before dedup); an id with no row, unless `missing_ok`; with `same_order`, any
    table that does not list exactly `ids` in their order (rows matched by position)."""
    if _in_order(ids, table):
        return pl.from_arrow(table.column(column))
    if same_order:
        if table.num_rows != len(ids):
            raise IntegrityError(f"{where}: {table.num_rows} rows, but the documents have {len(ids)}")
        raise IntegrityError(f"{where}: ids differ from the documents' ids (made from other documents?)")
    listed = pl.from_arrow(table.select(["id", column])).with_columns(pl.lit(True).alias("__listed"))
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
    aligned = wanted.join(listed, on="id", how="left").sort("row")
    absent = aligned.filter(pl.col("__listed").is_null())
    if not missing_ok and absent.height:
        raise IntegrityError(f"{where}: {absent.height} documents have no {column}, e.g. {absent['id'][0]!r}")
    return aligned[column]


def _in_order(ids, table: pa.Table) -> bool:
    if table.num_rows != len(ids):
        return False
    listed = table.column("id")
    return (ids if isinstance(ids, pa.ChunkedArray) else pa.chunked_array([ids])).equals(listed)


def check_one_decision_each(documents: Dataset, decisions: pa.Table) -> None:
    """Every input id has exactly one decision, in input order."""
    changed = "did it change while the stage ran? run the stage again"
    if decisions.num_rows != documents.rows:
        count = f"{decisions.num_rows} decisions for its {documents.rows} documents"
        raise IntegrityError(f"{documents.folder}: {count} ({changed})")
    offset = 0
    for batch in documents.iter_batches(["id"], batch_size=65536):
        expected = decisions.column("id").slice(offset, batch.num_rows).combine_chunks()
        if not expected.equals(batch.column("id")):
            raise IntegrityError(
                f"{documents.folder}: decision ids differ from its ids near row {offset} ({changed})"
            )
        offset += batch.num_rows


def apply_decisions(
    documents: Dataset, decisions: pa.Table, out: str | Location, config: dict[str, Any]
) -> Dataset:
    """Write the documents whose decision is `kept` to `out`, streaming."""
    check_one_decision_each(documents, decisions)
    return _write_kept(documents, decisions, out, config)


def _write_kept(
    documents: Dataset, decisions: pa.Table, out: str | Location, config: dict[str, Any]
) -> Dataset:
    kept = decisions.column("kept")

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for batch in documents.iter_batches(batch_size=8192):
            mask = kept.slice(offset, batch.num_rows)
            offset += batch.num_rows
            yield batch.filter(mask.combine_chunks())

    extra = {"report": {"documents": int(pc.sum(kept).as_py() or 0), "input": documents.rows}}
    return write_dataset(out, batches(), DOCUMENTS_SCHEMA, "documents", config, extra)


STAGE_KIND = "decisions"


def write_stage(
    out: str | Location,
    documents: Dataset,
    decisions: pa.Table,
    config: dict[str, Any],
    files: dict[str, bytes] | None = None,
) -> Dataset:
    """A stage's output folder: decisions.parquet, the kept documents under
    documents/, and `files` (e.g. kmq_state.json), committed together.

    The old output's manifest goes first, then its files; the new manifest,
    written last, lists the decisions as its part and everything else as
    sidecars. A run killed in between leaves a folder no reader opens as this
    stage's output, never one run's decisions beside another run's documents."""
    folder = resolve(out)
    inside = folder.path.rstrip("/") + "/"
    if documents.folder.path == folder.path or documents.folder.path.startswith(inside):
        raise CurationError(
            f"{documents.folder}: the input lies inside the output folder {folder}; write elsewhere"
        )
    check_one_decision_each(documents, decisions)
    with output_lock(folder):
        clear_output(folder)
        entry = write_decisions(decisions, folder.join(DECISIONS_FILE))
        kept = _write_kept(documents, decisions, folder.join("documents"), config)
        for name, data in sorted((files or {}).items()):
            write_bytes_atomic(folder.join(name), data)
        extra = {"documents": "documents", "report": kept.manifest.extra["report"]}
        manifest = Manifest(STAGE_KIND, [entry], schema_to_dict(decisions.schema), config, extra)
        write_manifest(folder, manifest)
    return kept
