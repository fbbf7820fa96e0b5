"""Safe defaults: the UI listens on loopback only, nothing unpickles data we did
not write, and paths from config stay under the storage root."""

from __future__ import annotations

import ast
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.errors import CurationError
from curation.storage import Dataset, ingest, write_dataset
from curation.storage.fs import resolve, safe_join
from curation.storage.ingest import DOCUMENTS_SCHEMA
from tests.reliability.helpers import REPO, document_batches, tree

PACKAGE = REPO / "curation"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# ---------------------------------------------------------------- the Dagster UI


def _dagster_commands() -> list[tuple[str, str]]:
    """Every `dagster dev` / `dagster-webserver` command in the docs, config and code."""
    places = [REPO / "README.md", REPO / "dagster_home" / "dagster.yaml", REPO / "pyproject.toml"]
    places += sorted(PACKAGE.rglob("*.py")) + sorted((REPO / ".ci").glob("*"))
    found = []
    for path in places:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"dagster(-webserver| dev)\b", line) and not line.lstrip().startswith(('"""', "#")):
                found.append((str(path.relative_to(REPO)), line))
    return found


def _host_of(command: str) -> str | None:
    match = re.search(r"(?:^|\s)(?:-h|--host|--dagit-host)(?:\s+|=)(\S+)", command)
    return match.group(1).strip("'\"`") if match else None


def test_the_ui_binds_to_loopback_unless_told_otherwise():
    from dagster._cli.dev import dev_command
    from dagster_webserver.cli import DEFAULT_WEBSERVER_HOST

    # `dagster dev` without a host hands none to the webserver, whose default is loopback
    host_option = next(p for p in dev_command.params if p.name == "host")
    assert host_option.default in (None, "") or "UNSET" in str(host_option.default)
    assert DEFAULT_WEBSERVER_HOST in LOOPBACK
    for where, command in _dagster_commands():
        host = _host_of(command)
        assert host is None or host in LOOPBACK, f"{where}: {command.strip()}"
    for path in [REPO / "README.md", REPO / "dagster_home" / "dagster.yaml", *PACKAGE.rglob("*.py")]:
        assert "0.0.0.0" not in path.read_text(encoding="utf-8"), f"{path}: binds every interface"


def test_the_host_check_sees_a_public_bind():
    assert _host_of("DAGSTER_HOME=x dagster dev -h 0.0.0.0 -p 3000") == "0.0.0.0"
    assert _host_of("dagster-webserver --host=10.0.0.5") == "10.0.0.5"
    assert _host_of("dagster dev -p 3000") is None


def test_dagster_instance_sends_no_telemetry():
    text = (REPO / "dagster_home" / "dagster.yaml").read_text(encoding="utf-8")
    assert re.search(r"^telemetry:\s*\n\s+enabled:\s*false", text, re.M)


# ---------------------------------------------------------------- no pickle

_PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_loads(source: str) -> list[str]:
    """Calls that may unpickle (run code from) a file: pickle & co, torch.load
    without weights_only=True, np.load with allow_pickle=True, pandas.read_pickle."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr = node.func.attr
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        text = f"line {node.lineno}: {owner}.{attr}"
        if owner in _PICKLERS and attr in ("load", "loads", "Unpickler", "open"):
            found.append(text)
        elif owner == "torch" and attr == "load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(text + " without weights_only=True")
        elif owner in ("np", "numpy") and attr == "load":
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(text + " with allow_pickle")
        elif attr == "read_pickle":
            found.append(text)
    return found


def test_the_package_never_unpickles():
    problems = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = unsafe_loads(path.read_text(encoding="utf-8"))
        if found:
            problems[str(path.relative_to(REPO))] = found
    assert problems == {}


def test_the_pickle_check_finds_each_pattern():
    source = """
import pickle, torch, numpy as np, pandas as pd
pickle.load(f); pickle.loads(b); torch.load(p); torch.load(p, weights_only=False)
np.load(p, allow_pickle=True); pd.read_pickle(p)
torch.load(p, weights_only=True); np.load(p); np.load(p, allow_pickle=False)
"""
    assert len(unsafe_loads(source)) == 6


# ---------------------------------------------------------------- paths from config


@pytest.mark.parametrize(
    "relative",
    ["../x", "a/../../x", "a/..", "..", "/etc/passwd", "//host/share", "s3://bucket/key", "file:///etc",
     "C:\\Windows", "~/x", "a\\..\\..\\x", "", ".", "./", "a\0b"],
)  # fmt: skip
def test_safe_join_refuses_paths_that_leave_the_root(tmp_path, relative):
    with pytest.raises(CurationError):
        safe_join(tmp_path, relative)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [(("documents",), "documents"), (("dedup", "documents"), "dedup/documents"), (("a/b", "./c"), "a/b/c"),
     (("a//b/",), "a/b"), (("..a", "b..", "x.y"), "..a/b../x.y")],
)  # fmt: skip
def test_safe_join_keeps_relative_paths(tmp_path, parts, expected):
    assert safe_join(tmp_path, *parts).path == str(tmp_path / expected)
    assert safe_join(str(tmp_path), *parts).uri == f"{tmp_path}/{expected}"


@settings(max_examples=200, deadline=None)
@given(relative=st.text(alphabet="ab./\\~:\0 ", max_size=12))
def test_whatever_safe_join_accepts_lies_inside_the_root(relative):
    root = resolve("/srv/curation-root")
    try:
        joined = safe_join(root, relative)
    except CurationError:
        return
    inside = os.path.normpath(joined.path)
    assert inside.startswith(root.path + "/"), (relative, joined.path)


def test_dagster_storage_root_refuses_escaping_parts(tmp_path):
    from curation.pipelines.resources import StorageRoot

    with pytest.raises(CurationError):
        StorageRoot(root=str(tmp_path)).location("..", "elsewhere")


# ---------------------------------------------------------------- never delete what we did not write


def test_ingest_refuses_an_output_folder_holding_its_inputs(tmp_path, real_texts):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"text": real_texts[:20]}), data / "corpus.parquet")
    before = tree(data)
    for out in (data, data.parent):  # the input folder itself, or a folder around it
        with pytest.raises(CurationError, match="inside the output folder"):
            ingest([str(data)], str(out))
        assert tree(data) == before


def test_a_writer_refuses_a_folder_of_someone_elses_parquet(tmp_path, real_texts):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    pq.write_table(pa.table({"text": real_texts[:5]}), theirs / "part-00000-3f2a.snappy.parquet")
    pq.write_table(pa.table({"text": real_texts[5:9]}), theirs / "sales.parquet")
    before = tree(theirs)
    with pytest.raises(CurationError, match="curation did not write"):
        write_dataset(theirs, document_batches(real_texts, 1, 10), DOCUMENTS_SCHEMA, "documents")
    assert tree(theirs) == before
    # our own leftovers (an interrupted write: parts, no manifest) are still cleared
    ours = tmp_path / "ours"

    def interrupted():
        yield from document_batches(real_texts, 2, 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(ours, interrupted(), DOCUMENTS_SCHEMA, "documents", rows_per_file=10)
    assert (ours / "part-00001.parquet").exists() and not (ours / "manifest.json").exists()
    write_dataset(ours, document_batches(real_texts, 1, 10), DOCUMENTS_SCHEMA, "documents")
    assert Dataset.open(ours).rows == 10 and not (ours / "part-00001.parquet").exists()
