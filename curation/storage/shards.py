"""Token shards: documents tokenised, packed into fixed-length sequences, checksummed.

Layout of a shard set folder:

    index.json                     written last and atomically: the set exists once it does
    tokenizer.json                 the tokenizer that made the ids
    shards/<source>/<source>-00000.bin   raw uint16/uint32 tokens, shape (sequences, seq_len)
    text/part-00000.parquet        the same documents as text: plain Parquet, no manifest

Each source has its own shards, so a sampler can mix sources at training
time. Inside a source, documents are concatenated with EOS after each one and
cut into rows of `seq_len` tokens (a model uses row[:-1] as input and row[1:]
as target). A .bin file is `np.memmap(path, dtype).reshape(-1, seq_len)`.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from tokenizers import Tokenizer

from curation import __version__
from curation.engine import Engine, local_default
from curation.errors import CurationError, IntegrityError
from curation.storage.dataset import Dataset, PartWriter
from curation.storage.fs import Location, commit, remove, resolve, temp_sibling, write_bytes_atomic
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.lock import output_lock
from curation.storage.manifest import check_inside, check_seal, check_sha256, seal, sha256_of
from curation.storage.output import SHARD_INDEX, clear_output
from curation.storage.ranges import FileSpan, RowRange, file_spans, plan_ranges, read_rows
from curation.storage.readers import valid_source_name
from curation.storage.tokenizer import (
    TOKENIZER_FILE,
    eos_id,
    save_tokenizer,
    token_dtype,
    tokenizer_hash,
)

SCHEMA_VERSION = 1
INDEX_FILE = SHARD_INDEX
SHARD_DIR = "shards"
TEXT_DIR = "text"
VERIFY_MODES = ("open", "lazy", "none")
_REQUIRED = ("seq_len", "dtype", "eos_id", "sources", "tokenizer")
INDEX_KEYS = (
    "kind",
    "schema_version",
    "created_by",
    "seq_len",
    "dtype",
    "eos_id",
    "vocab_size",
    "tokenizer",
    "config",
    "sources",
    "totals",
    "text",
    "extra",
)  # what `_index` writes, and older indexes had
TOKENIZE_ROWS = 4_096  # documents one engine part tokenises (cut at batch boundaries)
TEXT_SCHEMA = DOCUMENTS_SCHEMA.append(pa.field("n_tokens", pa.int64(), nullable=False))


@dataclass(frozen=True)
class ShardConfig:
    """Fields:
    seq_len: tokens per packed sequence.
    sequences_per_shard: rows per .bin file before a new one starts.
    pad_last: pad each source's last partial sequence with EOS (True) or drop it.
    batch_documents: documents tokenised at once; bounds memory.
    text_copy: also write the documents as plain Parquet under text/.
    """

    seq_len: int = 1024
    sequences_per_shard: int = 32_768
    pad_last: bool = True
    batch_documents: int = 1024
    text_copy: bool = True

    def __post_init__(self) -> None:
        for name in ("seq_len", "sequences_per_shard", "batch_documents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 (input and target), got {self.seq_len}")
        for name in ("pad_last", "text_copy"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass
class ShardEntry:
    path: str  # relative to the shard set folder
    source: str
    sequences: int
    tokens: int  # document tokens, EOS included
    padding: int  # EOS padding at the end of the source's last sequence
    bytes: int
    sha256: str
    source_counts: dict[str, int]  # documents that end in this shard, by source


@dataclass
class SourceTotals:
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    padding: int = 0
    dropped_tokens: int = 0  # the partial last sequence, when pad_last is False
    shards: list[ShardEntry] = field(default_factory=list)


class _SourceWriter:
    """Packs one source's token stream into rows and rolls .bin files."""

    def __init__(self, folder: Location, source: str, config: ShardConfig, dtype: np.dtype):
        self.folder, self.source, self.config, self.dtype = folder, source, config, dtype
        self.totals = SourceTotals()
        self.pending = np.empty(0, dtype=dtype)  # fewer than seq_len tokens between calls
        self.doc_ends: list[np.ndarray] = []  # stream positions of documents' EOS, not yet counted
        self.stream = 0  # tokens received so far
        self._file = None

    def add(self, tokens: np.ndarray, doc_lengths: np.ndarray) -> None:
        self.doc_ends.append(self.stream + np.cumsum(doc_lengths) - 1)
        self.stream += len(tokens)
        self.totals.documents += len(doc_lengths)
        data = np.concatenate([self.pending, tokens.astype(self.dtype, copy=False)])
        full = len(data) // self.config.seq_len * self.config.seq_len
        self._write_rows(data[:full].reshape(-1, self.config.seq_len))
        self.pending = data[full:]

    def finish(self, eos: int) -> SourceTotals:
        if len(self.pending):
            if self.config.pad_last:
                pad = self.config.seq_len - len(self.pending)
                row = np.concatenate([self.pending, np.full(pad, eos, dtype=self.dtype)])
                self._write_rows(row.reshape(1, -1), padding=pad)
            else:
                self.totals.dropped_tokens = len(self.pending)
        self._close()
        return self.totals

    def _write_rows(self, rows: np.ndarray, padding: int = 0) -> None:
        start = 0
        while start < len(rows):
            if self._file is None:
                self._open()
            room = self.config.sequences_per_shard - self._rows
            chunk = rows[start : start + room]
            data = chunk.tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._rows += len(chunk)
            start += len(chunk)
            if start == len(rows):
                self._padding += padding  # padding only ever sits in the last row
            if self._rows == self.config.sequences_per_shard:
                self._close()

    def _shard_name(self) -> str:
        return f"{SHARD_DIR}/{self.source}/{self.source}-{len(self.totals.shards):05d}.bin"

    def _open(self) -> None:
        final = self.folder.join(self._shard_name())
        Location(final.fs, final.path.rsplit("/", 1)[0], "").mkdir()
        self._tmp = temp_sibling(final)
        self._file = self._tmp.fs.open_output_stream(self._tmp.path)
        self._hash = hashlib.sha256()
        self._rows = 0
        self._padding = 0

    def _close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        name = self._shard_name()
        final = self.folder.join(name)
        commit(self._tmp, final)
        self.totals.shards.append(self._entry(name, final.size()))
        self._file = None

    def _entry(self, name: str, size: int) -> ShardEntry:
        slots = self._rows * self.config.seq_len
        first = sum(s.sequences for s in self.totals.shards) * self.config.seq_len
        ends = np.concatenate(self.doc_ends) if self.doc_ends else np.empty(0, dtype=np.int64)
        inside = (ends >= first) & (ends < first + slots)
        self.doc_ends = [ends[ends >= first + slots]]
        self.totals.sequences += self._rows
        self.totals.tokens += slots - self._padding
        self.totals.padding += self._padding
        return ShardEntry(
            path=name,
            source=self.source,
            sequences=self._rows,
            tokens=slots - self._padding,
            padding=self._padding,
            bytes=size,
            sha256=self._hash.hexdigest(),
            source_counts={self.source: int(inside.sum())},
        )

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            remove(self._tmp)
            self._file = None


