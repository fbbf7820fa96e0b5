"""A few thousand real documents (the bundled default corpus) for the engine tests."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation import default_corpus
from curation.storage import DOCUMENTS_SCHEMA, Dataset, ingest, write_dataset


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """The whole default corpus (about 25,000 documents, six sources, real near-duplicates),
    re-written in parts of 7,000 rows so that tasks cross file boundaries."""
    root = tmp_path_factory.mktemp("corpus")
    ingest(default_corpus.build(root / "raw"), str(root / "ingested"))
    table = Dataset.open(root / "ingested").read_table()
    write_dataset(root / "documents", table.to_batches(max_chunksize=3000), DOCUMENTS_SCHEMA, "documents",
                  rows_per_file=7000)  # fmt: skip
    return str(root / "documents")


@pytest.fixture(scope="session")
def small_corpus(corpus, tmp_path_factory) -> str:
    """Every eighth document of the corpus (about 3,000), in parts of 1,000 rows."""
    table = Dataset.open(corpus).read_table()
    rows = pa.array(range(0, table.num_rows, 8))
    out = tmp_path_factory.mktemp("small") / "documents"
    write_dataset(out, table.take(rows).to_batches(max_chunksize=500), DOCUMENTS_SCHEMA, "documents",
                  rows_per_file=1000)  # fmt: skip
    return str(out)
