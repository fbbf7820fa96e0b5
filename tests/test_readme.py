"""The README's first lines are the two set-up commands, and CI runs the second."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("```bash") + 1
    return lines[start : start + 2]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = _commands()
    assert demo.startswith("python3 -m venv .venv") and demo.endswith("curation demo")
    assert tests.startswith("python3 -m venv .venv") and tests.endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _commands()[1] in ci.splitlines()


def test_readme_training_config_is_valid(tmp_path):
    from curation.train.config import load_train_config

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "train.toml").write_text(block)
    config = load_train_config(tmp_path / "train.toml")
    assert config.colm is not None and config.rs2 is not None and config.schedule.kind == "wsd"


def test_readme_links_point_at_files_that_exist():
    """The method sections link their evidence; a renamed report must not leave a dead link."""
    import re

    for readme in (ROOT / "README.md", ROOT / "bench" / "experiments" / "README.md"):
        text = readme.read_text(encoding="utf-8")
        targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
        assert targets, f"{readme} links nothing"
        missing = [t for t in targets if not (readme.parent / t).exists()]
        assert not missing, f"{readme.relative_to(ROOT)} links missing files: {missing}"
