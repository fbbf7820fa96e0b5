"""Shared fixtures: real text from the Python standard library, written as raw files;
a small static encoder model for every test that embeds with `auto` or `static`."""

from __future__ import annotations

import ast
import importlib.util
import tempfile
from pathlib import Path

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
