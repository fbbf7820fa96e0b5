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
import json
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

INVALID_SOURCE = "invalid_source"

FORMATS = ("jsonl", "parquet", "csv", "txt")
# Source names become folder and file names (shards/<source>/<source>-00000.bin).
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
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


def valid_source_name(name: str) -> bool:
    """Letters, digits, `.`, `_` and `-`, not first, at most 200 characters."""
    return isinstance(name, str) and bool(_SOURCE_NAME.fullmatch(name))


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
    stream reader, raises EOFError when the input stops inside a frame.

    Output stays bounded: the decompressor gets `piece` compressed bytes at a
    time, and zstd makes at most 128 KiB out of a 4-byte block, so one call
    yields 8 MiB at worst. (It used to get 1 MiB at once, and a 32 KB file
    holding one 1 GB line became 2 GB in memory; slicing the pending bytes per
    read then made skipping that line quadratic: minutes.)
    """

    def __init__(self, raw, piece: int = 256, chunk: int = 1 << 16):
        self._raw, self._piece, self._chunk = raw, piece, chunk
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._input, self._in_pos = b"", 0
        self._out, self._out_pos = memoryview(b""), 0
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._out_pos >= len(self._out):
            if self._in_pos >= len(self._input):
                self._input, self._in_pos = self._raw.read(self._chunk), 0
                if not self._input:
                    if self._in_frame:
                        raise EOFError("zstd stream ended inside a frame (truncated file?)")
                    return 0
            piece = self._input[self._in_pos : self._in_pos + self._piece]
            self._in_pos += len(piece)
            self._out, self._out_pos = memoryview(self._feed(piece)), 0
        size = min(len(buffer), len(self._out) - self._out_pos)
        buffer[:size] = self._out[self._out_pos : self._out_pos + size]
        self._out_pos += size
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

    def close(self) -> None:
        self._raw.close()
        super().close()


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
    try:
        return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str).decode()
    except orjson.JSONEncodeError as exc:
        if "Integer exceeds" not in str(exc):
            raise
    # An integer beyond 64 bits, kept exact (the standard library writes any size).
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# orjson reads up to 1024 levels of nesting but writes only 254, so a record nested
# 255..1023 deep parsed fine and then crashed ingest with TypeError when its meta
# was written. Such records are quarantined instead.
_TOO_DEEP = "nested too deeply to store (orjson writes at most 254 levels)"
_LONG_NUMBER = re.compile(rb"\d{19,}")  # maybe an integer orjson cannot hold exactly


def _record_from_object(obj: dict, line: int, raw: bytes | str, options: ReadOptions):
    try:
        return _record_or_bad(obj, line, raw, options)
    except orjson.JSONEncodeError as exc:
        if "UTF-8" in str(exc):  # a surrogate: bytes that were not UTF-8
            return Bad(line, INVALID_UTF8, f"a field name or value is not UTF-8 ({exc})", snippet(raw))
        detail = _TOO_DEEP if "Recursion" in str(exc) else f"cannot be stored as JSON ({exc})"
        return Bad(line, MALFORMED_JSON, detail, snippet(raw))
    except RecursionError:  # the standard library's parser, on huge integers nested deep
        return Bad(line, MALFORMED_JSON, _TOO_DEEP, snippet(raw))


def _record_or_bad(obj: dict, line: int, raw: bytes | str, options: ReadOptions):
    text, found = _text_from(obj, options.text_field)
    source = None
    if options.source_field:
        value, has = _text_from(obj, options.source_field)
        source = str(value) if has and value is not None else None
        if source and not valid_source_name(source):
            detail = (
                f"field {options.source_field!r} names source {source[:60]!r}: "
                "use letters, digits, . _ - (not first), at most 200 characters"
            )
            return Bad(line, INVALID_SOURCE, detail, snippet(raw))
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
    if _LONG_NUMBER.search(raw):
        try:  # orjson turns integers beyond 64 bits into floats; this parser keeps them exact
            obj = json.loads(raw)
        except RecursionError:
            return Bad(line, MALFORMED_JSON, _TOO_DEEP, snippet(raw))
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
    lines = None
    try:
        with _open_binary(loc) as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape")
            lines = _BoundedLines(text, options.max_doc_bytes)
            reader = csv.reader(lines, delimiter=delimiter)
            try:
                header = next(reader, None)
            except csv.Error as exc:  # no header, no rows: the file is one bad record
                yield Bad(1, _csv_reason(exc), f"header: {exc}", "")
                return
            if header is None:
                return
            yield from _csv_rows(
                reader, lines, header, options, _SURROGATE.search(",".join(header)) is not None
            )
    except _READ_ERRORS as exc:
        yield _read_failure(exc, lines.count if lines is not None else 0)


class _BoundedLines:
    """Text lines for csv.reader, none longer than `limit` characters.

    csv.reader takes whole lines from its input, and TextIOWrapper builds a line
    however long it is, so a 200 MB single-line field was read into memory whole
    before field_size_limit could refuse it. Here a longer line is skipped in
    `limit`-sized pieces and reported as the csv.Error the field limit gives.
    `count` is the number of physical lines taken, skipped ones included.
    """

    def __init__(self, text: io.TextIOBase, limit: int):
        self.text, self.limit, self.count = text, limit, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) > self.limit and not line.endswith("\n"):
            while (part := self.text.readline(self.limit)) and not part.endswith("\n"):
                pass
            raise csv.Error(f"field larger than field limit ({self.limit}): line is longer")
        return line


def _csv_reason(exc: csv.Error) -> str:
    return TOO_LARGE if "field larger" in str(exc) else MALFORMED_CSV


def _csv_rows(reader, lines: _BoundedLines, header: list[str], options: ReadOptions, bad_header: bool):
    start = lines.count + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Bad(start, _csv_reason(exc), str(exc), "")
            start = lines.count + 1
            continue
        line, start = start, lines.count + 1
        raw = ",".join(row)
        if bad_header:  # every row's field names would hold the bytes
            yield Bad(
                line,
                INVALID_UTF8,
                "the header (line 1) holds bytes that are not UTF-8",
                snippet(_escape(raw)),
            )
            continue
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
    for i, obj in enumerate(_parquet_rows(batch)):
        line = first_row + i + 1
        if obj is None:
            yield Bad(line, INVALID_UTF8, "a string value holds bytes that are not UTF-8", "")
            continue
        value = _text_from(obj, options.text_field)[0]
        size = sizes[i] if sizes is not None else _utf8_size(value)  # a nested field: from Python
        if size is not None and size > options.max_doc_bytes:
            detail = f"text is {size} bytes, limit {options.max_doc_bytes}"
            yield Bad(line, TOO_LARGE, detail, snippet(value[:SNIPPET_CHARS]))
            continue
        try:
            raw = orjson.dumps(obj, default=str)
        except orjson.JSONEncodeError:  # nested columns deeper than orjson writes
            yield Bad(line, MALFORMED_JSON, _TOO_DEEP, "")
            continue
        yield _record_from_object(obj, line, raw, options)


def _parquet_rows(batch: pa.RecordBatch) -> list[dict | None]:
    """The batch's rows as dicts; None for a row holding a string that is not UTF-8.

    Parquet writers need not check UTF-8 and pyarrow's reader does not either, so
    such a value reaches `to_pylist`, whose UnicodeDecodeError used to crash ingest.
    """
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    rows: list[dict | None] = []
    for i in range(batch.num_rows):
        try:
            rows.append(batch.slice(i, 1).to_pylist()[0])
        except UnicodeDecodeError:
            rows.append(None)
    return rows


def _text_sizes(column: pa.Array) -> list[int | None] | None:
    """UTF-8 bytes of each text value, read from Arrow without making Python strings."""
    if pa.types.is_dictionary(column.type) and _is_text(column.type.value_type):
        return pc.take(pc.binary_length(column.dictionary), column.indices).to_pylist()
    if _is_text(column.type):
        return pc.binary_length(column).to_pylist()
    return None


def _utf8_size(value) -> int | None:
    return len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else None


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
