"""Smoke tests of the evidence experiments (bench/experiments/): each script's
--quick version runs every arm end to end and writes its report. They assert
that the report exists and is well formed, never what it found. The scripts
share one cached corpus (ingested and deduplicated once per test session)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "bench" / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
from collect import ORDER  # noqa: E402

SCRIPTS = [name for name in ORDER if (EXPERIMENTS / f"{name}.py").exists()]


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiment-corpus")


def run_quick(name: str, out: Path, cache: Path, *flags: str) -> subprocess.CompletedProcess:
    script = EXPERIMENTS / f"{name}.py"
    command = [sys.executable, str(script), "--quick", "--out", str(out), "--cache", str(cache), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_writes_its_report(tmp_path, corpus_cache, name):
    done = run_quick(name, tmp_path, corpus_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    stem = f"{name}-bundled"
    report = (tmp_path / f"{stem}.md").read_text()
    assert report.startswith("## ")
    assert "\n|---" in report  # at least one table
    assert "![" in report and (tmp_path / f"{stem}.png").stat().st_size > 1000
    assert "**Verdict.**" in report and "Wall time:" in report and "Command: `" in report
    numbers = json.loads((tmp_path / f"{stem}.json").read_text())
    assert numbers["name"] == stem and numbers["quick"] is True and numbers["corpus"] == "bundled"


def test_the_docs_corpus_runs_too(tmp_path, corpus_cache):
    done = run_quick("rs2", tmp_path, corpus_cache, "--corpus", "docs")
    assert done.returncode == 0, done.stderr[-3000:]
    numbers = json.loads((tmp_path / "rs2-docs.json").read_text())
    assert numbers["corpus"] == "docs" and "docs corpus" in (tmp_path / "rs2-docs.md").read_text()


def test_every_experiment_is_in_the_readme():
    readme = (EXPERIMENTS / "README.md").read_text()
    for name in SCRIPTS:
        assert f"bench/experiments/{name}.py" in readme, f"{name} has no section in the README"
        assert f"results/{name}-bundled.png" in readme, f"{name}'s plot is not shown in the README"
