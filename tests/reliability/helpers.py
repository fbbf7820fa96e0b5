"""Child processes to kill, folders to compare, and what a reader may see mid-write."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from curation.storage.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]

# Prepended to every child's code: `hang(marker)` writes the marker file and waits
# to be killed, so a test can SIGKILL a writer at a point it chose.
PRELUDE = """
import os, sys, time
sys.path.insert(0, {repo!r})

def hang(marker):
    with open(marker + ".part", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(marker + ".part", marker)
    while True:
        time.sleep(60)
"""


def start(code: str, *args: str) -> subprocess.Popen:
    """Run `code` (dedented) in a fresh interpreter; sys.argv[1:] are `args`."""
    source = PRELUDE.format(repo=str(REPO)) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", source, *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = start(code, *args)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL the child (if still running) and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_for_marker(proc: subprocess.Popen, marker: Path, watch=None, timeout: float = 240) -> None:
    """Poll until the child writes `marker`, calling `watch()` on every round, so
    the folder the child writes is inspected many times while it writes."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if watch is not None:
            watch()
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"child exited {proc.returncode} before {marker.name}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(f"child never reached {marker.name}")
        time.sleep(0.002)
    if watch is not None:
        watch()


def kill_at_marker(proc: subprocess.Popen, marker: Path, watch=None) -> None:
    """Wait for the marker, then SIGKILL: the child dies in the middle of its work."""
    try:
        wait_for_marker(proc, marker, watch)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def is_temp(path: Path) -> bool:
    return path.name.endswith(".tmp")


def temp_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if is_temp(p)]


def check_no_partial_file_visible(folder: Path, row_bytes: int | None = None) -> int:
    """What a reader listing `folder` right now may see: temp files (hidden, `.tmp`)
    and whole files. Every final-named Parquet file opens, every manifest or index
    lists files that exist with their recorded sizes, every .bin shard holds whole
    rows. Returns how many final-named files were checked."""
    checked = 0
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or is_temp(path):
            continue
        try:
            _check_whole(path, row_bytes)
        except FileNotFoundError:
            continue  # removed between listing and opening: not a partial file
        checked += 1
    return checked


def _check_whole(path: Path, row_bytes: int | None) -> None:
    assert not path.name.startswith("."), f"{path}: a hidden file that is not a temp file"
    if path.suffix == ".parquet":
        pq.ParquetFile(path).metadata  # raises on a file without its footer  # noqa: B018
    elif path.name == "manifest.json":
        manifest = Manifest.from_json(path.read_bytes(), str(path))
        for entry in manifest.files:
            assert (path.parent / entry.path).stat().st_size == entry.bytes, f"{path}: lists {entry.path}"
    elif path.name == "index.json":
        index = orjson.loads(path.read_bytes())
        for source in index["sources"].values():
            for entry in source["shards"]:
                assert (path.parent / entry["path"]).stat().st_size == entry["bytes"]
    elif path.suffix == ".bin":
        assert row_bytes, f"{path}: a shard, but no row size given"
        size = path.stat().st_size
        assert size > 0 and size % row_bytes == 0, f"{path}: {size} bytes is not whole rows of {row_bytes}"
    elif path.suffix == ".json":
        orjson.loads(path.read_bytes())  # _job.json, tokenizer.json, subset.json: whole JSON
    else:
        raise AssertionError(f"{path}: unexpected file in an output folder")


def peak_rss_mib_line(stdout: str) -> tuple[int, int]:
    """(baseline, peak) from a child's `rss BASE PEAK` line (VmHWM, MiB)."""
    match = re.search(r"^rss (\d+) (\d+)$", stdout, re.M)
    assert match, stdout
    return int(match.group(1)), int(match.group(2))


# A child prints `rss BASE PEAK` with this: VmHWM is per process image, so unlike
# ru_maxrss it does not inherit the parent's (pytest's) high-water mark.
RSS = """
import re as _re
def vm_hwm_mib():
    status = open("/proc/self/status").read()
    return int(_re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024
"""


# ---------------------------------------------------------------- data


def corpus_lines(texts: list[str], count: int, start: int = 0, bad_every: int = 0) -> list[bytes]:
    """`count` JSONL lines of real text, distinct by their number; every
    `bad_every`-th line is broken JSON, so quarantine has rows too."""
    lines = []
    for i in range(start, start + count):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(b'{"text": "cut off in the middle')
        else:
            lines.append(orjson.dumps({"text": f"{texts[i % len(texts)]}\n[{i}]", "n": i}))
    return lines


def write_raw_corpus(folder: Path, texts: list[str], files: int, per_file: int, bad_every: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = corpus_lines(texts, per_file, f * per_file, bad_every)
        (folder / f"part-{f:03d}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def document_batches(texts: list[str], batches: int, rows: int):
    """Documents-schema tables of real text, for write_dataset."""
    import pyarrow as pa

    from curation.storage import DOCUMENTS_SCHEMA

    for b in range(batches):
        numbers = range(b * rows, (b + 1) * rows)
        body = [f"{texts[i % len(texts)]} [{i}]" for i in numbers]
        yield pa.table(
            {
                "id": [f"doc-{i:06d}" for i in numbers],
                "source": ["stdlib"] * rows,
                "text": body,
                "n_chars": [len(t) for t in body],
                "meta": [None] * rows,
                "origin": [f"gen:{i}" for i in numbers],
            },
            schema=DOCUMENTS_SCHEMA,
        )


def train_config(**changes):
    from curation.train.loop import TrainConfig
    from curation.train.model import GPTConfig

    base = dict(
        model=GPTConfig(layers=1, heads=2, width=32),
        steps=12,
        batch_size=4,
        lr=3e-3,
        eval_every=6,
        checkpoint_every=4,
        holdout=4,
    )
    return TrainConfig(**{**base, **changes})
