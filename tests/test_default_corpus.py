"""The bundled corpus: real, several sources of very different sizes, real near-duplicates."""

from __future__ import annotations

import polars as pl
import pytest

from curation import default_corpus
from curation.storage import Dataset, ingest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    report = ingest(default_corpus.build(root / "raw"), str(root / "documents"))
    return report, Dataset.open(root / "documents").read_table()


def test_every_input_format_is_used(tmp_path):
    inputs = default_corpus.build(tmp_path / "raw")
    names = sorted(p.name for p in (tmp_path / "raw").iterdir() if not p.name.startswith("."))
    assert names == [
        "code.parquet",
        "docstrings.jsonl.gz",
        "idle.csv",
        "license.jsonl",
        "modules.jsonl.zst",
        "reference",
    ]
    assert len(inputs) == 6


def test_sources_differ_in_size_by_orders_of_magnitude(corpus):
    report, _ = corpus
    sizes = report.by_source
    assert len(sizes) == 6
    assert max(sizes.values()) > 100 * min(sizes.values())
    assert report.records_read == report.documents + report.quarantined


def test_contains_real_exact_and_near_duplicates(corpus):
    """Tix widgets, argparse actions and platform twins repeat each other."""
    _, table = corpus
    docs = pl.from_arrow(table).filter(pl.col("n_chars") > 200)
    exact = docs.group_by("text").len().filter(pl.col("len") > 1)
    assert exact.height >= 10
    # same opening, different text: edited copies, the case fuzzy dedup is for
    near = (
        docs.group_by(pl.col("text").str.slice(0, 80))
        .agg(pl.col("text").n_unique().alias("variants"))
        .filter(pl.col("variants") > 1)
    )
    assert near.height >= 50


def test_build_is_deterministic(tmp_path):
    default_corpus.build(tmp_path / "a")
    default_corpus.build(tmp_path / "b")
    for name in ("code.parquet", "docstrings.jsonl.gz", "modules.jsonl.zst", "idle.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
