"""One writer per output folder: a second run fails clearly instead of mixing files.

Locally an advisory `flock` on `<folder>.lock` beside the folder, released by the
kernel when the process dies, so a killed run never leaves a stale lock. Object
stores have no such primitive: there, the manifest-last rule still keeps readers
from seeing a mix, and concurrent writers are the caller's to avoid.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.errors import CurationError
from curation.storage.fs import Location


@contextmanager
def output_lock(folder: Location) -> Iterator[None]:
    if not folder.is_local:
        yield
        return
    path = Path(folder.path.rstrip("/") + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise CurationError(
                f"{folder}: being written by {holder}; wait for it or pick another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
