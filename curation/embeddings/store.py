"""The embeddings store: a dataset folder of Parquet parts (id, embedding) plus a manifest.

Part `i` holds the vectors of document rows `[i * rows_per_part, (i + 1) *
rows_per_part)`, in document order, so a part's name says what it covers.
Each part is written whole under a temporary name and renamed, and the
settings of the job go into `_job.json` before the first part: a restarted
job with the same documents and settings keeps the finished parts and
encodes only the rest. The manifest is written last, as for every dataset.

Texts are cut to the encoder's `max_chars` as they are read, in Arrow, so a
part holds at most `rows_per_part * max_chars` characters of text and a long
document never reaches the encoder (or Python) whole: memory is bounded by
the batch, not by the longest document.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.device import CPU, Device
from curation.device import resolve as resolve_device
from curation.embeddings.encoders import Encoder
from curation.engine import Engine, local_default
from curation.errors import CurationError, IntegrityError
from curation.storage.dataset import ROW_GROUP_ROWS, Dataset, clear_dataset, part_name, schema_to_dict
from curation.storage.decisions import parquet_bytes
from curation.storage.fs import Location, remove, resolve, write_bytes_atomic
from curation.storage.lock import output_lock
from curation.storage.manifest import MANIFEST_NAME, FileEntry, Manifest, sha256_of, write_manifest
from curation.storage.output import claim_all, is_temp_name
from curation.storage.ranges import FileSpan, RowRange, file_spans, iter_rows, portable

KIND = "embeddings"
JOB_FILE = "_job.json"
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}

Progress = Callable[[int, int], None]  # (rows done, rows in all)
EncoderFactory = Callable[[Device], Encoder]


def embeddings_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(DTYPES[dtype], dim), nullable=False),
        ]
    )


@dataclass(frozen=True)
class EmbedReport:
    path: str
    rows: int
    dim: int
    parts: int
    parts_reused: int  # finished by an earlier, interrupted run
    encoded: int  # documents encoded by this run
    seconds: float
    encoder: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def embed_dataset(
    documents_path: str | Location,
    out_path: str | Location,
    encoder: Encoder | EncoderFactory,
    batch_size: int = 1024,
    rows_per_part: int = 32_768,
    dtype: str = "float32",
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> EmbedReport:
    """Encode the `text` of every document into `out_path`; resumable, see module doc.

    `batch_size` texts go to the encoder at once (it sorts them by length);
    re-running a finished job with the same inputs is a no-op. Parts are
    encoded by `engine` (default: this process). `encoder` is an encoder, or a
    function of a `Device` that makes one, so that each GPU worker of a Ray
    cluster builds its own on its GPU.
    """
    check_embed_settings(dtype, batch_size, rows_per_part)
    start = time.perf_counter()
    documents = Dataset.open(documents_path)
    folder = resolve(out_path)
    template = encoder if isinstance(encoder, Encoder) else encoder(CPU)
    job = embed_job(documents, template, dtype, rows_per_part)
    # One writer per store: two jobs into one folder used to keep each other's
    # parts; now the second fails clearly (see storage/lock.py).
    with output_lock(folder):
        done = finished_report(folder, job, documents.rows, template, start)
        if done is not None:
            return done
        prepare_store(folder, job)
        work = EmbedWork(portable(folder), dtype, batch_size, rows_per_part)
        rows = _encode_parts(documents, folder, encoder, work, local_default(engine), progress)
        return _write_store_manifest(folder, documents.rows, template, job, dtype, rows, start)


@dataclass(frozen=True)
class EmbedWork:
    """What every part of one embedding job shares (sent with every part: small;
    the encoder goes to each worker once, through the engine's `setup`)."""

    folder: str
    dtype: str
    batch_size: int
    rows_per_part: int

    def parts(self, rows: int) -> list[RowRange]:
        """Part i holds document rows [i * rows_per_part, (i + 1) * rows_per_part)."""
        return [
            RowRange(i, start, min(start + self.rows_per_part, rows))
            for i, start in enumerate(range(0, rows, self.rows_per_part))
        ] or [RowRange(0, 0, 0)]  # an empty corpus still records its schema


def _encode_parts(
    documents, folder, encoder, work: EmbedWork, engine: Engine, progress
) -> list[dict[str, Any]]:
    parts = work.parts(documents.rows)
    claim_all(folder, [part_name(p.index) for p in parts])  # workers write them; this run owns them
    on_gpus = engine.gpus > 0 and not isinstance(encoder, Encoder)
    encode = partial(embed_part, work=work, spans=file_spans(documents))
    setup = partial(worker_encoder, encoder, on_gpus)
    rows, done = [], 0
    for row in engine.map(encode, parts, setup=setup, cpus=0 if on_gpus else 1, gpus=1 if on_gpus else 0):
        rows.append(row)
        done += row["rows"]
        if progress:
            progress(done, documents.rows)
    return rows


def worker_encoder(encoder: Encoder | EncoderFactory, on_gpu: bool) -> Encoder:
    """The encoder a worker uses: the one given, or one built on the worker's GPU."""
    if isinstance(encoder, Encoder):
        return encoder
    return encoder(resolve_device("cuda") if on_gpu else CPU)


def embed_part(encoder: Encoder, part: RowRange, *, work: EmbedWork, spans: list[FileSpan]) -> dict[str, Any]:
    """Encode one part (kept when a finished copy is there) and describe it."""
    loc = resolve(work.folder).join(part_name(part.index))
    reused = part_done(loc, part.rows)
    if not reused:
        max_chars = getattr(encoder, "max_chars", None)
        chunk = _part_texts(spans, part, max_chars)
        write_part(loc, chunk, encoder, embeddings_schema(encoder.dim, work.dtype), work.batch_size)
    return {"index": part.index, "rows": part.rows, "bytes": loc.size(), "sha256": sha256_of(loc),
            "reused": reused}  # fmt: skip


def _part_texts(spans: list[FileSpan], part: RowRange, max_chars: int | None) -> pa.Table:
    """The part's (id, text), texts cut to `max_chars` as they are read."""
    # 64 rows at a time inside each row group: reading a whole row group at once
    # costs about 4.5 times its text before any of it is cut
    batches = [
        pa.RecordBatch.from_arrays(
            [b.column("id"), cut_texts(b.column("text"), max_chars)], names=["id", "text"]
        )
        for b in iter_rows(spans, part.start, part.stop, ["id", "text"], batch_size=64)
    ]
    return pa.Table.from_batches(batches) if batches else _empty_docs()


def _write_store_manifest(folder, rows, encoder, job, dtype, parts, start) -> EmbedReport:
    if sorted(r["index"] for r in parts) != list(range(len(parts))):
        raise CurationError(f"{folder}: parts {sorted(r['index'] for r in parts)} came back")
    entries = [FileEntry(part_name(r["index"]), r["rows"], r["bytes"], r["sha256"]) for r in parts]
    reused = sum(1 for r in parts if r["reused"] and r["rows"])
    encoded = sum(r["rows"] for r in parts if not r["reused"])
    schema = embeddings_schema(encoder.dim, dtype)
    extra = {"dim": encoder.dim, "encoder": encoder.config()}
    write_manifest(folder, Manifest(KIND, entries, schema_to_dict(schema), job, extra))
    return embed_report(folder, rows, encoder, len(entries), reused, encoded, start)


def check_embed_settings(dtype: str, batch_size: int, rows_per_part: int) -> None:
    if dtype not in DTYPES:
        raise CurationError(f"embedding dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if batch_size < 1 or rows_per_part < 1:
        raise CurationError("batch_size and rows_per_part must be positive")


def embed_job(documents: Dataset, encoder: Encoder, dtype: str, rows_per_part: int) -> dict[str, Any]:
    """What identifies a store: parts made by another job are never reused."""
    return {
        "documents": documents.fingerprint(),
        "rows": documents.rows,
        "encoder": encoder.config(),
        "dtype": dtype,
        "rows_per_part": rows_per_part,
    }


def embed_report(folder, rows, encoder, parts, reused, encoded, start) -> EmbedReport:
    seconds = time.perf_counter() - start
    return EmbedReport(str(folder), rows, encoder.dim, parts, reused, encoded, seconds, encoder.config())


def finished_report(
    folder: Location, job: dict[str, Any], rows: int, encoder: Encoder, start: float
) -> EmbedReport | None:
    """The report of a store this very job already finished, else None."""
    if not _finished(folder, job):
        return None
    parts = len(Dataset.open(folder).manifest.files)
    return embed_report(folder, rows, encoder, parts, parts, 0, start)


def _finished(folder: Location, job: dict[str, Any]) -> bool:
    if not folder.join(MANIFEST_NAME).exists():
        return False
    try:
        return Dataset.open(folder).manifest.config == job
    except CurationError:
        return False


def prepare_store(folder: Location, job: dict[str, Any]) -> None:
    """Keep finished parts only when they were made by this very job."""
    encoded = orjson.dumps(job, option=orjson.OPT_SORT_KEYS)
    loc = folder.join(JOB_FILE)
    if loc.exists():
        with loc.fs.open_input_stream(loc.path) as handle:
            if handle.read() == encoded and not folder.join(MANIFEST_NAME).exists():
                _remove_temp_files(folder)
                return
    clear_dataset(folder)
    write_bytes_atomic(loc, encoded)


def _remove_temp_files(folder: Location) -> None:
    """Drop what a killed write left behind (finished parts are never temp files);
    only our own temp names (a `.tmp` file of someone else's stays)."""
    for info in folder.fs.get_file_info(pafs.FileSelector(folder.path)):
        if is_temp_name(info.base_name):
            remove(Location(folder.fs, info.path, info.path))


def cut_texts(texts: pa.Array | pa.ChunkedArray, max_chars: int | None) -> pa.Array | pa.ChunkedArray:
    """The first `max_chars` characters (code points, as Python counts) of every text."""
    return texts if not max_chars else pc.utf8_slice_codeunits(texts, 0, max_chars)


def part_done(loc: Location, rows: int) -> bool:
    if not loc.exists():
        return False
    try:
        with loc.fs.open_input_file(loc.path) as handle:
            return pq.ParquetFile(handle).metadata.num_rows == rows
    except (OSError, pa.ArrowInvalid):
        return False  # unreadable: write it again


def write_part(loc: Location, chunk: pa.Table, encoder: Encoder, schema, batch_size: int) -> None:
    """Encode `chunk`'s texts (already cut to the encoder's window) into part `loc`."""
    texts = chunk.column("text").to_pylist()
    vectors = [encoder.encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
    if matrix.shape != (len(texts), encoder.dim):
        raise CurationError(f"encoder returned shape {matrix.shape} for {len(texts)} texts")
    value_type = schema.field("embedding").type.value_type
    values = pa.array(matrix.astype(value_type.to_pandas_dtype()).ravel(), type=value_type)
    column = pa.FixedSizeListArray.from_arrays(values, encoder.dim)
    table = pa.Table.from_arrays([chunk.column("id").combine_chunks(), column], schema=schema)
    write_bytes_atomic(loc, parquet_bytes(table, ROW_GROUP_ROWS))


def _empty_docs() -> pa.Table:
    return pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})


# ---------------------------------------------------------------- reading


@dataclass
class EmbeddingStore:
    """A finished embeddings dataset; vectors come back as float32."""

    dataset: Dataset

    @classmethod
    def open(cls, path: str | Location) -> EmbeddingStore:
        dataset = Dataset.open(path)
        if dataset.manifest.kind != KIND:
            raise CurationError(f"{dataset.folder}: a {dataset.manifest.kind!r} dataset, not embeddings")
        return cls(dataset)

    @property
    def rows(self) -> int:
        return self.dataset.rows

    @property
    def dim(self) -> int:
        return int(self.dataset.manifest.extra["dim"])

    @property
    def encoder(self) -> dict[str, Any]:
        return dict(self.dataset.manifest.extra.get("encoder", {}))

    def iter_batches(self, batch_size: int = 65_536) -> Iterator[tuple[pa.Array, np.ndarray]]:
        for batch in self.dataset.iter_batches(["id", "embedding"], batch_size=batch_size):
            yield batch.column("id"), vectors_of(batch.column("embedding"), self.dim)

    def read(self) -> tuple[pa.Array, np.ndarray]:
        """All ids and vectors in memory (n * dim * 4 bytes)."""
        ids, blocks = [], []
        for batch_ids, block in self.iter_batches():
            ids.append(batch_ids)
            blocks.append(block)
        if not blocks:
            return pa.array([], pa.string()), np.zeros((0, self.dim), np.float32)
        return pa.concat_arrays(ids), np.concatenate(blocks)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors at sorted row numbers `rows`, streaming (for training samples)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        offset = filled = 0
        for _, block in self.iter_batches():
            end = offset + len(block)
            stop = np.searchsorted(rows, end)
            out[filled:stop] = block[rows[filled:stop] - offset]
            filled, offset = stop, end
        if filled != len(rows):
            raise IntegrityError(f"{self.dataset.folder}: row numbers beyond its {offset} rows")
        return out


def vectors_of(column: pa.FixedSizeListArray, dim: int) -> np.ndarray:
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, dim).astype(np.float32, copy=False)
