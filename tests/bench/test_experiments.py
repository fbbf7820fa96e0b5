"""Smoke tests of the evidence experiments (bench/experiments/): each script's
--quick version runs every arm end to end and writes its report. They assert
that the report exists and is well formed, never what it found. The scripts
share one cached corpus (ingested and deduplicated once per test session) and
run once per session, two at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "bench" / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
from collect import ORDER  # noqa: E402

SCRIPTS = [name for name in ORDER if (EXPERIMENTS / f"{name}.py").exists()]


# Two lanes of scripts run side by side (one torch thread each, two cores), once per
# session. The first script runs alone and builds the cached corpus every other one
# reads; colm runs before combined, which reuses the base model colm pretrains.
FIRST = ("rs2", "bundled")
LANES = (
    [("colm", "bundled"), ("combined", "bundled"), ("mixture", "bundled"), ("semdedup", "bundled"),
     ("rs2", "docs")],
    [("kmq", "bundled"), ("perplexity", "bundled"), ("dedup", "bundled")],
)  # fmt: skip


@pytest.fixture(scope="session")
def quick_runs(tmp_path_factory) -> dict[tuple[str, str], tuple[subprocess.CompletedProcess, Path]]:
    cache = tmp_path_factory.mktemp("experiment-corpus")
    out = tmp_path_factory.mktemp("experiment-reports")
    lanes = [[run for run in lane if run[0] in SCRIPTS] for lane in LANES]
    planned = {FIRST, *(run for lane in lanes for run in lane)}
    assert {(name, "bundled") for name in SCRIPTS} <= planned, "a script is in no lane"
    done = {FIRST: run_quick(*FIRST, out, cache)}

    def lane_runs(lane):
        return {run: run_quick(*run, out, cache) for run in lane}

    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        for finished in pool.map(lane_runs, lanes):
            done.update(finished)
    return {run: (process, out) for run, process in done.items()}


def run_quick(name: str, corpus: str, out: Path, cache: Path) -> subprocess.CompletedProcess:
    script = EXPERIMENTS / f"{name}.py"
    command = [sys.executable, str(script), "--quick", "--corpus", corpus, "--out", str(out),
               "--cache", str(cache)]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_writes_its_report(quick_runs, name):
    done, out = quick_runs[(name, "bundled")]
    assert done.returncode == 0, done.stderr[-3000:]
    stem = f"{name}-bundled"
    report = (out / f"{stem}.md").read_text()
    assert report.startswith("## ")
    assert "\n|---" in report  # at least one table
    assert "![" in report and (out / f"{stem}.png").stat().st_size > 1000
    assert "**Verdict.**" in report and "Wall time:" in report and "Command: `" in report
    numbers = json.loads((out / f"{stem}.json").read_text())
    assert numbers["name"] == stem and numbers["quick"] is True and numbers["corpus"] == "bundled"


def test_the_docs_corpus_runs_too(quick_runs):
    done, out = quick_runs[("rs2", "docs")]
    assert done.returncode == 0, done.stderr[-3000:]
    numbers = json.loads((out / "rs2-docs.json").read_text())
    assert numbers["corpus"] == "docs" and "docs corpus" in (out / "rs2-docs.md").read_text()


def test_every_experiment_is_in_the_readme():
    readme = (EXPERIMENTS / "README.md").read_text()
    for name in SCRIPTS:
        assert f"bench/experiments/{name}.py" in readme, f"{name} has no section in the README"
        assert f"results/{name}-bundled.png" in readme, f"{name}'s plot is not shown in the README"
