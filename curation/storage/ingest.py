"""Ingest: raw files in, one documents dataset plus a quarantine table out.

Every record read ends up in exactly one place: the documents dataset or the
quarantine table (file, line, reason, snippet). The report checks
`records read = documents + quarantined` before it is returned.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from curation.errors import CurationError, InputError
from curation.storage.dataset import Dataset, PartWriter, clear_dataset, schema_to_dict
from curation.storage.fs import Location, resolve
from curation.storage.lock import output_lock
from curation.storage.manifest import Manifest, write_manifest
from curation.storage.readers import Bad, ReadOptions, Record, detect_format, read_file, valid_source_name

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("n_chars", pa.int64(), nullable=False),
        pa.field("meta", pa.string()),  # JSON object of the record's other fields
        pa.field("origin", pa.string(), nullable=False),  # "file:line" it came from
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),  # line for text formats, row for Parquet
        pa.field("source", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("snippet", pa.string()),
    ]
)
QUARANTINE_DIR = "_quarantine"
_BATCH_ROWS = 4096


@dataclass(frozen=True)
class InputSpec:
    """One input: a file or a folder. Unset fields fall back to the config."""

    path: str
    source: str | None = None
    format: str | None = None
    text_field: str | None = None

    @classmethod
    def parse(cls, arg: str) -> InputSpec:
        """`path` or `source=path` (the form the CLI takes)."""
        name, sep, rest = arg.partition("=")
        if sep and valid_source_name(name):
            return cls(path=rest, source=name)
        return cls(path=arg)


@dataclass(frozen=True)
class IngestConfig:
    text_field: str = "text"
    source_field: str | None = None  # a record field that names its source
    source: str | None = None  # source for inputs that name none
    strict: bool = False  # stop at the first bad record instead of quarantining it
    max_doc_bytes: int = 8 << 20
    batch_bytes: int = 32 << 20
    rows_per_file: int = 250_000

    def __post_init__(self):
        if self.max_doc_bytes <= 0 or self.batch_bytes <= 0 or self.rows_per_file <= 0:
            raise CurationError("max_doc_bytes, batch_bytes and rows_per_file must be positive")
        if self.source is not None and not valid_source_name(self.source):
            raise CurationError(
                f"source name {self.source!r}: use letters, digits, . _ - (at most 200 characters)"
            )


@dataclass
class IngestReport:
    output: str
    files: int = 0
    records_read: int = 0
    documents: int = 0
    quarantined: int = 0
    chars: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    skipped_links: list[str] = field(default_factory=list)  # inside input folders: not followed
    seconds: float = 0.0

    def check(self) -> None:
        if self.records_read != self.documents + self.quarantined:
            raise AssertionError(
                f"accounting broken: read {self.records_read} != "
                f"{self.documents} documents + {self.quarantined} quarantined"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _InputFile:
    loc: Location
    fmt: str
    source: str
    key: str  # stable name inside its source, used for ids and origins
    options: ReadOptions


def plan_inputs(
    inputs: Sequence[InputSpec], config: IngestConfig, skipped_links: list[str] | None = None
) -> list[_InputFile]:
    """Expand folders, pick formats and sources, and refuse id collisions up front.
    Symbolic links inside input folders are not followed (a link to `..` used to
    read every file about 40 times); they are added to `skipped_links`."""
    planned: list[_InputFile] = []
    for spec in inputs:
        planned.extend(_expand(spec, config, skipped_links if skipped_links is not None else []))
    seen: dict[tuple[str, str], str] = {}
    for item in planned:
        other = seen.get((item.source, item.key))
        if other is None:
            seen[(item.source, item.key)] = str(item.loc)
        elif other == str(item.loc):
            # the same file twice gave every record of it twice, under the same ids
            raise CurationError(f"{item.loc}: given more than once")
        else:
            raise CurationError(
                f"{other} and {item.loc} would get the same ids (source {item.source!r}, "
                f"name {item.key!r}); give one of them another source with SOURCE=PATH"
            )
    return planned


def _expand(spec: InputSpec, config: IngestConfig, skipped_links: list[str]) -> Iterator[_InputFile]:
    loc = resolve(spec.path)
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        raise CurationError(f"{spec.path}: no such file or folder")
    if info.type not in (pafs.FileType.File, pafs.FileType.Directory) or not _plain_or_folder(loc):
        raise CurationError(f"{spec.path}: a FIFO, socket or device, not a regular file; refusing to read it")
    options = ReadOptions(
        text_field=spec.text_field or config.text_field,
        source_field=config.source_field,
        max_doc_bytes=config.max_doc_bytes,
    )
    base = info.base_name
    if info.type == pafs.FileType.File:
        fmt = spec.format or detect_format(base)
        if fmt is None:
            raise CurationError(f"{spec.path}: unknown format; name it with --format")
        source = spec.source or config.source or file_source_name(base)
        yield _InputFile(loc, fmt, _check_source(source, spec.path), base, options)
        return
    source = _check_source(spec.source or config.source or base, spec.path)
    for relative in _files_under(loc, skipped_links):
        fmt = spec.format or detect_format(relative.rsplit("/", 1)[-1])
        if fmt is None:
            continue
        child_loc = Location(
            loc.fs, f"{loc.path.rstrip('/')}/{relative}", f"{loc.uri.rstrip('/')}/{relative}"
        )
        if child_loc.is_local and not _plain_or_folder(child_loc):
            raise CurationError(
                f"{child_loc}: a FIFO, socket or device, not a regular file; refusing to read it"
            )
        yield _InputFile(child_loc, fmt, source, f"{base}/{relative}", options)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))  # temp files, manifests' siblings


def _files_under(folder: Location, skipped_links: list[str]) -> list[str]:
    """Relative paths of the files under `folder`, sorted, hidden and `_` names left
    out. Locally, symbolic links are not followed: each is added to `skipped_links`."""
    if not folder.is_local:
        root = folder.path.rstrip("/")
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True))
        relative = [i.path[len(root) + 1 :] for i in infos if i.type == pafs.FileType.File]
        return sorted(r for r in relative if not any(map(_hidden, r.split("/"))))
    found: list[str] = []
    for parent, dirs, files in os.walk(folder.path):
        inner = os.path.relpath(parent, folder.path)
        prefix = "" if inner == "." else inner + "/"
        for name in sorted(dirs):
            if _hidden(name) or os.path.islink(os.path.join(parent, name)):
                dirs.remove(name)
                if not _hidden(name):
                    skipped_links.append(os.path.join(parent, name))
        for name in files:
            if _hidden(name):
                continue
            if os.path.islink(os.path.join(parent, name)):
                skipped_links.append(os.path.join(parent, name))
            else:
                found.append(prefix + name)
    return sorted(found)


def _plain_or_folder(loc: Location) -> bool:
    if not loc.is_local:
        return True
    mode = os.stat(loc.path).st_mode
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _check_not_inside(planned: list[_InputFile], folder: Location) -> None:
    """An input inside the output folder would be deleted (or read half-written)
    by this very run, e.g. `ingest data/ --out data/`: refuse before any work."""
    root = folder.path.rstrip("/") + "/"
    for item in planned:
        if item.loc.fs.type_name == folder.fs.type_name and item.loc.path.startswith(root):
            raise CurationError(f"{item.loc}: an input inside the output folder {folder}; write elsewhere")


def file_source_name(name: str) -> str:
    """The source a file names when none is given: its name up to the first dot."""
    stem = name.split(".")[0] or name
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def _check_source(source: str, where: str) -> str:
    if not valid_source_name(source):
        raise CurationError(
            f"{where}: source name {source!r}: use letters, digits, . _ - (at most 200 characters)"
        )
    return source


def document_id(source: str, file_source: str, key: str, line: int) -> str:
    """Stable and unique: the same file and line always give the same id."""
    digest = hashlib.blake2b(f"{file_source}\0{key}\0{line}".encode(), digest_size=8)
    return f"{source}:{digest.hexdigest()}"


class _Batcher:
    """Collects rows column-wise and hands full batches to a PartWriter."""

    def __init__(self, writer: PartWriter, batch_bytes: int):
        self.writer, self.batch_bytes = writer, batch_bytes
        self.columns: dict[str, list] = {name: [] for name in writer.schema.names}
        self.pending_bytes = 0
        self.rows = 0

    def add(self, row: dict, size: int) -> None:
        for name, values in self.columns.items():
            values.append(row.get(name))
        self.pending_bytes += size
        self.rows += 1
        if self.pending_bytes >= self.batch_bytes or len(self.columns["source"]) >= _BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.columns["source"]:
            self.writer.write(pa.table(self.columns, schema=self.writer.schema))
            self.columns = {name: [] for name in self.columns}
            self.pending_bytes = 0


def ingest(
    inputs: Sequence[InputSpec | str],
    out: str,
    config: IngestConfig | None = None,
    on_file: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Read every input into the documents dataset at `out`.

    `on_file(file, files_done, files_total)` is called after each file, for
    progress bars and Dagster events.
    """
    config = config or IngestConfig()
    specs = [InputSpec.parse(i) if isinstance(i, str) else i for i in inputs]
    if not specs:
        raise CurationError("no inputs given")
    skipped_links: list[str] = []
    planned = plan_inputs(specs, config, skipped_links)
    folder = resolve(out)
    _check_not_inside(planned, folder)
    with output_lock(folder):
        report = _ingest_into(folder, planned, specs, config, on_file, sorted(skipped_links))
    return report


