"""Packages meet through public names: no module (library, tests or benchmarks) imports
an underscore name from another package. The engines used to import the library's
private part-writers and dedup helpers, which let their copies drift apart."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("curation", "tests", "bench")


def private_imports(source: str, module: str) -> list[str]:
    """`from X import _name` in `module` (dotted) where X's package is not its own."""
    parts = module.split(".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = parts[: len(parts) - node.level] if node.level else []
        target = [*base, *(node.module or "").split(".")]
        target = [part for part in target if part]
        for alias in node.names:
            private = alias.name.startswith("_") and not alias.name.startswith("__")
            if private and target[:-1] != parts[:-1]:
                found.append(f"{module}:{node.lineno} imports {alias.name} from {'.'.join(target)}")
    return found


def test_no_module_imports_another_packages_private_names():
    found = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found += private_imports(path.read_text(encoding="utf-8"), module)
    assert not found, "\n".join(found)


def test_the_check_flags_an_import_across_packages_only():
    source = (
        "from curation.embeddings.store import _chunks\n"  # what the engines used to do
        "from .io import _helper\n"  # inside its own package: allowed
        "from ..storage import _lock\n"  # relative, but another package
    )
    assert private_imports(source, "curation.engine.common") == [
        "curation.engine.common:1 imports _chunks from curation.embeddings.store",
        "curation.engine.common:3 imports _lock from curation.storage",
    ]


def curation_imports(source: str, module: str) -> set[str]:
    """The curation modules `module` imports (dotted, relative imports resolved)."""
    parts = module.split(".")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            found.add(".".join([*base, *(node.module or "").split(".")]).strip("."))
    return {name for name in found if name.split(".")[0] == "curation"}


def test_the_engine_knows_no_stage():
    """curation/engine schedules work it is handed: it imports no stage, selector,
    embedding or storage module (DESIGN.md, "The engine seam")."""
    allowed = {"curation", "curation.errors"}
    found = []
    for path in sorted((ROOT / "curation" / "engine").glob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in curation_imports(path.read_text(encoding="utf-8"), module):
            if name not in allowed and not name.startswith("curation.engine"):
                found.append(f"{module} imports {name}")
    assert not found, "\n".join(found)
    assert curation_imports("from ..selectors import dedup", "curation.engine.x") == {"curation.selectors"}


def test_storage_knows_formats_not_methods():
    """curation/storage reads and writes formats; choosing documents (budgets,
    mixtures, subsets) lives in selectors, training-time reading in train."""
    found = []
    for path in sorted((ROOT / "curation" / "storage").glob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in curation_imports(path.read_text(encoding="utf-8"), module):
            if [*name.split("."), ""][1] in {"selectors", "train", "embeddings", "stages"}:
                found.append(f"{module} imports {name}")
    assert not found, "\n".join(found)
