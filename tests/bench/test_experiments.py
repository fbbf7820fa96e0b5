"""Smoke tests of the evidence experiments (bench/experiments/): each script's
--quick version runs every arm end to end and writes its report. They assert
that the report exists and is well formed, never what it found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "bench" / "experiments"
SCRIPTS = ["rs2", "mixture", "dedup", "semdedup", "kmq", "colm"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_writes_its_report(tmp_path, name):
    script = EXPERIMENTS / f"{name}.py"
    assert script.exists(), f"{script} is missing"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / f"{name}.md").read_text()
    assert report.startswith("## ")
    assert "\n|---" in report  # at least one table
    assert "![" in report and (tmp_path / f"{name}.png").stat().st_size > 1000
    assert "**Verdict.**" in report and "Wall time:" in report and "Command: `" in report
    numbers = json.loads((tmp_path / f"{name}.json").read_text())
    assert numbers["name"] == name and numbers["quick"] is True


def test_every_experiment_is_in_the_readme():
    readme = (EXPERIMENTS / "README.md").read_text()
    for name in SCRIPTS:
        assert f"bench/experiments/{name}.py" in readme, f"{name} has no section in the README"
        assert f"results/{name}.png" in readme, f"{name}'s plot is not shown in the README"
