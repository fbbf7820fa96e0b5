"""The manifest: the list of files that make up a dataset, with their checksums.

A dataset is exactly what its manifest lists. The manifest is written last and
atomically, so a folder without one is an unfinished write, never data.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from curation import __version__
from curation.errors import CurationError, IntegrityError
from curation.storage.fs import Location, relative_parts, write_bytes_atomic

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the dataset folder
    rows: int
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
            version = int(body["schema_version"])
            manifest = cls(
                kind=body["kind"],
                files=files,
                schema=dict(body["schema"]),
                config=body.get("config", {}),
                extra=body.get("extra", {}),
                schema_version=version,
                created_by=body.get("created_by", ""),
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
        check_inside(where, [f.path for f in files])
        check_seal(body, _OPTIONS, where)
        return manifest


_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
CHECKSUM_KEY = "checksum"


def seal(body: dict[str, Any], option: int) -> bytes:
    """`body` as JSON with a `checksum` of its own content, so that a manifest or
    index damaged on disk (a flipped digit in a row count, a size, an id) is
    refused by checksum rather than trusted. Files list their data files' sha256;
    this covers the list itself."""
    digest = hashlib.sha256(orjson.dumps(body, option=option)).hexdigest()
    return orjson.dumps({**body, CHECKSUM_KEY: f"sha256:{digest}"}, option=option)


def check_seal(body: dict[str, Any], option: int, where: str) -> None:
    """Remove `checksum` from a parsed `body` and check it; files written before
    checksums existed have none and are let through."""
    sealed = body.pop(CHECKSUM_KEY, None)
    if sealed is None:
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
    write_bytes_atomic(folder.join(MANIFEST_NAME), manifest.to_json())


def read_manifest(folder: Location) -> Manifest:
    loc = folder.join(MANIFEST_NAME)
    if not loc.exists():
        hint = " (an unfinished or interrupted write?)" if folder.exists() else ""
        raise CurationError(f"{folder}: no {MANIFEST_NAME}, so not a curation dataset{hint}")
    with loc.fs.open_input_stream(loc.path) as handle:
        return Manifest.from_json(handle.read(), str(loc))


def sha256_of(loc: Location, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with loc.fs.open_input_stream(loc.path) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