def _ingest_into(folder, planned, specs, config, on_file, skipped_links) -> IngestReport:
    clear_dataset(folder)
    quarantine_folder = folder.join(QUARANTINE_DIR)
    docs = PartWriter(folder, DOCUMENTS_SCHEMA, rows_per_file=config.rows_per_file)
    bad = PartWriter(quarantine_folder, QUARANTINE_SCHEMA, rows_per_file=config.rows_per_file)
    report = IngestReport(output=str(folder), files=len(planned), skipped_links=skipped_links)
    start = time.perf_counter()
    try:
        _ingest_files(
            planned, config, _Batcher(docs, config.batch_bytes), _Batcher(bad, 1 << 20), report, on_file
        )
    except BaseException:
        docs.abort()
        bad.abort()
        raise
    report.seconds = round(time.perf_counter() - start, 3)
    report.check()
    _finish(folder, quarantine_folder, docs, bad, specs, config, report)
    return report


def _ingest_files(planned, config, docs, bad, report, on_file) -> None:
    sources: Counter = Counter()
    reasons: Counter = Counter()
    for done, item in enumerate(planned, start=1):
        for result in read_file(item.loc, item.fmt, item.options):
            report.records_read += 1
            if isinstance(result, Record):
                row = _document_row(item, result)
                docs.add(row, len(result.text))
                sources[row["source"]] += 1
                report.chars += row["n_chars"]
            else:
                _quarantine(item, result, config, bad)
                reasons[result.reason] += 1
        if on_file:
            on_file(str(item.loc), done, len(planned))
    docs.flush()
    bad.flush()
    report.documents, report.quarantined = docs.rows, bad.rows
    report.by_source = dict(sorted(sources.items()))
    report.by_reason = dict(sorted(reasons.items()))


