"""Choosing an engine by name; the clear message when Ray is not installed; the local pool."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from curation.embeddings import EmbeddingStore, HashedEncoder, embed_dataset
from curation.engine import RAY_MISSING, LocalEngine, get_engine
from curation.errors import CurationError
from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.stages import dedup_stage as local_dedup_stage
from curation.storage import Dataset


def test_missing_ray_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(CurationError) as caught:
        get_engine("ray", ray_address="auto")
    assert "pip install 'curation[ray]'" in str(caught.value)
    assert str(caught.value) == RAY_MISSING
    with pytest.raises(CurationError, match=r"curation\[ray\]"):
        dedup_stage("unused", "unused", DedupConfig(), engine="ray")


def test_unknown_engines_and_misplaced_options_are_refused():
    with pytest.raises(CurationError, match="engine 'spark'"):
        get_engine("spark")
    with pytest.raises(CurationError, match="only for engine 'ray'"):
        get_engine("local", ray_address="auto")
    with pytest.raises(CurationError, match="workers"):
        LocalEngine(workers=0)


def test_local_engine_is_the_library(small_corpus, tmp_path):
    config = DedupConfig(mode="local")
    staged = dedup_stage(small_corpus, str(tmp_path / "a"), config, engine="local")
    reference = local_dedup_stage(small_corpus, str(tmp_path / "b"), config)
    assert (staged.kept, staged.dropped_by_reason) == (reference.kept, reference.dropped_by_reason)
    assert (tmp_path / "a" / "decisions.parquet").read_bytes() == (
        tmp_path / "b" / "decisions.parquet"
    ).read_bytes()
    assert Dataset.open(tmp_path / "a" / "documents").rows == staged.kept < staged.docs_in


def test_process_pool_embeds_the_same_store(small_corpus, tmp_path):
    encoder = HashedEncoder(dim=32, n_features=1 << 12)
    one = embed_dataset(small_corpus, tmp_path / "one", encoder, rows_per_part=800, engine=LocalEngine())
    two = embed_dataset(
        small_corpus, tmp_path / "two", encoder, rows_per_part=800, engine=LocalEngine(workers=2)
    )
    assert two.parts == one.parts > 2 and two.encoded == one.rows
    ids_a, x_a = EmbeddingStore.open(tmp_path / "one").read()
    ids_b, x_b = EmbeddingStore.open(tmp_path / "two").read()
    assert ids_a.equals(ids_b) and np.array_equal(x_a, x_b)
    assert Dataset.open(tmp_path / "two").manifest == Dataset.open(tmp_path / "one").manifest
