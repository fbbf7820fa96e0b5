"""Readers for raw inputs: JSONL (plain, .gz, .zst), Parquet, CSV and .txt files.

Each reader yields `Record`s and `Bad`s. A `Bad` carries the file, the line
(or row), a reason code and a snippet of the raw input, so ingest can put it
in quarantine or, in strict mode, stop with a message naming file and line.
Readers never raise on bad content; they raise only on bugs.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from curation.storage.fs import Location

SNIPPET_CHARS = 200

# Reason codes, stable: they are what people filter quarantine tables by.
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
INVALID_UTF8 = "invalid_utf8"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
TOO_LARGE = "too_large"
MALFORMED_CSV = "malformed_csv"
UNREADABLE_FILE = "unreadable_file"
TRUNCATED_FILE = "truncated_file"

FORMATS = ("jsonl", "parquet", "csv", "txt")
_SURROGATE = re.compile("[\udc80-\udcff]")
_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, pa.ArrowException)


@dataclass(slots=True)
class Record:
    line: int
    text: str
    source: str | None
    meta: str | None  # JSON object of the record's other fields


@dataclass(slots=True)
class Bad:
    line: int | None
    reason: str
    detail: str
    snippet: str
    source: str | None = None


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"
    source_field: str | None = None
    max_doc_bytes: int = 8 << 20


def detect_format(name: str) -> str | None:
    lowered = name.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    if lowered.endswith((".txt", ".md", ".text")):
        return "txt"
    return None


def read_file(loc: Location, fmt: str, options: ReadOptions) -> Iterator[Record | Bad]:
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "csv": _read_csv, "txt": _read_txt}
    yield from reader[fmt](loc, options)


def snippet(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw[: SNIPPET_CHARS * 4].decode("utf-8", "backslashreplace")
    return raw[:SNIPPET_CHARS]


def _open_binary(loc: Location) -> io.BufferedIOBase:
    raw = loc.fs.open_input_stream(loc.path, compression=None)
    name = loc.path.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith((".zst", ".zstd")):
        return io.BufferedReader(_ZstdStream(raw), buffer_size=1 << 20)
    return io.BufferedReader(_ArrowStream(raw), buffer_size=1 << 20)


class _ArrowStream(io.RawIOBase):
    """Lets Python's buffered reader (and its readline) sit on a pyarrow stream."""

    def __init__(self, raw):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _ZstdStream(io.RawIOBase):
    """Decompresses zstd frames one after another and, unlike zstandard's own
    stream reader, raises EOFError when the input stops inside a frame."""

    def __init__(self, raw, chunk: int = 1 << 20):
        self._raw, self._chunk = raw, chunk
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._pending = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            compressed = self._raw.read(self._chunk)
            if not compressed:
                if self._in_frame:
                    raise EOFError("zstd stream ended inside a frame (truncated file?)")
                return 0
            self._pending = self._feed(compressed)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _feed(self, compressed: bytes) -> bytes:
        out = []
        while compressed:
            self._in_frame = True
            out.append(self._obj.decompress(compressed))
            if not self._obj.eof:
                break
            self._in_frame = False
            compressed = self._obj.unused_data
            self._obj = self._dctx.decompressobj()
        return b"".join(out)


def _text_from(obj: dict, field: str) -> tuple[Any, bool]:
    """Look up a possibly dotted field (`meta.content`); returns (value, found)."""
    value: Any = obj
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None, False
        value = value[part]
    return value, True


def _check_text(value: Any, found: bool, field: str) -> tuple[str, str] | None:
    if not found:
        return MISSING_TEXT, f"no field {field!r}"
    if not isinstance(value, str):
        return TEXT_NOT_STRING, f"field {field!r} is {type(value).__name__}, not a string"
    if not value.strip():
        return EMPTY_TEXT, f"field {field!r} is empty"
    return None


def _meta_json(fields: dict) -> str | None:
    if not fields:
        return None
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _record_from_object(obj: dict, line: int, raw: bytes | str, options: ReadOptions):
    text, found = _text_from(obj, options.text_field)
    source = None
    if options.source_field:
        value, has = _text_from(obj, options.source_field)
        source = str(value) if has and value is not None else None
    problem = _check_text(text, found, options.text_field)
    if problem:
        return Bad(line, problem[0], problem[1], snippet(raw), source)
    top = options.text_field.split(".")[0]
    others = {k: v for k, v in obj.items() if k not in (top, options.source_field)}
    return Record(line, text, source, _meta_json(others))


