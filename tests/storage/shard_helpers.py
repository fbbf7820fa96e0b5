"""Small documents datasets of real text (standard-library docstrings) for shard and subset tests."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import orjson

from curation.storage import InputSpec, ingest

MODULES = (
    "argparse.py", "difflib.py", "textwrap.py", "fractions.py", "shutil.py", "inspect.py",
    "typing.py", "pathlib.py", "decimal.py", "_pydecimal.py", "statistics.py", "calendar.py",
    "configparser.py", "datetime.py", "tarfile.py", "zipfile/__init__.py", "subprocess.py",
    "logging/__init__.py", "email/message.py", "http/client.py", "urllib/parse.py", "ftplib.py",
    "pickle.py", "pdb.py", "dataclasses.py", "functools.py", "collections/__init__.py",
    "threading.py", "socket.py", "ssl.py", "unittest/case.py", "doctest.py", "pydoc.py",
    "imaplib.py", "smtplib.py", "mailbox.py", "optparse.py", "gettext.py", "locale.py",
)  # fmt: skip


def docstrings(limit: int) -> list[str]:
    """Up to `limit` distinct docstrings of at least 40 characters, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    texts: list[str] = []
    for name in MODULES:
        path = root / name
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40 and doc not in seen:
                    seen.add(doc)
                    texts.append(doc)
                    if len(texts) == limit:
                        return texts
    return texts


def write_documents(folder: Path, sizes: dict[str, int]) -> Path:
    """A documents dataset with `sizes[source]` documents per source, from distinct docstrings."""
    texts = docstrings(sum(sizes.values()))
    assert len(texts) == sum(sizes.values()), f"only {len(texts)} docstrings found"
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    specs, start = [], 0
    for source, count in sizes.items():
        path = raw / f"{source}.jsonl"
        lines = [orjson.dumps({"text": t}) for t in texts[start : start + count]]
        path.write_bytes(b"\n".join(lines) + b"\n")
        specs.append(InputSpec(str(path), source=source))
        start += count
    out = folder / "documents"
    ingest(specs, str(out))
    return out
