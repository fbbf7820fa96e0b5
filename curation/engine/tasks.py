"""Per-part work shared by the engines: encode a part, assign a part, tokenise a range.

Each function takes plain, picklable arguments (paths, row numbers, a model),
does one unit of work and returns what the orchestrating process needs to
write the manifest. They call the library's own writers (`write_part`,
`Assigner`, the shard packer), so every engine writes the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.device import CPU, Device
from curation.embeddings.cluster import CLUSTERS_SCHEMA, Assigner, KMeansModel
from curation.embeddings.encoders import Encoder
from curation.embeddings.store import embeddings_schema, part_done, vectors_of, write_part
from curation.errors import CurationError
from curation.storage.dataset import Dataset
from curation.storage.fs import resolve, write_bytes_atomic
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.lock import output_lock
from curation.storage.manifest import FileEntry, sha256_of
from curation.storage.shards import ShardConfig, write_packed

from .io import FileSpan, read_rows

# ---------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class EmbedTask:
    index: int  # part number: part-{index:05d}.parquet
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.parquet"


def embed_tasks(rows: int, rows_per_part: int) -> list[EmbedTask]:
    """The parts of an embeddings store, as `embed_dataset` lays them out."""
    return [
        EmbedTask(i, start, min(start + rows_per_part, rows))
        for i, start in enumerate(range(0, rows, rows_per_part))
    ]


def embed_part(
    task: EmbedTask, spans: list[FileSpan], folder: str, encoder: Encoder, dtype: str, batch_size: int
) -> dict[str, Any]:
    """Encode one part (skipped when a finished copy is there) and describe it."""
    loc = resolve(folder).join(task.name)
    reused = part_done(loc, task.stop - task.start)
    if not reused:
        chunk = read_rows(spans, task.start, task.stop, ["id", "text"])
        write_part(loc, chunk, encoder, embeddings_schema(encoder.dim, dtype), batch_size)
    return {
        "index": task.index,
        "path": task.name,
        "rows": task.stop - task.start,
        "bytes": loc.size(),
        "sha256": sha256_of(loc),
        "reused": reused,
    }


# ---------------------------------------------------------------- clusters


def sample_rows(span: FileSpan, rows: np.ndarray) -> np.ndarray:
    """The vectors at global rows `rows` (sorted, all inside this embeddings part)."""
    loc = resolve(span.uri)
    with loc.fs.open_input_file(loc.path) as handle:
        table = pq.read_table(handle, columns=["embedding"])
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return vectors_of(column, dim)[np.asarray(rows, np.int64) - span.first]


def assign_part(
    index: int, span: FileSpan, folder: str, model: KMeansModel, batch: int, device: Device = CPU
) -> dict[str, Any]:
    """Nearest centroid of every vector of one embeddings part, written as clusters
    part `index`; the batches are those the local engine searches."""
    source = resolve(span.uri)
    searcher = Assigner(model, device)
    tables = []
    sizes = np.zeros(len(model.centroids), dtype=np.int64)
    with source.fs.open_input_file(source.path) as handle:
        parquet = pq.ParquetFile(handle)
        dim = parquet.schema_arrow.field("embedding").type.list_size
        for part in parquet.iter_batches(batch_size=batch, columns=["id", "embedding"]):
            labels, distance = searcher(vectors_of(part.column("embedding"), dim))
            sizes += np.bincount(labels, minlength=len(sizes))
            tables.append(
                pa.table([part.column("id"), pa.array(labels), pa.array(distance)], schema=CLUSTERS_SCHEMA)
            )
    table = pa.concat_tables(tables) if tables else CLUSTERS_SCHEMA.empty_table()
    name = f"part-{index:05d}.parquet"
    loc = resolve(folder).join(name)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=8192)
    write_bytes_atomic(loc, sink.getvalue().to_pybytes())
    return {
        "index": index,
        "path": name,
        "rows": table.num_rows,
        "bytes": loc.size(),
        "sha256": sha256_of(loc),
        "sizes": sizes.tolist(),
    }


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ---------------------------------------------------------------- tokenisation


def tokenize_range(
    spans: list[FileSpan],
    start: int,
    stop: int,
    tokenizer_json: str,
    batch_documents: int,
    keep: np.ndarray | None,
) -> Iterator[tuple[pa.RecordBatch, list[list[int]]]]:
    """Rows [start, stop) tokenised in the batches `tokenize_batches` makes:
    `batch_documents` rows counted from the start of the file (the range must
    start at such a boundary), rows not kept left out, empty batches skipped."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    table = read_rows(spans, start, stop, DOCUMENTS_SCHEMA.names)
    for offset in range(0, table.num_rows, batch_documents):
        part = table.slice(offset, batch_documents)
        if keep is not None:
            mask = keep[offset : offset + part.num_rows]
            if not mask.any():
                continue
            part = part.filter(pa.array(mask))
        batch = part.combine_chunks().to_batches()[0] if part.num_rows else None
        if batch is None:
            continue
        encodings = encode(batch.column("text").to_pylist(), add_special_tokens=False)
        yield batch, [e.ids for e in encodings]


