"""The bundled default corpus, built from text every Python installation ships.

Nobody on the team wrote it: it is the Python standard library's own prose and
code (PSF License), cut into six sources of very different sizes and written in
every input format ingest reads, so the demo exercises them all:

| source     | what                                            | format        |
|------------|-------------------------------------------------|---------------|
| code       | source of every stdlib function                 | Parquet       |
| docstrings | docstrings of stdlib classes and functions      | JSONL (.gz)   |
| modules    | module docstrings                               | JSONL (.zst)  |
| reference  | the language reference topics behind `help()`   | folder of .txt|
| idle       | IDLE's NEWS/HISTORY/README paragraphs           | CSV           |
| license    | sections of Python's LICENSE                    | JSONL         |

Real near-duplicates come with it: `posixpath`/`ntpath` and `_pyio`/`io`
share docstrings, `_pydecimal` repeats itself, IDLE's history repeats its news.
"""

from __future__ import annotations

import ast
import csv
import gzip
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from curation.storage.ingest import InputSpec

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if _SKIP_DIRS.intersection(parts) or parts[0].startswith("config-"):
            continue
        files.append(path)
    return files


def _parse(path: Path) -> tuple[ast.Module, list[str]] | None:
    try:
        text = path.read_text(encoding="utf-8")
        return ast.parse(text), text.splitlines()
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None  # a few stdlib files are deliberately broken or not UTF-8


def _walk_definitions(root: Path):
    """Yield (module name, module tree, source lines) for each stdlib file."""
    for path in _stdlib_files(root):
        parsed = _parse(path)
        if parsed is None:
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        yield module.removesuffix(".__init__"), parsed[0], parsed[1]


def _definitions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    stack = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                yield name, child
                stack.append((name + ".", child))


def _collect(root: Path) -> tuple[list[dict], list[dict], list[dict]]:
    modules, docstrings, code = [], [], []
    for module, tree, lines in _walk_definitions(root):
        doc = ast.get_docstring(tree)
        if doc is not None:
            modules.append({"text": doc, "module": module})
        for name, node in sorted(_definitions(tree), key=lambda item: item[1].lineno):
            doc = ast.get_docstring(node)
            if doc is not None:
                docstrings.append({"text": doc, "module": module, "qualname": name})
            if not isinstance(node, ast.ClassDef):
                body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                code.append({"text": body, "module": module, "qualname": name})
    return modules, docstrings, code


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _idle_rows(root: Path) -> list[dict]:
    rows = []
    for name in ("NEWS.txt", "NEWS2x.txt", "HISTORY.txt", "README.txt", "CREDITS.txt"):
        path = root / "idlelib" / name
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            rows += [{"text": p, "file": name} for p in _paragraphs(text)]
    return rows


def _license_rows(root: Path) -> list[dict]:
    path = root / "LICENSE.txt"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    sections = re.split(r"\n(?=[A-Z][A-Z .,0-9-]{8,}\n)", text)
    return [{"text": s.strip()} for s in sections if s.strip()]


def _reference_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return {}
    return dict(sorted(topics.items()))


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in rows)


def build(dest: str | Path) -> list[InputSpec]:
    """Write the raw corpus under `dest` (reused when already built) and
    return the inputs to ingest, one per source."""
    dest = Path(dest)
    done = dest / ".complete"
    if not done.exists():
        _write_all(dest, stdlib_root())
        done.write_text(f"python {sys.version.split()[0]}\n")
    return [
        InputSpec(str(dest / "code.parquet"), source="code"),
        InputSpec(str(dest / "docstrings.jsonl.gz"), source="docstrings"),
        InputSpec(str(dest / "modules.jsonl.zst"), source="modules"),
        InputSpec(str(dest / "reference"), source="reference"),
        InputSpec(str(dest / "idle.csv"), source="idle"),
        InputSpec(str(dest / "license.jsonl"), source="license"),
    ]


def _write_all(dest: Path, root: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    modules, docstrings, code = _collect(root)
    pq.write_table(pa.Table.from_pylist(code), dest / "code.parquet", compression="zstd")
    # mtime=0: the same Python gives the same bytes.
    with gzip.GzipFile(dest / "docstrings.jsonl.gz", "wb", mtime=0) as out:
        out.write(_jsonl(docstrings))
    (dest / "modules.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(modules)))
    reference = dest / "reference"
    reference.mkdir(exist_ok=True)
    for name, text in _reference_topics().items():
        (reference / f"{name}.txt").write_text(text, encoding="utf-8")
    with open(dest / "idle.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["text", "file"])
        writer.writeheader()
        writer.writerows(_idle_rows(root))
    (dest / "license.jsonl").write_bytes(_jsonl(_license_rows(root)))
