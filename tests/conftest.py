"""Shared fixtures: real text from the Python standard library, written as raw files;
a small static encoder model for every test that embeds with `auto` or `static`; the
bundled default corpus as a documents dataset (engine and distributed dedup tests)."""

from __future__ import annotations

import ast
import importlib.util
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest

MODULES = (
    "textwrap", "difflib", "argparse", "fractions", "shutil", "typing", "inspect", "pathlib",
    "subprocess", "tarfile", "zipfile", "logging", "email.message", "statistics", "functools",
)  # fmt: skip


def stdlib_docstrings(limit: int = 200) -> list[str]:
    """Real prose nobody on the team wrote: docstrings of some stdlib modules."""
    texts: list[str] = []
    for name in MODULES:
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    texts.append(doc)
    return texts[:limit]


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    return stdlib_docstrings()


# The static encoder distilled with the first 6,000 vocabulary entries: good enough to
# tell paraphrases from unrelated text, and built in seconds rather than a minute.
TEST_STATIC_VOCABULARY = 6000


@pytest.fixture(scope="session", autouse=True)
def static_model(tmp_path_factory) -> Path:
    """Every test runs with CURATION_CACHE in a fresh folder (nothing touches the user's
    cache) and CURATION_STATIC_MODEL at the small model, which is built offline once per
    machine into the temp folder and checked (sha256 of its files) by each session."""
    from curation.embeddings.static import DistillSettings, ensure_built

    settings = DistillSettings(vocabulary=TEST_STATIC_VOCABULARY)
    folder = Path(tempfile.gettempdir()) / "curation-test-models" / settings.folder_name()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("CURATION_CACHE", str(tmp_path_factory.mktemp("cache")))
        ensure_built(folder, settings)
        mp.setenv("CURATION_STATIC_MODEL", str(folder))
        yield folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """The whole default corpus (about 25,000 documents, six sources, real near-duplicates),
    re-written in parts of 7,000 rows so that tasks cross file boundaries."""
    from curation import default_corpus
    from curation.storage import DOCUMENTS_SCHEMA, Dataset, ingest, write_dataset

    root = tmp_path_factory.mktemp("corpus")
    ingest(default_corpus.build(root / "raw"), str(root / "ingested"))
    table = Dataset.open(root / "ingested").read_table()
    write_dataset(root / "documents", table.to_batches(max_chunksize=3000), DOCUMENTS_SCHEMA, "documents",
                  rows_per_file=7000)  # fmt: skip
    return str(root / "documents")


@pytest.fixture(scope="session")
def small_corpus(corpus, tmp_path_factory) -> str:
    """Every eighth document of the corpus (about 3,000), in parts of 1,000 rows."""
    from curation.storage import DOCUMENTS_SCHEMA, Dataset, write_dataset

    table = Dataset.open(corpus).read_table()
    rows = pa.array(range(0, table.num_rows, 8))
    out = tmp_path_factory.mktemp("small") / "documents"
    write_dataset(out, table.take(rows).to_batches(max_chunksize=500), DOCUMENTS_SCHEMA, "documents",
                  rows_per_file=1000)  # fmt: skip
    return str(out)
