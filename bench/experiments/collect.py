"""Assemble bench/experiments/README.md from intro.md, a summary table built
from every results/<name>-<corpus>.json, and every results/<name>-<corpus>.md
the experiment scripts wrote, in the issue's order.

    .venv/bin/python bench/experiments/collect.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ["rs2", "mixture", "dedup", "semdedup", "kmq", "colm", "perplexity", "combined"]
CORPORA = ("bundled", "docs")
INTRO = HERE / "intro.md"


def section(stem: str) -> str:
    text = (RESULTS / f"{stem}.md").read_text().strip()
    # The scripts link their plot next to the report; the README sits one folder up.
    return re.sub(r"\]\((?!results/)([\w.-]+\.png)\)", r"](results/\1)", text)


def summary_table(found: list[str]) -> str:
    """One row per experiment: its claim, and per corpus the outcome and figures."""
    rows = ["| # | claim | " + " | ".join(f"{c} corpus" for c in CORPORA) + " | script |"]
    rows.append("|---|---|" + "---|" * len(CORPORA) + "---|")
    for number, name in enumerate(ORDER, 1):
        runs = {c: _summary(f"{name}-{c}") for c in CORPORA if f"{name}-{c}" in found}
        if not runs:
            continue
        claim = next((s["claim"] for s in runs.values() if s.get("claim")), "")
        cells = [_cell(runs.get(c)) for c in CORPORA]
        rows.append(f"| {number} | {claim} | " + " | ".join(cells) + f" | `{name}.py` |")
    return "\n".join(rows)


def _summary(stem: str) -> dict:
    return json.loads((RESULTS / f"{stem}.json").read_text()).get("summary", {})


def _cell(summary: dict | None) -> str:
    if summary is None:
        return "not run"
    outcome, figures = summary.get("outcome", ""), summary.get("figures", "")
    return f"**{outcome}**: {figures}" if outcome else figures


def main() -> None:
    stems = [f"{n}-{c}" for n in ORDER for c in CORPORA]
    found = [s for s in stems if (RESULTS / f"{s}.md").exists()]
    parts = [INTRO.read_text().strip(), "## Summary", summary_table(found)]
    parts += [section(s) for s in found]
    missing = [n for n in ORDER if not any(s.startswith(f"{n}-") for s in found)]
    if missing:
        parts.append("Not yet run: " + ", ".join(f"`bench/experiments/{n}.py`" for n in missing))
    (HERE / "README.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {HERE / 'README.md'} ({len(found)} reports)")


if __name__ == "__main__":
    main()
