"""Assemble bench/experiments/README.md from the intro below and every
results/<name>.md the experiment scripts wrote, in the issue's order.

    .venv/bin/python bench/experiments/collect.py
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["rs2", "mixture", "dedup", "semdedup", "kmq", "colm"]
INTRO = HERE / "intro.md"


def section(name: str) -> str:
    text = (HERE / "results" / f"{name}.md").read_text().strip()
    # The scripts link their plot next to the report; the README sits one folder up.
    return re.sub(r"\]\((?!results/)([\w.-]+\.png)\)", r"](results/\1)", text)


def main() -> None:
    parts = [INTRO.read_text().strip()]
    missing = [n for n in ORDER if not (HERE / "results" / f"{n}.md").exists()]
    parts += [section(n) for n in ORDER if n not in missing]
    if missing:
        parts.append("Not yet run: " + ", ".join(f"`bench/experiments/{n}.py`" for n in missing))
    (HERE / "README.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {HERE / 'README.md'} ({len(ORDER) - len(missing)} experiments)")


if __name__ == "__main__":
    main()
