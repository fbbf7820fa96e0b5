"""Limits: a document over max_doc_bytes is quarantined without being loaded whole,
and ingest's memory does not grow with the corpus.

Memory is measured in a child process as VmHWM (its peak resident set), after
a warm-up ingest, so imports and allocator arenas are in the baseline."""

from __future__ import annotations

import shutil

import orjson
import pytest
import zstandard

from tests.reliability.helpers import RSS, peak_rss_mib_line, run

LINE = 200 << 20  # one 200 MB line
MAX_DOC = 1 << 20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ONE_INPUT = (
    RSS
    + """
from curation.storage import Dataset, IngestConfig, ingest, open_quarantine
warm, big, out = sys.argv[1:4]
ingest([warm], out + "-warm", IngestConfig(max_doc_bytes=int(sys.argv[4])))
base = vm_hwm_mib()
report = ingest([big], out, IngestConfig(max_doc_bytes=int(sys.argv[4])))
peak = vm_hwm_mib()
bad = open_quarantine(out).read_table().to_pylist()
docs = Dataset.open(out).read_table().to_pylist()
print("rss", base, peak)
print("result", [(b["line"], b["reason"]) for b in bad], [d["text"] for d in docs])
"""
)


def _write_huge(path, kind: str) -> None:
    if kind == "csv":
        with open(path, "wb") as out:
            out.write(b"text,meta\nbefore,1\n")
            out.write(b'"' + b"a" * LINE + b'",2\n')
            out.write(b"after,3\n")
        return
    head = orjson.dumps({"text": "before"}) + b"\n" + b'{"text": "'
    tail = b'"}\n' + orjson.dumps({"text": "after"}) + b"\n"
    if kind == "jsonl.zst":  # 200 MB of text in a few kB: it must not be inflated at once
        compressor = zstandard.ZstdCompressor().compressobj()
        block = b"a" * (16 << 20)
        parts = [compressor.compress(head), *(compressor.compress(block) for _ in range(LINE // len(block)))]
        path.write_bytes(b"".join([*parts, compressor.compress(tail), compressor.flush()]))
        return
    with open(path, "wb") as out:
        out.write(head)
        block = b"a" * (16 << 20)
        for _ in range(LINE // len(block)):
            out.write(block)
        out.write(tail)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "jsonl.zst"])
def test_a_200_mb_document_is_quarantined_without_being_loaded(tmp_path, kind):
    huge = tmp_path / f"huge.{kind}"
    _write_huge(huge, kind)
    warm = tmp_path / f"warm.{kind.split('.')[0]}"
    warm.write_bytes(b"text,meta\nwarm,1\n" if kind == "csv" else b'{"text": "warm"}\n')
    try:
        done = run(ONE_INPUT, str(warm), str(huge), str(tmp_path / "out"), str(MAX_DOC))
    finally:
        huge.unlink()  # pytest keeps the last runs' folders: leave no 200 MB behind
    assert done.returncode == 0, done.stderr[-3000:]
    base, peak = peak_rss_mib_line(done.stdout)
    assert peak - base < (LINE >> 20) // 8, f"peak grew by {peak - base} MiB reading one {LINE >> 20} MB line"
    first = 2 if kind == "csv" else 1
    assert f"result [({first + 1}, 'too_large')] ['before', 'after']" in done.stdout, done.stdout


TWO_SIZES = (
    RSS
    + """
import orjson
from curation.storage import IngestConfig, ingest
from tests.conftest import stdlib_docstrings
texts = stdlib_docstrings(200)
folder = sys.argv[1]

def write(path, size):
    written = n = 0
    with open(path, "wb") as out:
        while written < size:
            body = " ".join(texts[(n + k) % len(texts)] for k in range(6)) + f" [{n}]"
            line = orjson.dumps({"text": body}) + b"\\n"
            out.write(line)
            written, n = written + len(line), n + 1
    return n

small, large = int(sys.argv[2]), int(sys.argv[3])
counts = write(folder + "/small.jsonl", small), write(folder + "/large.jsonl", large)
ingest([folder + "/warm.jsonl"], folder + "/warm")
base = vm_hwm_mib()
a = ingest([folder + "/small.jsonl"], folder + "/out-small")
after_small = vm_hwm_mib()
b = ingest([folder + "/large.jsonl"], folder + "/out-large")
print("rss", after_small, vm_hwm_mib())
print("base", base)
assert (a.documents, b.documents) == counts, (a.documents, b.documents, counts)
"""
)


def test_ingest_memory_does_not_grow_with_the_corpus(tmp_path):
    """60 MB then 300 MB of JSONL through one process: the peak after the large
    corpus is no higher than after the small one (give or take allocator noise),
    and far below the large corpus's size."""
    small, large = 60 << 20, 300 << 20
    (tmp_path / "warm.jsonl").write_bytes(b'{"text": "warm up"}\n')
    try:
        done = run(TWO_SIZES, str(tmp_path), str(small), str(large))
    finally:
        for name in ("small.jsonl", "large.jsonl", "out-small", "out-large"):  # 700 MB in all
            path = tmp_path / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    after_small, after_large = peak_rss_mib_line(done.stdout)
    base = int(done.stdout.split("base ")[1].split()[0])
    assert after_large - after_small < 32, done.stdout  # 240 MB more input, (almost) no more memory
    assert after_large - base < (large >> 20) // 2, done.stdout
