"""The manifest: the list of files that make up a dataset, with their checksums.

A dataset is exactly what its manifest lists: its parts (`files`) and every
other file the output holds (`sidecars`: centroids, a job file, a nested
dataset). The manifest is written last and atomically, so a folder without one
is an unfinished write, never data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from curation import __version__
from curation.errors import CurationError, IntegrityError
from curation.storage.fs import Location, relative_parts, sha256_of, write_bytes_atomic
from curation.storage.output import active_session

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the dataset folder
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Sidecar:
    """A file of the output that is not one of its Parquet parts."""

    path: str  # relative to the dataset folder
    bytes: int
    sha256: str


@dataclass
class Manifest:
    kind: str
    files: list[FileEntry]
    schema: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    created_by: str = f"curation {__version__}"
    sidecars: list[Sidecar] = field(default_factory=list)  # filled in by write_manifest

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> bytes:
        body = asdict(self)
        body["rows"], body["bytes"] = self.rows, self.bytes
        # Sorted keys and no timestamp: the same data gives the same bytes.
        return seal(body, _OPTIONS)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            body = orjson.loads(data)
            files = [FileEntry(**f) for f in body["files"]]
            sidecars = [Sidecar(**f) for f in body.get("sidecars", [])]
            version = int(body["schema_version"])
            manifest = cls(
                kind=body["kind"],
                files=files,
                schema=dict(body["schema"]),
                config=body.get("config", {}),
                extra=body.get("extra", {}),
                schema_version=version,
                created_by=body.get("created_by", ""),
                sidecars=sidecars,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{where}: manifest is unreadable or incomplete ({exc})") from exc
        if version > SCHEMA_VERSION:
            raise CurationError(
                f"{where}: manifest schema version {version} is newer than this "
                f"curation understands ({SCHEMA_VERSION}); upgrade curation"
            )
        if body.get("rows") is not None and body["rows"] != manifest.rows:
            raise IntegrityError(f"{where}: manifest row total does not match its files")
        check_inside(where, [f.path for f in files] + [f.path for f in sidecars])
        check_seal(body, _OPTIONS, where, MANIFEST_KEYS)
        return manifest


_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
CHECKSUM_KEY = "checksum"
MANIFEST_KEYS = ("kind", "files", "schema", "config", "extra", "schema_version", "created_by", "sidecars",
                 "rows", "bytes")  # fmt: skip


def seal(body: dict[str, Any], option: int) -> bytes:
    """`body` as JSON with a `checksum` of its own content, so that a manifest or
    index damaged on disk (a flipped digit in a row count, a size, an id) is
    refused by checksum rather than trusted. Files list their data files' sha256;
    this covers the list itself."""
    digest = hashlib.sha256(orjson.dumps(body, option=option)).hexdigest()
    return orjson.dumps({**body, CHECKSUM_KEY: f"sha256:{digest}"}, option=option)


def check_seal(body: dict[str, Any], option: int, where: str, known: Collection[str]) -> None:
    """Remove `checksum` from a parsed `body` and check it; files written before
    checksums existed have none and are let through, but only with no key
    outside `known`: a damaged `checksum` key must not pass for an old file."""
    sealed = body.pop(CHECKSUM_KEY, None)
    if sealed is None:
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise IntegrityError(f"{where}: no checksum, and unknown keys {unknown} (corrupted?)")
        return
    digest = hashlib.sha256(orjson.dumps(body, option=option)).hexdigest()
    if sealed != f"sha256:{digest}":
        raise IntegrityError(f"{where}: checksum does not match the content (corrupted or edited by hand)")


def check_inside(where: str, paths: list[str]) -> None:
    """Listed files must lie inside the dataset folder: a tampered manifest naming
    `../../x` or `/etc/x` would otherwise make readers (and verify) open it."""
    for path in paths:
        try:
            if not isinstance(path, str) or "/".join(relative_parts(path)) != path:
                raise CurationError(f"{path!r}: not a plain relative path")
        except CurationError as exc:
            raise IntegrityError(f"{where}: lists a file outside its folder ({exc})") from None


def write_manifest(folder: Location, manifest: Manifest) -> None:
    """Write `manifest` last; in a run holding the folder, it lists as sidecars
    every other file the run wrote under `folder`."""
    session = active_session(folder)
    if session is not None:
        parts = {f.path for f in manifest.files}
        manifest.sidecars = [Sidecar(*found) for found in session.sidecars(folder, parts)]
    write_bytes_atomic(folder.join(MANIFEST_NAME), manifest.to_json())


def read_manifest(folder: Location) -> Manifest:
    loc = folder.join(MANIFEST_NAME)
    if not loc.exists():
        hint = " (an unfinished or interrupted write?)" if folder.exists() else ""
        raise CurationError(f"{folder}: no {MANIFEST_NAME}, so not a curation dataset{hint}")
    with loc.fs.open_input_stream(loc.path) as handle:
        return Manifest.from_json(handle.read(), str(loc))


_VERIFIED: dict[tuple, str] = {}  # (path, device, inode, size, mtime, ctime) -> sha256 found there


def check_sha256(loc: Location, expected: str, listed_in: str = "the manifest", fresh: bool = False) -> None:
    """Refuse `loc` unless its bytes hash to `expected`, naming the file.

    Readers call this before reading a file; a local file already checked by this
    process and unchanged since (same inode, size, mtime and ctime) is not read twice."""
    key = _identity(loc)
    if not fresh and key is not None and _VERIFIED.get(key) == expected:
        return
    if sha256_of(loc) != expected:
        raise IntegrityError(f"{loc}: sha256 differs from {listed_in}; the file is corrupted, refusing it")
    if key is not None:
        if len(_VERIFIED) > 100_000:
            _VERIFIED.clear()
        _VERIFIED[key] = expected


def _identity(loc: Location) -> tuple | None:
    if not loc.is_local:
        return None
    try:
        info = os.stat(loc.path)
    except OSError:
        return None
    return (loc.path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
