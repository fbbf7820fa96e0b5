"""Shared fixtures: real text from the Python standard library, written as raw files."""

from __future__ import annotations

import ast
import importlib.util
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
