"""A documents dataset made of real stdlib docstrings."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.storage import DOCUMENTS_SCHEMA, write_dataset


def write_documents(path, texts: list[str], source: str = "stdlib"):
    n = len(texts)
    table = pa.table(
        {
            "id": [f"doc-{i:05d}" for i in range(n)],
            "source": [source] * n,
            "text": texts,
            "n_chars": [len(t) for t in texts],
            "meta": [None] * n,
            "origin": [f"stdlib.txt:{i + 1}" for i in range(n)],
        },
        schema=DOCUMENTS_SCHEMA,
    )
    return write_dataset(path, [table], DOCUMENTS_SCHEMA, "documents", rows_per_file=70)


@pytest.fixture
def documents(tmp_path, real_texts):
    write_documents(tmp_path / "documents", real_texts)
    return tmp_path / "documents"
