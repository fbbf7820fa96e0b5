"""What an output folder holds that curation wrote, and removing only that.

A writer may remove only the files its folder's commit file lists
(`manifest.json`, a shard set's `index.json` and `subset.json`), the files it
claimed in `_pending.json` before giving them their final names, and its own
temporary names (`.<name>.<hex digits>.tmp`). Everything else in the folder
belongs to someone else and is never removed or replaced.

A folder that is neither new, empty, nor holding such a record is someone
else's: writing there is refused, unless the caller allows it with
`overwrite_allowed(folder)` (the CLI's --overwrite); then our files are written
beside theirs and an existing file of theirs under one of our names is refused.

A run of a writer is a `Session`, opened by `output_lock` (lock.py) for the
whole run. `write_bytes_atomic` and `commit` (fs.py) claim each final name
before the rename, so a killed run leaves only names its journal lists, and the
next run can clear them. `clear_output` claims the old output's files, removes
its commit file (so no reader takes the folder for data), then the files.
`write_manifest` lists every file the session wrote under its folder besides the
parts (centroids, `_job.json`, a nested dataset), so verifying the manifest
covers everything the output holds. A session that ends cleanly with its commit
file written drops the journal.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import orjson
import pyarrow.fs as pafs

from curation.errors import CurationError
from curation.storage.fs import Location, relative_parts, resolve, sha256_of, write_bytes_atomic

PENDING = "_pending.json"
MANIFEST = "manifest.json"
SHARD_INDEX = "index.json"
SUBSET = "subset.json"
COMMIT_FILES = (MANIFEST, SHARD_INDEX, SUBSET)
_TEMP = re.compile(r"^\..+\.[0-9a-f]+\.tmp$")
_PENDING_KIND = "curation-pending"

_allowed: ContextVar[tuple[str, ...]] = ContextVar("curation_overwrite_allowed", default=())


@contextmanager
def overwrite_allowed(*folders) -> Iterator[None]:
    """Let writers inside this block write into `folders` (and folders under them)
    even when they hold files curation did not write; only ours are replaced."""
    paths = tuple(resolve(f).path.rstrip("/") for f in folders if f is not None)
    token = _allowed.set(_allowed.get() + paths)
    try:
        yield
    finally:
        _allowed.reset(token)


def is_temp_name(name: str) -> bool:
    return bool(_TEMP.match(name))


@dataclass
class Session:
    """One run writing one folder: what it may remove, and what it has written."""

    folder: Location
    foreign: bool  # entered a folder that was not ours, by permission
    claimed: set[str]  # the journal: names this run (or a killed earlier one) gave out
    owned_at_start: set[str]
    known: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (bytes, sha256)
    thread: int = field(default_factory=threading.get_ident)
    pid: int = field(default_factory=os.getpid)

    def relative(self, loc: Location) -> str | None:
        """`loc`'s path inside the folder ("" for the folder itself), or None."""
        root = self.folder.path.rstrip("/")
        path = loc.path.rstrip("/")
        if path == root:
            return ""
        return path[len(root) + 1 :] if path.startswith(root + "/") else None

    def claim(self, names: Collection[str]) -> None:
        new = {n for n in names if n not in self.claimed and n != PENDING and not is_temp_name(_base(n))}
        for name in sorted(new):
            if self.foreign and name not in self.owned_at_start and self.folder.join(name).exists():
                raise CurationError(
                    f"{self.folder.join(name)}: exists and curation did not write it; refusing to replace it"
                )
        if new:
            self.claimed.update(new)
            self._write_journal()

    def _write_journal(self) -> None:
        body = {"kind": _PENDING_KIND, "files": sorted(self.claimed)}
        write_bytes_atomic(self.folder.join(PENDING), orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def owned(self, prefix: str = "") -> set[str]:
        """Names under `prefix` ("" or "sub/") that this run may remove."""
        names = listed_files(self.folder) | self.claimed
        if prefix:
            names |= {prefix + n for n in listed_files(self.folder.join(prefix.rstrip("/")))}
        return {n for n in names if n.startswith(prefix)}

    def sidecars(self, folder: Location, parts: Collection[str]) -> list[tuple[str, int, str]]:
        """(name, bytes, sha256) of the files this session claimed under `folder`
        that exist and are not among `parts` or the manifest itself."""
        base = self.relative(folder)
        prefix = f"{base}/" if base else ""
        found = []
        for name in sorted(self.claimed):
            inner = name[len(prefix) :]
            if not name.startswith(prefix) or inner in parts or inner == MANIFEST:
                continue
            loc = self.folder.join(name)
            info = loc.fs.get_file_info(loc.path)
            if info.type != pafs.FileType.File:
                continue
            size, digest = self.known.get(name, (None, None))
            if size != info.size:
                size, digest = info.size, sha256_of(loc)
            found.append((inner, size, digest))
        return found

    def finish(self) -> None:
        """After a clean run: keep in the journal only what the commit file does not list."""
        if not any(self.folder.join(name).exists() for name in COMMIT_FILES):
            return  # nothing committed: the journal still says what is ours
        rest = {n for n in self.claimed - listed_files(self.folder) if self.folder.join(n).exists()}
        if rest and rest != self.claimed:
            self.claimed = rest
            self._write_journal()
        elif not rest:
            self.claimed = set()
            _remove_file(self.folder.join(PENDING))


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


# ---------------------------------------------------------------- the sessions of this process

_sessions: list[Session] = []
_sessions_lock = threading.Lock()


def active_session(loc: Location, this_thread: bool = False) -> Session | None:
    """The session of this process (of this thread, if asked) whose folder holds `loc`."""
    with _sessions_lock:
        for session in reversed(_sessions):
            mine = not this_thread or session.thread == threading.get_ident()
            if session.pid == os.getpid() and mine and session.relative(loc) is not None:
                return session
    return None


@contextmanager
def session_for(folder: Location) -> Iterator[Session]:
    """Open a session on `folder` (the caller holds its lock): refuse a folder that
    is not ours unless allowed; on a clean exit, settle the journal."""
    with _sessions_lock:  # held while opening: two threads cannot both take the folder
        for other in _sessions:
            inside = other.relative(folder) is not None or _contains(folder, other.folder)
            if other.pid == os.getpid() and inside:
                raise CurationError(
                    f"{folder}: being written by pid {os.getpid()} (another thread of this process); "
                    "wait for it or pick another output"
                )
        session = _open(folder)
        _sessions.append(session)
    try:
        yield session
        session.finish()
    finally:
        with _sessions_lock:
            _sessions.remove(session)


def _contains(outer: Location, inner: Location) -> bool:
    root = outer.path.rstrip("/")
    return inner.path.startswith(root + "/")


def _open(folder: Location) -> Session:
    listed = listed_files(folder)
    journal = _read_journal(folder)
    foreign = False
    if not listed and journal is None:
        theirs = _foreign_entries(folder)
        if theirs:
            if not _is_allowed(folder):
                shown = ", ".join(theirs[:4]) + (", ..." if len(theirs) > 4 else "")
                raise CurationError(
                    f"{folder}: holds files curation did not write ({shown}); refusing to write there. "
                    "Pick a new or empty folder, or pass --overwrite to write beside them "
                    "(only curation's own files are ever replaced)"
                )
            foreign = True
    claimed = set(journal or ())
    return Session(folder, foreign, claimed, listed | claimed)


def _is_allowed(folder: Location) -> bool:
    path = folder.path.rstrip("/")
    return any(path == p or path.startswith(p + "/") for p in _allowed.get())


def _foreign_entries(folder: Location) -> list[str]:
    if not folder.is_dir():
        return [folder.uri] if folder.exists() else []
    entries = folder.fs.get_file_info(pafs.FileSelector(folder.path))
    return sorted(info.base_name for info in entries if not is_temp_name(info.base_name))


def _read_journal(folder: Location) -> list[str] | None:
    body = _read_json(folder.join(PENDING))
    if not isinstance(body, dict) or body.get("kind") != _PENDING_KIND:
        return None
    return _plain_names(body.get("files"))


def _read_json(loc: Location):
    info = loc.fs.get_file_info(loc.path)
    if info.type != pafs.FileType.File:
        return None
    try:
        with loc.fs.open_input_stream(loc.path) as handle:
            return orjson.loads(handle.read())
    except (OSError, orjson.JSONDecodeError):
        return None


def _plain_names(paths) -> list[str]:
    """The entries of `paths` that are plain relative paths (never `..` or absolute)."""
    names = []
    for path in paths if isinstance(paths, list) else []:
        try:
            if isinstance(path, str) and "/".join(relative_parts(path)) == path:
                names.append(path)
        except CurationError:
            continue
    return names


def listed_files(folder: Location) -> set[str]:
    """Every name the folder's commit files list, the commit files included.

    Read leniently (no checksum check): a damaged manifest still says which files
    are ours. Outputs written before manifests listed everything are read too:
    a documents dataset's `_quarantine/`, a clusters' centroids, an embeddings
    store's `_job.json`, a stage folder's decisions and documents."""
    names: set[str] = set()
    manifest = _read_json(folder.join(MANIFEST))
    if isinstance(manifest, dict):
        names.add(MANIFEST)
        for key in ("files", "sidecars"):
            entries = manifest.get(key)
            entries = entries if isinstance(entries, list) else []
            names.update(_plain_names([e.get("path") for e in entries if isinstance(e, dict)]))
        extra = manifest.get("extra") if isinstance(manifest.get("extra"), dict) else {}
        names.update(_plain_names([extra.get("centroids")]))
        if manifest.get("kind") == "embeddings":
            names.add("_job.json")
        for sub in _plain_names([extra.get("quarantine")]):
            names.update(f"{sub}/{n}" for n in listed_files(folder.join(sub)))
    elif folder.join("decisions.parquet").exists() and folder.join("documents", MANIFEST).exists():
        names.update({"decisions.parquet", "kmq_state.json"})  # a stage folder of an older version
        names.update(f"documents/{n}" for n in listed_files(folder.join("documents")))
    index = _read_json(folder.join(SHARD_INDEX))
    if isinstance(index, dict):
        names.update({SHARD_INDEX, SUBSET, "tokenizer.json"})
        sources = index.get("sources") if isinstance(index.get("sources"), dict) else {}
        for source in sources.values():
            shards = source.get("shards") if isinstance(source, dict) else None
            shards = shards if isinstance(shards, list) else []
            names.update(_plain_names([e.get("path") for e in shards if isinstance(e, dict)]))
        text = index.get("text") if isinstance(index.get("text"), dict) else {}
        files = text.get("files") if isinstance(text.get("files"), list) else []
        for sub in _plain_names([text.get("folder")]):
            names.update(_plain_names([f"{sub}/{e.get('path')}" for e in files if isinstance(e, dict)]))
        names.discard(SUBSET)
    if folder.join(SUBSET).exists():
        names.add(SUBSET)
    return names


# ---------------------------------------------------------------- what writers call


def claim(target: Location | str | os.PathLike) -> None:
    """Record, before `target` gets its final name, that this run writes it."""
    loc = resolve(target)
    session = active_session(loc)
    if session is None:
        return  # no run of ours is writing here (a worker process: its parts are claimed up front)
    name = session.relative(loc)
    if name:
        session.known.pop(name, None)  # being (re)written: a size and checksum noted before are stale
        session.claim([name])


def record(loc: Location, size: int, sha256: str) -> None:
    """Note a written file's size and checksum, so listing it costs no second read."""
    session = active_session(loc)
    name = session.relative(loc) if session is not None else None
    if name:
        session.known[name] = (size, sha256)


def claim_all(folder: Location, names: Collection[str]) -> None:
    """Claim `names` under `folder` at once: parts that worker processes will write."""
    session = active_session(folder)
    if session is not None:
        base = session.relative(folder)
        session.claim([f"{base}/{n}" if base else n for n in names])


def uncommit(folder: Location) -> Session:
    """Take the folder's commit files away before changing what they list, the
    journal first, so a kill from here on leaves a folder whose files we know."""
    session = active_session(folder)
    if session is None:
        raise CurationError(f"{folder}: changed outside a run that holds its lock (a bug in curation)")
    everything = session.owned()
    session.claim([n for n in everything if session.folder.join(n).exists()])
    for name in COMMIT_FILES:
        if name in everything:
            _remove_file(session.folder.join(name))
    return session


def clear_output(folder: Location, keep: Collection[str] = ()) -> None:
    """Make room for a new write in `folder` (the session's folder or one under it):
    uncommit, then remove only what we wrote there, `keep` (names relative to
    `folder`) excepted. Writes nothing when there is nothing of ours to remove."""
    session = uncommit(folder)
    base = session.relative(folder)
    prefix = f"{base}/" if base else ""
    if not folder.exists():
        folder.mkdir()
        return
    doomed = sorted(n for n in session.owned(prefix) if n[len(prefix) :] not in keep)
    for name in sorted(doomed, key=lambda n: _base(n) not in COMMIT_FILES):
        _remove_file(session.folder.join(name))
    _remove_temp_names(folder)
    _remove_empty_parents(session.folder, doomed)


def _remove_file(loc: Location) -> None:
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def _remove_temp_names(folder: Location) -> None:
    """Our temporary names anywhere under `folder`: files, and scratch folders.
    Symbolic links are neither followed nor removed."""
    if not folder.is_local:
        for info in folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True)):
            if is_temp_name(info.base_name) and info.type == pafs.FileType.File:
                folder.fs.delete_file(info.path)
        return
    for parent, dirs, files in os.walk(folder.path):
        for name in [d for d in dirs if is_temp_name(d)]:
            dirs.remove(name)
            if not os.path.islink(os.path.join(parent, name)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        for name in files:
            if is_temp_name(name) and not os.path.islink(os.path.join(parent, name)):
                os.unlink(os.path.join(parent, name))


def _remove_empty_parents(root: Location, names: Collection[str]) -> None:
    """Folders that held removed files go too, once empty (ours held only ours)."""
    folders = {n.rsplit("/", 1)[0] for n in names if "/" in n}
    for name in sorted(_with_ancestors(folders), key=lambda n: -n.count("/")):
        loc = root.join(name)
        if loc.is_dir() and not loc.fs.get_file_info(pafs.FileSelector(loc.path)):
            loc.fs.delete_dir(loc.path)


def _with_ancestors(folders: set[str]) -> set[str]:
    out = set()
    for name in folders:
        parts = name.split("/")
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


@contextmanager
def scratch_folder(folder: Location) -> Iterator[str]:
    """A temporary folder for a run's scratch files inside its local output folder
    (same disk), named as ours and removed afterwards; elsewhere, the system's."""
    if not folder.is_local:
        import tempfile

        yield tempfile.gettempdir()
        return
    with shared_scratch(folder) as loc:
        yield loc.path


@contextmanager
def shared_scratch(folder: Location) -> Iterator[Location]:
    """A scratch folder inside `folder` on its own filesystem (a local disk or an
    object store), so that workers on other machines reach it as the run's
    outputs; named as ours and removed afterwards."""
    import uuid

    loc = folder.join(f"._work.{uuid.uuid4().hex}.tmp")
    if loc.is_local:
        os.makedirs(loc.path, exist_ok=True)
    try:
        yield loc
    finally:
        with contextlib.suppress(OSError):  # nothing was written there
            loc.fs.delete_dir(loc.path)
