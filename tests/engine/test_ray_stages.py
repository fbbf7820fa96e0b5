"""SemDeDup and quality scoring write the same bytes on a real local Ray as in this process.

They share one local Ray (tests/engine/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")

from curation.embeddings import HashedEncoder, KMeansConfig, cluster_embeddings, embed_dataset
from curation.selectors.quality import ClassifierConfig, PerplexityConfig, QualityConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import quality_stage, semdedup_stage

TINY_MODEL = PerplexityConfig(
    slice_documents=300, steps=6, context=32, vocab_size=300, width=16, max_tokens=32, band="middle"
)


@pytest.fixture(scope="module")
def clustered(small_corpus, tmp_path_factory) -> tuple[str, str]:
    """The small corpus's hashed embeddings and 8 clusters (made in this process)."""
    root = tmp_path_factory.mktemp("clustered")
    embed_dataset(small_corpus, str(root / "embeddings"), HashedEncoder())
    cluster_embeddings(str(root / "embeddings"), str(root / "clusters"), 8, KMeansConfig(seed=0))
    return str(root / "embeddings"), str(root / "clusters")


def same_files(a: Path, b: Path, names: tuple[str, ...]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize(
    "config", [SemDeDupConfig(target_fraction=0.8), SemDeDupConfig(epsilon=0.3, keep="easy")]
)
def test_semdedup_writes_the_local_bytes(small_corpus, clustered, ray_engine, tmp_path, config):
    embeddings, clusters = clustered
    local = semdedup_stage(small_corpus, embeddings, clusters, str(tmp_path / "local"), config)
    # many small parts on Ray, one part here: neither engine nor cut changes a decision
    far = semdedup_stage(
        small_corpus,
        embeddings,
        clusters,
        str(tmp_path / "ray"),
        config,
        engine=ray_engine,
        rows_per_part=300,
    )
    assert 0 < local.kept < local.docs_in and far.details == local.details
    same_files(tmp_path / "local", tmp_path / "ray", ("decisions.parquet", "documents/manifest.json"))


def test_quality_scores_are_the_local_bytes(small_corpus, corpus, ray_engine, tmp_path):
    config = QualityConfig(
        classifier=ClassifierConfig(max_examples=300, min_score=0.05), perplexity=TINY_MODEL
    )
    local = quality_stage(small_corpus, str(tmp_path / "local"), config, corpus)
    done: list[tuple[str, int]] = []
    far = quality_stage(
        small_corpus,
        str(tmp_path / "ray"),
        config,
        corpus,
        engine=ray_engine,
        progress=lambda *a: done.append(a),
    )
    assert far.dropped_by_reason == local.dropped_by_reason and local.kept < local.docs_in
    same_files(
        tmp_path / "local", tmp_path / "ray", ("scores.parquet", "decisions.parquet", "classifier.bin")
    )
    for label in ("rules", "classifier", "perplexity"):
        assert max(n for step, n in done if step == label) == local.docs_in
