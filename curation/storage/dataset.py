"""Parquet datasets: a folder of part files plus a manifest written last.

Writers stream record batches into rolling part files, each written under a
temporary name and renamed when complete. Readers stream record batches from
exactly the files the manifest lists: sizes are checked on open, and each
file's sha256 before it is first read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import IntegrityError
from curation.storage.fs import Location, commit, remove, resolve, temp_sibling
from curation.storage.lock import output_lock
from curation.storage.manifest import (
    FileEntry,
    Manifest,
    Sidecar,
    check_sha256,
    read_manifest,
    sha256_of,
    write_manifest,
)
from curation.storage.output import clear_output, record

ROWS_PER_FILE = 250_000
ROW_GROUP_ROWS = 8_192


def part_name(index: int, prefix: str = "part") -> str:
    """A dataset part's file name: `part-00000.parquet`, ..."""
    return f"{prefix}-{index:05d}.parquet"


class PartWriter:
    """Streams batches of one schema into part files `<prefix>-00000.parquet`, ..."""

    def __init__(
        self,
        folder: Location,
        schema: pa.Schema,
        prefix: str = "part",
        rows_per_file: int = ROWS_PER_FILE,
        subdir: str = "",
    ):
        self.folder, self.schema, self.prefix = folder, schema, prefix
        self.rows_per_file, self.subdir = rows_per_file, subdir
        self.entries: list[FileEntry] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Location | None = None
        self._rows_in_file = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.cast(self.schema) if table.schema != self.schema else table
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(table.num_rows - start, self.rows_per_file - self._rows_in_file)
            self._writer.write_table(table.slice(start, take), row_group_size=ROW_GROUP_ROWS)
            self._rows_in_file += take
            start += take
            if self._rows_in_file >= self.rows_per_file:
                self._close_file()

    def close(self) -> list[FileEntry]:
        if self._writer is None and not self.entries:
            self._open()  # an empty dataset still records its schema in one file
        if self._writer is not None:
            self._close_file()
        return self.entries

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            remove(self._tmp)
            self._writer = None

    def _relative_name(self, index: int) -> str:
        name = part_name(index, self.prefix)
        return f"{self.subdir}/{name}" if self.subdir else name

    def _open(self) -> None:
        final = self.folder.join(self._relative_name(len(self.entries)))
        self._tmp = temp_sibling(final)
        Location(final.fs, final.path.rsplit("/", 1)[0], "").mkdir()
        sink = self._tmp.fs.open_output_stream(self._tmp.path)
        self._writer = pq.ParquetWriter(sink, self.schema, compression="zstd")
        self._sink = sink
        self._rows_in_file = 0

    def _close_file(self) -> None:
        self._writer.close()
        self._sink.close()
        relative = self._relative_name(len(self.entries))
        final = self.folder.join(relative)
        commit(self._tmp, final)
        entry = FileEntry(relative, self._rows_in_file, final.size(), sha256_of(final))
        record(final, entry.bytes, entry.sha256)
        self.entries.append(entry)
        self._writer = None


def clear_dataset(folder: Location) -> None:
    """Make room for a new write (the caller holds `output_lock`): the manifest
    goes first, so a reader never mistakes half-replaced parts for a dataset,
    then only the files curation wrote there (see storage/output.py). Files it
    did not write are never removed: they used to be, for any `_`-name."""
    clear_output(folder)


def schema_to_dict(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


@dataclass
class Dataset:
    """A finished dataset: its folder and manifest; reads stream in batches."""

    folder: Location
    manifest: Manifest
    _checked: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, path: str | Location) -> Dataset:
        folder = resolve(path)
        dataset = cls(folder, read_manifest(folder))
        dataset.check_sizes()
        return dataset

    @property
    def rows(self) -> int:
        return self.manifest.rows

    def files(self) -> list[Location]:
        return [self.folder.join(f.path) for f in self.manifest.files]

    def fingerprint(self) -> str:
        """sha256 of the manifest (every part's checksum in it): what a stage's job
        records of its input, so a changed input is not mistaken for a finished run."""
        return hashlib.sha256(self.manifest.to_json()).hexdigest()

    def _listed(self) -> list[FileEntry | Sidecar]:
        return [*self.manifest.files, *self.manifest.sidecars]

    def check_sizes(self) -> None:
        """Cheap check on open: every listed file is there with its recorded size."""
        for entry in self._listed():
            loc = self.folder.join(entry.path)
            info = loc.fs.get_file_info(loc.path)
            if info.size is None:
                raise IntegrityError(f"{loc}: listed in the manifest but missing")
            if info.size != entry.bytes:
                raise IntegrityError(f"{loc}: size {info.size} differs from the manifest's {entry.bytes}")

    def verify(self, fresh: bool = True) -> None:
        """Full check: the sha256 of every file the manifest lists, parts and sidecars."""
        for entry in self._listed():
            check_sha256(self.folder.join(entry.path), entry.sha256, fresh=fresh)

    def sidecar(self, name: str) -> Location:
        """A file of the dataset besides its parts, its checksum checked. Manifests
        written before sidecars were listed name none: the file is taken as it is."""
        for entry in self.manifest.sidecars:
            if entry.path == name:
                loc = self.folder.join(name)
                check_sha256(loc, entry.sha256)
                return loc
        loc = self.folder.join(name)
        if self.manifest.sidecars or not loc.exists():
            raise IntegrityError(f"{loc}: not listed in the manifest (missing or left by another run)")
        return loc

    def iter_batches(
        self, columns: list[str] | None = None, batch_size: int = 4096, by_row_group: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """Checked batches of every part. `by_row_group`: no batch spans row groups,
        so a small batch of long texts never pulls in a whole file's text."""
        for entry, loc in zip(self.manifest.files, self.files(), strict=True):
            yield from _read_part(loc, entry, columns, batch_size, by_row_group)

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """The whole dataset in memory: for small datasets and tests."""
        first = self.files()[0]
        check_sha256(first, self.manifest.files[0].sha256)
        with first.fs.open_input_file(first.path) as handle:
            schema = pq.ParquetFile(handle).schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return pa.Table.from_batches(list(self.iter_batches(columns)), schema=schema)


def _read_part(
    loc: Location, entry: FileEntry, columns, batch_size: int, by_row_group: bool = False
) -> Iterator[pa.RecordBatch]:
    check_sha256(loc, entry.sha256)  # a flipped byte is refused, never read as data
    try:
        with loc.fs.open_input_file(loc.path) as handle:
            parquet = pq.ParquetFile(handle)
            groups = [[g] for g in range(parquet.num_row_groups)] if by_row_group else [None]
            for group in groups:
                yield from parquet.iter_batches(batch_size=batch_size, row_groups=group, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:  # changed since the check: still one line naming it
        raise IntegrityError(f"{loc}: unreadable ({exc})") from exc


def write_dataset(
    path: str | Location,
    batches: Iterable[pa.RecordBatch | pa.Table],
    schema: pa.Schema,
    kind: str,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> Dataset:
    """Write a whole dataset in one call: parts, then the manifest."""
    folder = resolve(path)
    with output_lock(folder):
        clear_dataset(folder)
        writer = PartWriter(folder, schema, rows_per_file=rows_per_file)
        try:
            for batch in batches:
                writer.write(batch)
        except BaseException:
            writer.abort()
            raise
        manifest = Manifest(kind, writer.close(), schema_to_dict(schema), config or {}, extra or {})
        write_manifest(folder, manifest)
    return Dataset(folder, manifest)
