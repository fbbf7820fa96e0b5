"""The quality stage on real text from the command line: scores, decisions that
account for every document, plots, kMQ drawing by a score column, clear errors."""

from __future__ import annotations

import ast
import importlib.util
import random
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.selectors.quality import SIGNALS, C4Rules, ClassifierConfig, GopherQuality, QualityConfig
from curation.stages import quality_stage
from curation.storage import Dataset, ingest
from curation.storage.decisions import check_one_decision_each, read_decisions
from tests.conftest import stdlib_docstrings

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def function_sources(limit: int) -> list[str]:
    """Real code: the source of functions in a few stdlib modules."""
    out = []
    for name in ("textwrap", "difflib", "shutil", "statistics"):
        text = Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8")
        out += [
            ast.get_source_segment(text, n)
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.FunctionDef)
        ]
    return [s for s in out if s and len(s) > 200][:limit]


def garbage(texts: list[str]) -> list[str]:
    rng = random.Random(0)
    repeated = ["\n".join([t.splitlines()[0]] * 30) for t in texts[:5]]
    noise = [bytes(rng.getrandbits(8) for _ in range(800)).decode("latin-1") for _ in range(5)]
    return repeated + noise


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Prose (real docstrings and planted garbage) and code, a reference set of
    other docstrings, and one `curation quality` run with the classifier."""
    root = tmp_path_factory.mktemp("quality")
    prose = stdlib_docstrings(400)
    write_jsonl(root / "prose.jsonl", prose[:250] + garbage(prose))
    write_jsonl(root / "code.jsonl", function_sources(120))
    (root / "reference").mkdir()
    for i, text in enumerate(prose[250:400]):
        (root / "reference" / f"doc{i}.txt").write_text(text, encoding="utf-8")
    ingest([f"prose={root / 'prose.jsonl'}", f"code={root / 'code.jsonl'}"], str(root / "docs"))
    args = ["quality", str(root / "docs"), "-o", str(root / "q"), "--reference", str(root / "reference")]
    result = runner.invoke(app, [*args, "--classifier-min", "0.02"])
    return root, result


def test_quality_run_accounts_for_every_document(run):
    root, result = run
    assert result.exit_code == 0, result.output
    documents = Dataset.open(root / "docs")
    decisions = read_decisions(root / "q" / "decisions.parquet")
    check_one_decision_each(documents, decisions)  # one decision per input id, in order
    kept = decisions.filter(pa.compute.field("kept"))
    assert Dataset.open(root / "q" / "documents").rows == kept.num_rows
    reasons = decisions.filter(pa.compute.invert(decisions.column("kept"))).column("reason").to_pylist()
    assert documents.rows == kept.num_rows + len(reasons) and set(kept.column("reason").to_pylist()) == {
        "passed"
    }
    for reason in set(reasons):
        assert f"dropped: {reason}" in result.output  # the summary names every rule that removed documents
    assert "classifier" in result.output and "plot:" in result.output


def test_scores_table_and_the_planted_garbage(run):
    root, _ = run
    scores = pq.read_table(root / "q" / "scores.parquet")
    assert scores.column_names[:2] == ["id", "source"] and set(SIGNALS) <= set(scores.column_names)
    assert scores.num_rows == Dataset.open(root / "docs").rows
    failed = np.array(scores.column("failed_rule").to_pylist())
    classifier = scores.column("classifier").to_numpy(zero_copy_only=False)
    assert np.all(np.isnan(classifier[failed != ""])) and np.all(np.isfinite(classifier[failed == ""]))
    prose = np.array(scores.column("source").to_pylist()) == "prose"
    assert np.all(failed[prose][-10:] != "")  # repeated lines and random bytes fail the rules
    prose_only = {r.reason for r in GopherQuality().rules() + C4Rules().rules()}
    assert not set(failed[~prose]) & prose_only  # a source named code gets the repetition rules only
    assert (root / "q" / "classifier.bin").stat().st_size > 0
    assert (root / "q" / "plots" / "classifier.png").read_bytes().startswith(PNG)


def test_kmq_draws_by_a_score_column_and_refuses_unscored_documents(run):
    root, _ = run
    for args in (
        ["embed", str(root / "docs"), "--out", str(root / "emb"), "--encoder", "hashed"],
        ["cluster", str(root / "emb"), "--out", str(root / "clu"), "--k", "4"],
    ):
        assert runner.invoke(app, args).exit_code == 0
    scores = str(root / "q" / "scores.parquet")
    select = ["select", "--clusters", str(root / "clu"), "--budget", "20"]
    kept = str(root / "q" / "documents")
    for column in ("classifier", "-gopher_words"):
        result = runner.invoke(
            app, [*select, kept, "--out", str(root / column), "--quality", f"{scores}:{column}"]
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, [*select, str(root / "docs"), "--out", str(root / "nan"), "--quality", f"{scores}:classifier"]
    )
    assert result.exit_code == 2 and "no finite classifier score" in result.output
    result = runner.invoke(
        app, [*select, kept, "--out", str(root / "none"), "--quality", f"{scores}:missing"]
    )
    assert result.exit_code == 2 and "has no missing column" in result.output


def test_score_only_writes_no_decisions(run, tmp_path):
    root, _ = run
    config = QualityConfig(rules=QualityConfig.parse_rules(["none"]), filter=False)
    report = quality_stage(str(root / "docs"), str(tmp_path / "s"), config)
    assert report.kept == report.docs_in and not (tmp_path / "s" / "decisions.parquet").exists()
    assert pq.read_table(tmp_path / "s" / "scores.parquet").num_rows == report.docs_in


def test_bad_input_gets_one_clear_line(run, tmp_path):
    root, _ = run
    (tmp_path / "empty").mkdir()
    base = ["quality", str(root / "docs"), "-o", str(tmp_path / "o")]
    cases = [
        (["--reference", str(tmp_path / "empty")], "holds no documents"),
        (["--reference", str(tmp_path / "nowhere")], "no such reference"),
        (["--rules", "code=gopher"], "rules 'gopher'"),
        (["--band", "top"], "band 'top'"),
        (["--classifier-min", "0.5"], "--classifier-min needs --reference"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output


def test_rerun_gives_identical_bytes(run, tmp_path):
    """Same inputs and settings, same scores, decisions and model (fastText on one thread, seeded)."""
    root, _ = run
    config = QualityConfig(classifier=ClassifierConfig(min_score=0.02))
    quality_stage(str(root / "docs"), str(tmp_path / "again"), config, str(root / "reference"))
    for name in ("scores.parquet", "decisions.parquet", "classifier.bin"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "q" / name).read_bytes(), name


def test_perplexity_band_keeps_the_middle_of_each_source(run, tmp_path):
    root, _ = run
    args = ["quality", str(root / "docs"), "-o", str(tmp_path / "p"), "--band", "middle:0.5", "--steps", "20"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = pq.read_table(tmp_path / "p" / "scores.parquet")
    decisions = read_decisions(tmp_path / "p" / "decisions.parquet")
    reasons = np.array(decisions.column("reason").to_pylist())
    passed_rules = np.array(scores.column("failed_rule").to_pylist()) == ""
    perplexity = scores.column("perplexity").to_numpy(zero_copy_only=False)
    assert np.all(np.isfinite(perplexity[passed_rules])) and np.all(perplexity[passed_rules] > 0)
    sources = np.array(scores.column("source").to_pylist())
    for source in ("prose", "code"):
        mine = passed_rules & (sources == source)
        kept = mine & (reasons == "passed")
        assert kept.sum() == round(0.5 * mine.sum())  # the band holds half of each source
        inside, outside = perplexity[kept], perplexity[mine & ~kept]
        assert np.sum(outside < inside.min()) > 0 and np.sum(outside > inside.max()) > 0  # both tails cut
    assert set(reasons[passed_rules & (reasons != "passed")]) == {"perplexity_not_middle"}
    assert (tmp_path / "p" / "plots" / "perplexity.png").read_bytes().startswith(PNG)
    assert "perplexity (p10 / p50 / p90)" in result.output