def _read_jsonl(loc: Location, options: ReadOptions) -> Iterator[Record | Bad]:
    line = 0
    limit = options.max_doc_bytes
    try:
        with _open_binary(loc) as handle:
            while True:
                raw = handle.readline(limit + 1)
                if not raw:
                    return
                line += 1
                if len(raw) > limit and not raw.endswith(b"\n"):
                    yield Bad(line, TOO_LARGE, f"line longer than {limit} bytes", snippet(raw))
                    _skip_rest_of_line(handle, limit)
                    continue
                if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue  # blank lines separate nothing and hold no record
                yield _parse_json_line(raw, line, options)
    except _READ_ERRORS as exc:
        yield _read_failure(exc, line)


def _skip_rest_of_line(handle, chunk: int) -> None:
    while True:
        part = handle.readline(chunk)
        if not part or part.endswith(b"\n"):
            return


def _parse_json_line(raw: bytes, line: int, options: ReadOptions) -> Record | Bad:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Bad(line, INVALID_UTF8, str(exc), snippet(raw))
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Bad(line, MALFORMED_JSON, str(exc), snippet(raw))
    if not isinstance(obj, dict):
        return Bad(line, NOT_AN_OBJECT, f"a JSON {type(obj).__name__}, not an object", snippet(raw))
    return _record_from_object(obj, line, raw, options)


def _read_failure(exc: BaseException, line: int) -> Bad:
    if line == 0:
        return Bad(None, UNREADABLE_FILE, f"{type(exc).__name__}: {exc}", "")
    detail = f"stopped after line {line}: {type(exc).__name__}: {exc}"
    return Bad(line + 1, TRUNCATED_FILE, detail, "")


def _read_txt(loc: Location, options: ReadOptions) -> Iterator[Record | Bad]:
    try:
        size = loc.size()
        if size > options.max_doc_bytes:
            yield Bad(1, TOO_LARGE, f"file is {size} bytes, limit {options.max_doc_bytes}", "")
            return
        with _open_binary(loc) as handle:
            raw = handle.read(options.max_doc_bytes + 1)
    except _READ_ERRORS as exc:
        yield _read_failure(exc, 0)
        return
    if len(raw) > options.max_doc_bytes:
        yield Bad(1, TOO_LARGE, f"more than {options.max_doc_bytes} bytes", snippet(raw))
        return
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield Bad(1, INVALID_UTF8, str(exc), snippet(raw))
        return
    if not text.strip():
        yield Bad(1, EMPTY_TEXT, "file is empty", snippet(raw))
        return
    yield Record(1, text, None, None)


def _read_csv(loc: Location, options: ReadOptions) -> Iterator[Record | Bad]:
    csv.field_size_limit(options.max_doc_bytes)
    delimiter = "\t" if ".tsv" in loc.path.lower() else ","
    line = 0
    try:
        with _open_binary(loc) as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape")
            reader = csv.reader(text, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            line = reader.line_num
            yield from _csv_rows(reader, header, options)
    except _READ_ERRORS as exc:
        yield _read_failure(exc, line)


def _csv_rows(reader, header: list[str], options: ReadOptions) -> Iterator[Record | Bad]:
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason = TOO_LARGE if "field larger" in str(exc) else MALFORMED_CSV
            yield Bad(start, reason, str(exc), "")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        raw = ",".join(row)
        if _SURROGATE.search(raw):
            yield Bad(line, INVALID_UTF8, "bytes that are not UTF-8", snippet(_escape(raw)))
            continue
        if len(row) != len(header):
            detail = f"{len(row)} fields, header has {len(header)}"
            yield Bad(line, MALFORMED_CSV, detail, snippet(raw))
            continue
        yield _record_from_object(dict(zip(header, row, strict=True)), line, raw, options)


def _escape(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_parquet(loc: Location, options: ReadOptions) -> Iterator[Record | Bad]:
    row = 0
    try:
        with loc.fs.open_input_file(loc.path) as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=2048):
                yield from _parquet_batch(batch, row, options)
                row += batch.num_rows
    except _READ_ERRORS as exc:
        yield _read_failure(exc, row)


def _parquet_batch(batch: pa.RecordBatch, first_row: int, options: ReadOptions):
    top = options.text_field.split(".")[0]
    if top not in batch.schema.names:
        for i in range(batch.num_rows):
            yield Bad(first_row + i + 1, MISSING_TEXT, f"no column {top!r}", "")
        return
    sizes = _text_sizes(batch.column(top))
    rows = batch.to_pylist()
    for i, obj in enumerate(rows):
        line = first_row + i + 1
        if sizes is not None and sizes[i] is not None and sizes[i] > options.max_doc_bytes:
            detail = f"text is {sizes[i]} bytes, limit {options.max_doc_bytes}"
            yield Bad(line, TOO_LARGE, detail, snippet(obj[top][:SNIPPET_CHARS]))
            continue
        yield _record_from_object(obj, line, orjson.dumps(obj, default=str), options)


def _text_sizes(column: pa.Array) -> list[int | None] | None:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.binary_length(column).to_pylist()
    return None