def write_shards(
    documents: str | Location | Dataset,
    out: str | Location,
    tokenizer: Tokenizer,
    config: ShardConfig | None = None,
    keep: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Tokenise the documents (those where `keep` is true, if given) into a shard set
    at `out`; returns the index, which is written last. The engine tokenises row
    ranges; this process packs them in input order (packing defines the shards)."""
    config = config or ShardConfig()
    dataset = documents if isinstance(documents, Dataset) else Dataset.open(documents)
    if keep is not None and len(keep) != dataset.rows:
        raise CurationError(f"{dataset.folder}: keep mask has {len(keep)} rows, the dataset {dataset.rows}")
    folder = resolve(out)
    # One writer per shard set: two runs into one folder used to interleave their
    # clears and shards; now the second fails clearly (see storage/lock.py).
    with output_lock(folder):
        return write_shards_unlocked(dataset, folder, tokenizer, config, keep, extra, engine)


def write_shards_unlocked(
    dataset: Dataset,
    folder: Location,
    tokenizer: Tokenizer,
    config: ShardConfig,
    keep: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """`write_shards` for a caller that already holds `output_lock(folder)`."""
    batches = tokenize_batches(dataset, tokenizer, config.batch_documents, keep, engine)
    return write_packed(folder, tokenizer, config, batches, extra)


def write_packed(
    folder: Location,
    tokenizer: Tokenizer,
    config: ShardConfig,
    batches: Iterable[tuple[pa.RecordBatch, list[list[int]]]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pack already tokenised (documents batch, token ids) pairs, in order, into
    the shard set at `folder` (lock held by the caller); the index goes last.
    Tokenising runs on the engine; packing is sequential, here."""
    clear_shard_set(folder)
    dtype, eos = token_dtype(tokenizer), eos_id(tokenizer)
    writers: dict[str, _SourceWriter] = {}
    text = PartWriter(folder.join(TEXT_DIR), TEXT_SCHEMA) if config.text_copy else None
    try:
        for batch, tokens in batches:
            _pack_batch(batch, tokens, eos, writers, folder, config, dtype)
            if text is not None:
                lengths = pa.array([len(t) for t in tokens], pa.int64())
                text.write(pa.Table.from_batches([batch]).append_column("n_tokens", lengths))
        totals = {name: w.finish(eos) for name, w in sorted(writers.items())}
        text_files = text.close() if text is not None else []
    except BaseException:
        for writer in writers.values():
            writer.abort()
        if text is not None:
            text.abort()
        raise
    save_tokenizer(tokenizer, folder.join(TOKENIZER_FILE))
    index = _index(tokenizer, config, dtype, totals, text_files, extra or {})
    write_bytes_atomic(folder.join(INDEX_FILE), index_bytes(index))
    return index


def index_bytes(index: dict[str, Any]) -> bytes:
    """index.json's bytes, sealed with a checksum of its content (read_index checks it)."""
    return seal(index, orjson.OPT_INDENT_2)


def tokenize_batches(
    dataset: Dataset,
    tokenizer: Tokenizer,
    batch_documents: int,
    keep: np.ndarray | None = None,
    engine: Engine | None = None,
) -> Iterator[tuple[pa.RecordBatch, list[list[int]]]]:
    """(documents batch, token ids per document) in input order, rows not kept
    skipped; ranges of rows are tokenised by the engine, a few at a time."""
    spans = file_spans(dataset)
    ranges = plan_ranges(spans, TOKENIZE_ROWS, align=batch_documents)
    work = partial(tokenize_range, spans=spans, tokenizer=tokenizer.to_str(), batch_documents=batch_documents)
    parts = [(r, None if keep is None else keep[r.start : r.stop]) for r in ranges]
    for pairs in local_default(engine).map(work, parts):
        yield from pairs


def tokenize_range(
    part: tuple[RowRange, np.ndarray | None], *, spans: list[FileSpan], tokenizer: str, batch_documents: int
) -> list[tuple[pa.RecordBatch, list[list[int]]]]:
    """One range's (batch, token ids) pairs, in batches of `batch_documents` rows
    counted from the start of its file (ranges start at such a boundary)."""
    rows, keep = part
    model = Tokenizer.from_str(tokenizer)
    # encode_batch_fast skips offsets we never use; older tokenizers lack it.
    encode = getattr(model, "encode_batch_fast", model.encode_batch)
    table = read_rows(spans, rows.start, rows.stop, DOCUMENTS_SCHEMA.names)
    out = []
    for offset in range(0, table.num_rows, batch_documents):
        batch = table.slice(offset, batch_documents)
        if keep is not None:
            mask = keep[offset : offset + batch.num_rows]
            if not mask.any():
                continue
            batch = batch.filter(pa.array(mask))
        # a copy, not a slice: a pickled slice carries its whole range's buffers
        batch = batch.take(pa.array(np.arange(batch.num_rows))).combine_chunks().to_batches()[0]
        encodings = encode(batch.column("text").to_pylist(), add_special_tokens=False)
        out.append((batch, [e.ids for e in encodings]))
    return out


def _pack_batch(batch, tokens, eos, writers, folder, config, dtype) -> None:
    sources = np.asarray(batch.column("source").to_numpy(zero_copy_only=False))
    for source in np.unique(sources):
        rows = np.flatnonzero(sources == source)
        lengths = np.array([len(tokens[r]) + 1 for r in rows], dtype=np.int64)
        flat = np.fromiter(
            itertools.chain.from_iterable(itertools.chain(tokens[r], (eos,)) for r in rows),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        name = str(source)
        if name not in writers:
            _check_source_name(name)
            writers[name] = _SourceWriter(folder, name, config, dtype)
        writers[name].add(flat, lengths)


def _check_source_name(source: str) -> None:
    # Source names become folder names; ingest accepts only these.
    if not valid_source_name(source):
        raise CurationError(
            f"source name {source[:120]!r} cannot name a shard folder; use letters, digits, . _ - "
            "(at most 200 characters)"
        )


def _index(tokenizer, config, dtype, totals, text_files, extra) -> dict[str, Any]:
    sources = {name: asdict(t) for name, t in totals.items()}
    keys = ("documents", "sequences", "tokens", "padding", "dropped_tokens")
    return {
        "kind": "shards",
        "schema_version": SCHEMA_VERSION,
        "created_by": f"curation {__version__}",
        "seq_len": config.seq_len,
        "dtype": dtype.name,
        "eos_id": eos_id(tokenizer),
        "vocab_size": tokenizer.get_vocab_size(),
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": tokenizer_hash(tokenizer)},
        "config": asdict(config),
        "sources": sources,
        "totals": {k: sum(s[k] for s in sources.values()) for k in keys},
        "text": {"folder": TEXT_DIR, "files": [asdict(f) for f in text_files]},
        "extra": extra,
    }


def clear_shard_set(folder: Location) -> None:
    """Make room for a new set (the caller holds `output_lock`): the index goes
    first, so no reader trusts half-replaced shards, then only the files the old
    index lists. Other files under shards/ and text/ used to be removed too."""
    clear_output(folder)


def read_index(folder: Location) -> dict[str, Any]:
    loc = folder.join(INDEX_FILE)
    if not loc.exists():
        hint = " (an unfinished or interrupted write?)" if folder.exists() else ""
        raise CurationError(f"{folder}: no {INDEX_FILE}, so not a finished shard set{hint}")
    with loc.fs.open_input_stream(loc.path) as handle:
        data = handle.read()
    try:
        index = orjson.loads(data)
        version = int(index["schema_version"])
        missing = [key for key in _REQUIRED if key not in index]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{loc}: index is unreadable or incomplete ({exc})") from exc
    if missing:
        raise IntegrityError(f"{loc}: index is incomplete, missing {missing}")
    try:  # every file it names must lie inside the set: refuse `../x` or `/x`
        paths = [e["path"] for s in index["sources"].values() for e in s["shards"]]
        paths += [f["path"] for f in index.get("text", {}).get("files", [])]
    except (AttributeError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{loc}: index is unreadable or incomplete ({exc})") from exc
    check_inside(str(loc), paths)
    if version > SCHEMA_VERSION:
        raise CurationError(
            f"{loc}: shard index schema version {version} is newer than this curation "
            f"understands ({SCHEMA_VERSION}); upgrade curation"
        )
    check_seal(index, orjson.OPT_INDENT_2, str(loc), INDEX_KEYS)
    return index


def verify_shard_set(path: str | Location) -> ShardReader:
    """Check a whole shard set against index.json: every shard, the tokenizer and
    the Parquet text copy (what `curation info --verify` does)."""
    reader = ShardReader(path, verify="none")
    reader.verify()
    reader.tokenizer()
    text = reader.index.get("text") or {}
    for entry in text.get("files", []):
        loc = reader.folder.join(text["folder"], entry["path"])
        check_sha256(loc, entry["sha256"], INDEX_FILE, fresh=True)
    return reader


class ShardReader:
    """Opens a finished shard set and reads sequences by (source, index).

    verify: "open" checks every shard's sha256 now; "lazy" checks each shard
    the first time it is read; "none" checks only file sizes (always done).
    A shard whose bytes differ from index.json is refused with IntegrityError.
    """

    def __init__(self, path: str | Location, verify: str = "open"):
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        self.folder = resolve(path)
        if not self.folder.is_local:
            raise CurationError(f"{self.folder}: shards are memory-mapped, so they must be on a local disk")
        self.index = read_index(self.folder)
        try:  # a damaged index without a checksum must still fail as IntegrityError
            self.seq_len = int(self.index["seq_len"])
            self.dtype = np.dtype(self.index["dtype"])
            self.eos_id = int(self.index["eos_id"])
            self.sources = sorted(self.index["sources"])
            self._shards = {
                s: [ShardEntry(**e) for e in self.index["sources"][s]["shards"]] for s in self.sources
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{self.folder.join(INDEX_FILE)}: index is malformed ({exc})") from exc
        self.verify_mode = verify
        self._starts = {s: np.cumsum([0] + [e.sequences for e in self._shards[s]]) for s in self.sources}
        self._counts = {s: int(starts[-1]) for s, starts in self._starts.items()}
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        self._counts_by_list: dict[tuple[str, ...], np.ndarray] = {}
        self._scratch = np.empty((0, self.seq_len), dtype=self.dtype)
        self._verified: set[str] = set()
        self._check_sizes()
        if verify == "open":
            self.verify()

    def num_sequences(self, source: str) -> int:
        return self._counts[self._source(source)]

    def get(self, source: str, index: int) -> np.ndarray:
        """Sequence `index` of `source`: a read-only (seq_len,) view of the shard."""
        starts = self._starts[self._source(source)]
        if not 0 <= index < starts[-1]:
            raise IndexError(f"source {source!r} has {starts[-1]} sequences, asked for {index}")
        shard = bisect.bisect_right(starts, index) - 1
        return self._map(source, shard)[index - starts[shard]]

    def get_many(self, source: str, indices: np.ndarray) -> np.ndarray:
        """Sequences `indices` of `source`, copied into one (len, seq_len) array."""
        indices = np.asarray(indices, dtype=np.int64)
        count = self.num_sequences(source)
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise IndexError(f"source {source!r} has {count} sequences; index out of range")
        out = np.empty((len(indices), self.seq_len), dtype=self.dtype)
        self._copy_rows(source, indices, out)
        return out

    def read_batch(self, sources: list[str], source_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Rows for a sampler's draw: row j is sequence `indices[j]` of `sources[source_ids[j]]`.

        Any shape: a Batch's (batch,) arrays give (batch, seq_len), a Block's
        (steps, batch) arrays give (steps, batch, seq_len)."""
        shape = np.shape(indices)
        ids = np.asarray(source_ids).ravel()
        wanted = np.asarray(indices, dtype=np.int64).ravel()
        counts = self._source_counts(tuple(sources))
        if len(wanted) and (wanted.min() < 0 or np.any(wanted >= counts[ids])):
            raise IndexError(f"{self.folder}: a batch index is past the end of its source")
        out = np.empty((len(wanted), self.seq_len), dtype=self.dtype)
        grouped = len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1]))
        # Ungrouped (a Block: grouped per step only): copy in source order, then put rows in place.
        order = None if grouped else np.argsort(ids, kind="stable")
        target = out if grouped else self._scratch_rows(len(wanted))
        if not grouped:
            ids, wanted = ids[order], wanted[order]
        cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]
        for a, b in itertools.pairwise(cuts):
            self._copy_rows(sources[ids[a]], wanted[a:b], target[a:b])
        if not grouped:
            out[order] = target
        return out.reshape(*shape, self.seq_len)

    def _scratch_rows(self, count: int) -> np.ndarray:
        # Reused: a second fresh multi-MB array per call costs more in page faults than the copy.
        if len(self._scratch) < count:
            self._scratch = np.empty((count, self.seq_len), dtype=self.dtype)
        return self._scratch[:count]

    def _source_counts(self, sources: tuple[str, ...]) -> np.ndarray:
        if sources not in self._counts_by_list:
            counts = [self.num_sequences(name) for name in sources]
            self._counts_by_list[sources] = np.array(counts, dtype=np.int64)
        return self._counts_by_list[sources]

    def _copy_rows(self, source: str, indices: np.ndarray, out: np.ndarray) -> None:
        """Copy rows into `out`; the caller has checked the indices are in range."""
        starts = self._starts[source]
        if len(starts) == 2:  # one shard: straight into `out`
            # mode="clip" skips take's buffered bounds check, already done by the caller.
            np.take(self._map(source, 0), indices, axis=0, out=out, mode="clip")
            return
        shard_of = np.searchsorted(starts, indices, side="right") - 1
        for shard in np.unique(shard_of):
            slots = shard_of == shard
            out[slots] = self._map(source, int(shard))[indices[slots] - starts[shard]]

    def verify(self) -> None:
        """Check every shard's sha256 against index.json."""
        for source in self.sources:
            for entry in self._shards[source]:
                self._verify(entry)

    def tokenizer(self) -> Tokenizer:
        from curation.storage.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(self.folder.join(TOKENIZER_FILE))
        if tokenizer_hash(tokenizer) != self.index["tokenizer"]["sha256"]:
            raise IntegrityError(f"{self.folder.join(TOKENIZER_FILE)}: differs from the one index.json names")
        return tokenizer

    def _source(self, source: str) -> str:
        if source not in self._starts:
            raise KeyError(f"{self.folder}: no source {source!r}; it has {self.sources}")
        return source

    def _map(self, source: str, shard: int) -> np.ndarray:
        key = (source, shard)
        if key not in self._maps:
            entry = self._shards[source][shard]
            if self.verify_mode == "lazy":
                self._verify(entry)
            path = self.folder.join(entry.path).path
            mapped = np.memmap(path, dtype=self.dtype, mode="r", shape=(entry.sequences, self.seq_len))
            self._maps[key] = mapped.view(np.ndarray)  # plain ndarray indexing is faster
        return self._maps[key]

    def _verify(self, entry: ShardEntry) -> None:
        if entry.path in self._verified:
            return
        loc = self.folder.join(entry.path)
        if sha256_of(loc) != entry.sha256:
            raise IntegrityError(
                f"{loc}: sha256 differs from {INDEX_FILE}; the shard is corrupted, refusing it"
            )
        self._verified.add(entry.path)

    def _check_sizes(self) -> None:
        for source in self.sources:
            for entry in self._shards[source]:
                loc = self.folder.join(entry.path)
                size = loc.fs.get_file_info(loc.path).size
                expected = entry.sequences * self.seq_len * self.dtype.itemsize
                if size is None:
                    raise IntegrityError(f"{loc}: listed in {INDEX_FILE} but missing")
                if size != entry.bytes or size != expected:
                    raise IntegrityError(f"{loc}: size {size} bytes, {INDEX_FILE} says {entry.bytes}")
