"""Paths that may be local folders or object-store URIs, and atomic writes on both.

Every path in the project goes through `resolve`, which returns a pyarrow
filesystem and a path inside it, so S3/GCS/HDFS work wherever local paths do.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import pyarrow.fs as pafs

from curation.errors import CurationError


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path inside it; `uri` is what the user gave."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *parts])
        uri = "/".join([self.uri.rstrip("/"), *parts])
        return Location(self.fs, path, uri)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def size(self) -> int:
        return self.fs.get_file_info(self.path).size

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def __str__(self) -> str:
        return self.uri


def resolve(path: str | os.PathLike | Location) -> Location:
    """Turn a local path or a URI (s3://, gs://, file://, ...) into a Location."""
    if isinstance(path, Location):
        return path
    text = os.fspath(path)
    if "://" in text:
        fs, inner = pafs.FileSystem.from_uri(text)
        return Location(fs, inner, text)
    absolute = str(Path(text).expanduser().resolve())
    return Location(pafs.LocalFileSystem(), absolute, text)


def relative_parts(relative: str | os.PathLike) -> list[str]:
    """The components of a path that must stay inside a folder; raises
    CurationError for an absolute path, a URI, a `..` component or an empty path.
    `.` and empty components (`a//b`, `./a`) are dropped."""
    text = os.fspath(relative)
    if not isinstance(text, str):
        raise CurationError(f"{text!r}: a relative path must be text")
    if not text or "\0" in text:
        raise CurationError(f"{text!r}: not a usable relative path")
    if "://" in text or text.startswith(("/", "\\", "~")) or PureWindowsPath(text).drive:
        raise CurationError(f"{text!r}: an absolute path or URI where a relative path is expected")
    parts = [part for part in text.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise CurationError(f"{text!r}: '..' would leave the storage root")
    if not parts:
        raise CurationError(f"{text!r}: names the root itself, not a path inside it")
    return parts


def safe_join(root: str | os.PathLike | Location, *relative: str | os.PathLike) -> Location:
    """`root` joined with relative paths from config, which may not leave it.

    Use this wherever a config value names a place under a storage root (Dagster's
    `StorageRoot.location(*parts)`, CLI output names): absolute paths, URIs and
    `..` components are refused with CurationError instead of writing elsewhere.
    """
    base = resolve(root)
    parts = [piece for part in relative for piece in relative_parts(part)]
    return base.join(*parts) if parts else base


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Write a whole file so that readers see the old file or the new one, never a part.

    Locally: temp file in the same folder, fsync, rename. Object stores make a
    PUT visible only when complete, so a plain write is already atomic there.
    The run writing the folder claims the name first (see output.py).
    """
    _claim(loc)
    if not loc.is_local:
        with loc.fs.open_output_stream(loc.path) as out:
            out.write(data)
        return
    target = Path(loc.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def temp_sibling(loc: Location) -> Location:
    """A hidden temporary name next to `loc`, for writers that stream into a file."""
    name = loc.path.rstrip("/").rsplit("/", 1)[-1]
    parent = loc.path.rstrip("/").rsplit("/", 1)[0]
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    return Location(loc.fs, tmp, tmp)


def commit(tmp: Location, final: Location) -> None:
    """Move a finished temp file to its final name (atomic on local filesystems)."""
    _claim(final)
    if tmp.is_local:
        with open(tmp.path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp.path, final.path)
        _fsync_dir(Path(final.path).parent)
    else:
        tmp.fs.move(tmp.path, final.path)


def remove(loc: Location) -> None:
    """Remove one file (a writer's own temp file); folders are never removed here."""
    if loc.fs.get_file_info(loc.path).type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def sha256_of(loc: Location, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with loc.fs.open_input_stream(loc.path) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _claim(loc: Location) -> None:
    from curation.storage.output import claim  # output.py builds on this module

    claim(loc)


def _fsync_dir(folder: Path) -> None:
    # A rename is durable only once the folder entry itself reaches disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