def _document_row(item: _InputFile, record: Record) -> dict:
    source = record.source or item.source
    return {
        "id": document_id(source, item.source, item.key, record.line),
        "source": source,
        "text": record.text,
        "n_chars": len(record.text),
        "meta": record.meta,
        "origin": f"{item.key}:{record.line}",
    }


def _quarantine(item: _InputFile, result: Bad, config: IngestConfig, bad: _Batcher) -> None:
    if config.strict:
        raise InputError(str(item.loc), result.line, result.reason, result.detail)
    row = {
        "file": str(item.loc),
        "line": result.line,
        "source": result.source or item.source,
        "reason": result.reason,
        "detail": result.detail,
        "snippet": result.snippet,
    }
    bad.add(row, len(result.snippet) + len(result.detail))


def _finish(folder, quarantine_folder, docs, bad, specs, config, report) -> None:
    run_config = {"inputs": [asdict(s) for s in specs], "ingest": asdict(config)}
    counts = {k: v for k, v in report.to_dict().items() if k not in ("seconds", "output")}
    quarantine = Manifest("quarantine", bad.close(), schema_to_dict(QUARANTINE_SCHEMA), run_config)
    write_manifest(quarantine_folder, quarantine)
    manifest = Manifest(
        "documents",
        docs.close(),
        schema_to_dict(DOCUMENTS_SCHEMA),
        run_config,
        {"report": counts, "quarantine": QUARANTINE_DIR},
    )
    write_manifest(folder, manifest)


def open_quarantine(documents: str | Location) -> Dataset:
    return Dataset.open(resolve(documents).join(QUARANTINE_DIR))
