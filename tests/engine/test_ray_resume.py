"""A stage killed while it runs on Ray resumes: the finished parts are kept, the rest is done.

The driver (with the Ray it started) runs in its own process group and is
killed with SIGKILL once some embedding parts exist; the re-run, on the
tests' Ray, encodes only the missing parts and writes the store a local run writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

pytest.importorskip("ray")

from curation.embeddings import HashedEncoder, embed_dataset
from curation.storage import Dataset

DRIVER = """
import sys
from curation.embeddings import HashedEncoder, embed_dataset
from curation.engine import get_engine

documents, out, temp = sys.argv[1:4]
with get_engine("ray", num_cpus=2, temp_dir=temp) as engine:
    embed_dataset(documents, out, HashedEncoder(dim=32, n_features=1 << 12), rows_per_part=150, engine=engine)
"""


def _parts(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("part-*.parquet")) if folder.exists() else []


def _kill_after_parts(corpus: str, out, temp, wanted: int) -> int:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, corpus, str(out), str(temp)],
        start_new_session=True,  # the driver and the Ray it starts share a group: kill them all
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while len(_parts(out)) < wanted and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    return len(_parts(out))


@pytest.fixture
def ray_temp():
    """A short folder for Ray's files: its socket paths must stay under ~100 characters."""
    folder = tempfile.mkdtemp(prefix="cr-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(300)
def test_embeddings_killed_on_ray_resume(corpus, tmp_path, ray_temp, ray_engine):
    rows = Dataset.open(corpus).rows
    total = -(-rows // 150)
    out = tmp_path / "ray"
    done = _kill_after_parts(corpus, out, ray_temp, wanted=20)
    assert 20 <= done < total, "the kill must land while parts remain"
    assert not (out / "manifest.json").exists()  # a killed store is never opened as data
    encoder = HashedEncoder(dim=32, n_features=1 << 12)
    report = embed_dataset(corpus, out, encoder, rows_per_part=150, engine=ray_engine)
    assert report.parts == total and report.parts_reused >= done  # parts land whole or not at all
    assert report.encoded < rows
    embed_dataset(corpus, tmp_path / "local", encoder, rows_per_part=150)
    assert Dataset.open(out).manifest == Dataset.open(tmp_path / "local").manifest