def tokens_table(batch: pa.RecordBatch, tokens: list[list[int]], task: int, number: int) -> pa.Table:
    """A tokenised batch as one table (documents columns, tokens, and its place)."""
    table = pa.Table.from_batches([batch])
    n = table.num_rows
    return (
        table.append_column("tokens", pa.array(tokens, pa.list_(pa.int64())))
        .append_column("_task", pa.array(np.full(n, task, np.int64)))
        .append_column("_batch", pa.array(np.full(n, number, np.int64)))
    )


def split_tokens_tables(tables: Iterable[pa.Table]) -> Iterator[tuple[pa.RecordBatch, list[list[int]]]]:
    """Undo `tokens_table` over a stream in order, joining batches a block boundary cut."""
    pending: list[pa.Table] = []
    key = None
    for table in tables:
        if table.num_rows == 0:
            continue
        tasks, numbers = table.column("_task").to_numpy(), table.column("_batch").to_numpy()
        cuts = np.flatnonzero((tasks[1:] != tasks[:-1]) | (numbers[1:] != numbers[:-1])) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), table.num_rows], strict=True):
            here = (int(tasks[a]), int(numbers[a]))
            if key is not None and here != key:
                yield _untokens(pa.concat_tables(pending))
                pending = []
            key = here
            pending.append(table.slice(a, b - a))
    if pending:
        yield _untokens(pa.concat_tables(pending))


def _untokens(table: pa.Table) -> tuple[pa.RecordBatch, list[list[int]]]:
    tokens = table.column("tokens").to_pylist()
    docs = table.select(DOCUMENTS_SCHEMA.names).cast(DOCUMENTS_SCHEMA).combine_chunks()
    return docs.to_batches()[0], tokens


def write_shards_from(
    out: str,
    tokenizer,
    config: ShardConfig,
    batches: Iterable[tuple[pa.RecordBatch, list[list[int]]]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`write_shards` with the tokenising done elsewhere: `batches` are the
    (documents batch, token ids) pairs `tokenize_batches` would give, in order."""
    folder = resolve(out)
    with output_lock(folder):
        return write_packed(folder, tokenizer, config, batches, extra)


def check_keep(dataset: Dataset, keep: np.ndarray | None) -> None:
    if keep is not None and len(keep) != dataset.rows:
        raise CurationError(f"{dataset.folder}: keep mask has {len(keep)} rows, the dataset {dataset.rows}")


def file_entries(rows: list[dict[str, Any]]) -> list[FileEntry]:
    return [
        FileEntry(r["path"], r["rows"], r["bytes"], r["sha256"])
        for r in sorted(rows, key=lambda r: r["index"])
    ]
