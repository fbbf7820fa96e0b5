"""Limits: embedding documents of 1-5 MB takes no more memory than embedding short ones.

Every encoder reads a bounded window of each text, and the store cuts texts
to it as they are read, so `embed`'s peak memory is set by the batch, not by
the longest document. Before, the hashed encoder built every n-gram of every
document (about 100 bytes per character: gigabytes for this corpus) and
MiniLM tokenised whole documents.

Measured in a child process as VmHWM (its peak resident set), after each
encoder has embedded a short corpus of the same shape twice, so models,
imports and allocator arenas are in the baseline.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.storage import DOCUMENTS_SCHEMA, write_dataset
from tests.conftest import stdlib_docstrings
from tests.reliability.helpers import RSS, peak_rss_mib_line, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MB = 1 << 20
LONG = [(1 + i % 5) * MB for i in range(20)]  # 1 to 5 MB each, 60 MB in all

EMBED = (
    RSS
    + """
from curation.embeddings import HashedEncoder, MiniLMEncoder, StaticEncoder, embed_dataset
folder, model = sys.argv[1:3]
encoders = {"hashed": HashedEncoder(), "static": StaticEncoder(model), "minilm": MiniLMEncoder()}
for run in range(2):  # torch's allocator settles on the second run
    for name, encoder in encoders.items():
        embed_dataset(folder + "/short", folder + f"/warm-{run}-{name}", encoder)
base = vm_hwm_mib()
for name, encoder in encoders.items():
    report = embed_dataset(folder + "/long", folder + "/emb-" + name, encoder)
    print("after", name, report.encoded, vm_hwm_mib())
print("rss", base, vm_hwm_mib())
"""
)


def _write(folder, sizes: list[int]) -> None:
    """Real docstrings repeated to each size; one document per row group, as a reader meets them."""
    prose = "\n\n".join(stdlib_docstrings(200))

    def tables():
        for i, size in enumerate(sizes):
            text = (prose * (size // len(prose) + 1))[:size]
            row = {"id": f"doc-{i:03d}", "source": "long", "text": text, "n_chars": size}
            yield pa.Table.from_pylist([{**row, "meta": None, "origin": f"gen:{i}"}], DOCUMENTS_SCHEMA)

    write_dataset(folder, tables(), DOCUMENTS_SCHEMA, "documents")


def test_long_documents_do_not_grow_embed_memory(tmp_path, static_model):
    _write(tmp_path / "long", LONG)
    _write(tmp_path / "short", [2000 + 150 * i for i in range(len(LONG))])
    done = run(EMBED, str(tmp_path), str(static_model))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("hashed", "static", "minilm"):
        assert f"after {name} {len(LONG)} " in done.stdout, done.stdout
    base, peak = peak_rss_mib_line(done.stdout)
    # 60 MB of text went through three encoders, each batch holding all 20 documents. What
    # remains is reading one row group (one 5 MB document: about 50 MB of Arrow buffers,
    # kept by its allocator); three times the corpus grows it no further.
    assert peak - base < 64, done.stdout
