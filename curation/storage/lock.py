"""One writer per output folder, for the whole run: a second run fails at once
instead of mixing files, and a run writes only into a folder that is its own.

Locally an advisory `flock` on `<folder>.lock` beside the folder, released by the
kernel when the process dies, so a killed run never leaves a stale lock. The
lock file is opened without following symbolic links and must be a plain file
with one name, so a planted `<folder>.lock` link cannot make us truncate another
file. Object stores have no such primitive: there, the manifest-last rule still
keeps readers from seeing a mix, and concurrent writers are the caller's to avoid.

Inside the lock, the run is a session of `output.py`, which refuses a folder
holding files curation did not write and keeps track of what this run writes.
A writer called by another writer of the same run (a stage writing its
`documents/`) shares the outer run's lock and session.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from curation.errors import CurationError
from curation.storage.fs import Location, resolve
from curation.storage.output import active_session, session_for

F = TypeVar("F", bound=Callable)


@contextmanager
def output_lock(folder: Location) -> Iterator[None]:
    if active_session(folder, this_thread=True) is not None:
        yield  # part of a run that already holds the folder or one around it
        return
    with _flock(folder), session_for(folder):
        yield


def locks_output(parameter: str) -> Callable[[F], F]:
    """Decorator: the call holds `output_lock` on the folder its argument
    `parameter` names from start to end, so a second run fails before any work."""

    def wrap(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            folder = signature.bind(*args, **kwargs).arguments[parameter]
            with output_lock(resolve(folder)):
                return function(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap


@contextmanager
def _flock(folder: Location) -> Iterator[None]:
    if not folder.is_local:
        yield
        return
    path = Path(folder.path.rstrip("/") + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise CurationError(
                f"{folder}: being written by {holder}; wait for it or pick another output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CurationError(f"{path}: is a symbolic link; refusing to follow it (remove it)") from None
        raise CurationError(f"{path}: cannot open the lock file ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise CurationError(f"{path}: not a plain lock file (a link, FIFO or device?); refusing to use it")
    return fd
