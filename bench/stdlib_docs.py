"""Real text for the embedding benchmarks: docstrings and function sources of
the running Python's standard library, in a fixed order."""

from __future__ import annotations

import ast
import random
import sysconfig
from pathlib import Path

SKIP = {"site-packages", "lib2to3", "turtledemo"}
TESTS = {"test", "tests", "idlelib"}  # function sources only: their docstrings are terse


def _files():
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if not SKIP & parts:
            yield path, bool(TESTS & parts)


def stdlib_texts() -> tuple[list[str], list[str]]:
    """(docstrings longer than 40 characters, function sources longer than 80), deduplicated."""
    docs, sources = {}, {}
    for path, is_test in _files():
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = text.splitlines()
        for node in ast.walk(tree):
            kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module
            if not is_test and isinstance(node, kinds):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    docs.setdefault(doc, None)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                segment = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                if len(segment) > 80:
                    sources.setdefault(segment, None)
    return list(docs), list(sources)


def mixed_sample(n: int, seed: int = 0) -> list[str]:
    """n texts of mixed length: three quarters docstrings, one quarter function sources."""
    docs, sources = stdlib_texts()
    rng = random.Random(seed)
    return rng.sample(docs, n - n // 4) + rng.sample(sources, n // 4)
