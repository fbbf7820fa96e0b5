"""Shared fixtures: real text from the Python standard library, written as raw files."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import pytest


def stdlib_docstrings(limit: int = 200) -> list[str]:
    """Real prose nobody on the team wrote: docstrings of a few stdlib modules."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for name in ("textwrap.py", "difflib.py", "argparse.py", "fractions.py", "shutil.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    texts.append(doc)
    return texts[:limit]


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    return stdlib_docstrings()
