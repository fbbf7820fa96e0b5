"""The Ray engine gives what the local engine gives: decisions, vectors, clusters, shards.

They share one local Ray (tests/engine/conftest.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

pytest.importorskip("ray")

from curation.embeddings import (
    EmbeddingStore,
    HashedEncoder,
    KMeansConfig,
    assign,
    assign_embeddings,
    cluster_embeddings,
    embed_dataset,
    read_clusters,
)
from curation.engine import LocalEngine
from curation.errors import CurationError, IntegrityError
from curation.selectors.dedup import DedupConfig, dedup_distributed, dedup_documents
from curation.storage import Dataset, shards
from curation.storage.shards import ShardConfig, ShardReader, write_shards
from curation.storage.tokenizer import TokenizerConfig, train_tokenizer


@pytest.fixture(scope="module")
def local_engine():
    return LocalEngine()


def same_decisions(local: pa.Table, distributed: pa.Table) -> None:
    assert distributed.schema == local.schema
    for name in local.column_names:
        assert distributed.column(name).equals(local.column(name)), name
    assert distributed.equals(local)


def test_global_dedup_decisions_are_identical(corpus, ray_engine, local_engine, tmp_path):
    config = DedupConfig()
    local = dedup_documents(corpus, config, str(tmp_path), None, local_engine)
    distributed = dedup_documents(corpus, config, None, None, ray_engine)
    same_decisions(local, distributed)
    reasons = set(pc.unique(local.column("reason")).to_pylist())
    # the corpus really exercises every outcome
    assert {"too_short", "exact_duplicate", "near_duplicate", "unique", "representative"} <= reasons


def test_local_mode_dedup_with_distributed_components_is_identical(
    corpus, ray_engine, local_engine, tmp_path
):
    config = DedupConfig(mode="local", source_priority=("docstrings", "modules"))
    local = dedup_documents(corpus, config, str(tmp_path), None, local_engine)
    # never hand the edges to the driver before they are stars
    run = dedup_distributed(corpus, config, ray_engine, local_edges=0)
    assert run.rounds >= 2
    assert set(run.seconds) == {"signatures", "exact", "lsh", "components", "decide"}
    same_decisions(local, run.decisions)
    near = local.filter(pc.equal(local.column("reason"), "near_duplicate"))
    assert near.num_rows > 100


@pytest.mark.parametrize("settings", [{"fuzzy": False}, {"exact": False, "min_chars": 50}])
def test_dedup_with_one_stage_is_identical(small_corpus, ray_engine, local_engine, tmp_path, settings):
    config = DedupConfig(**settings)
    local = dedup_documents(small_corpus, config, str(tmp_path), None, local_engine)
    same_decisions(local, dedup_documents(small_corpus, config, None, None, ray_engine))


def test_dedup_stage_on_ray_writes_the_local_stage_bytes(small_corpus, ray_engine, tmp_path):
    from curation.stages import dedup_stage
    from curation.stages import dedup_stage as local_dedup_stage

    config = DedupConfig(mode="local")
    report = dedup_stage(small_corpus, str(tmp_path / "ray"), config, engine=ray_engine)
    reference = local_dedup_stage(small_corpus, str(tmp_path / "local"), config)
    assert report.details["engine"] == "ray"
    assert (report.kept, report.dropped_by_reason) == (reference.kept, reference.dropped_by_reason)
    for name in ("decisions.parquet", "documents/manifest.json"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_embeddings_are_identical(small_corpus, ray_engine, local_engine, tmp_path):
    encoder = HashedEncoder(dim=64, n_features=1 << 12)
    local = embed_dataset(small_corpus, tmp_path / "local", encoder, 256, 700, engine=local_engine)
    distributed = embed_dataset(small_corpus, tmp_path / "ray", encoder, 256, 700, engine=ray_engine)
    assert (distributed.rows, distributed.parts, distributed.encoded) == (local.rows, local.parts, local.rows)
    ids_a, x_a = EmbeddingStore.open(tmp_path / "local").read()
    ids_b, x_b = EmbeddingStore.open(tmp_path / "ray").read()
    assert ids_a.equals(ids_b)
    assert ids_a.to_pylist() == Dataset.open(small_corpus).read_table(["id"]).column("id").to_pylist()
    assert np.array_equal(x_a, x_b)
    # same parts, same bytes: the manifests list the same files and checksums
    assert Dataset.open(tmp_path / "ray").manifest == Dataset.open(tmp_path / "local").manifest
    again = embed_dataset(small_corpus, tmp_path / "ray", encoder, 256, 700, engine=ray_engine)
    assert again.encoded == 0  # finished: a no-op


@pytest.fixture(scope="module")
def embeddings(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "embeddings"
    embed_dataset(small_corpus, out, HashedEncoder(dim=32, n_features=1 << 12), rows_per_part=900)
    return out


def test_clusters_are_identical(embeddings, ray_engine, local_engine, tmp_path):
    config = KMeansConfig(niter=10, max_points_per_centroid=40, assign_batch=500)
    local = cluster_embeddings(embeddings, tmp_path / "local", 24, config, engine=local_engine)
    distributed = cluster_embeddings(embeddings, tmp_path / "ray", 24, config, engine=ray_engine)
    assert distributed.train_points == local.train_points < local.rows  # a real sample
    a, b = read_clusters(tmp_path / "local"), read_clusters(tmp_path / "ray")
    assert np.array_equal(a.centroids, b.centroids)
    assert a.ids.equals(b.ids)
    assert np.array_equal(a.cluster, b.cluster)
    assert np.array_equal(a.distance, b.distance)
    assert distributed.sizes == local.sizes
    assert len(set(a.cluster.tolist())) > 10


def test_assignment_to_given_centroids_is_identical(embeddings, ray_engine, local_engine, tmp_path):
    from curation.embeddings import fit_kmeans

    ids, x = EmbeddingStore.open(embeddings).read()
    rng = np.random.default_rng(3)
    model = fit_kmeans(x[rng.choice(len(x), 600, replace=False)], 16, KMeansConfig(niter=5))
    report = assign_embeddings(
        embeddings, tmp_path / "ray", model, KMeansConfig(assign_batch=300), engine=ray_engine
    )
    assign_embeddings(
        embeddings, tmp_path / "local", model, KMeansConfig(assign_batch=300), engine=local_engine
    )
    expected_cluster, expected_distance = assign(x, model, batch=300)
    for folder in ("ray", "local"):
        got = read_clusters(tmp_path / folder)
        assert got.ids.equals(ids)
        assert np.array_equal(got.cluster, expected_cluster)
        assert np.array_equal(got.distance, expected_distance)
        assert np.array_equal(got.centroids, model.centroids)
    assert report.sizes == tuple(np.bincount(expected_cluster, minlength=16).tolist())


def test_shards_are_identical(small_corpus, ray_engine, local_engine, tmp_path, monkeypatch):
    data = Dataset.open(small_corpus)
    tokenizer = train_tokenizer(data, config=TokenizerConfig(vocab_size=400, sample_documents=300))
    keep = np.random.default_rng(0).random(data.rows) < 0.7
    keep[:600] = False  # whole batches without a kept document are skipped
    config = ShardConfig(seq_len=64, sequences_per_shard=500, batch_documents=128)
    monkeypatch.setattr(shards, "TOKENIZE_ROWS", 300)  # ranges are cut at batch boundaries: 256 rows
    distributed = write_shards(small_corpus, tmp_path / "ray", tokenizer, config, keep, engine=ray_engine)
    local = write_shards(small_corpus, tmp_path / "local", tokenizer, config, keep, engine=local_engine)
    assert distributed == local  # shard checksums, token counts, text copy files
    assert local["totals"]["documents"] == int(keep.sum())
    assert sum(len(s["shards"]) for s in local["sources"].values()) > 2
    reader = ShardReader(tmp_path / "ray")
    assert reader.num_sequences(reader.sources[0]) > 0


def test_a_task_error_reaches_the_caller_as_itself(ray_engine, tmp_path):
    from curation.storage import DOCUMENTS_SCHEMA, write_dataset

    table = pa.table(
        {
            "id": ["a", "b", "a"],
            "source": ["s"] * 3,
            "text": ["x" * 300, "y" * 300, "z" * 300],
            "n_chars": [300] * 3,
            "meta": [None] * 3,
            "origin": ["f:1", "f:2", "f:3"],
        },
        schema=DOCUMENTS_SCHEMA,
    )
    write_dataset(tmp_path / "docs", [table], DOCUMENTS_SCHEMA, "documents")
    with pytest.raises(ValueError, match="'a' appears more than once"):
        dedup_documents(str(tmp_path / "docs"), DedupConfig(), None, None, ray_engine)
    with pytest.raises(CurationError, match="verify"):
        dedup_documents(str(tmp_path / "docs"), DedupConfig(verify=True), None, None, ray_engine)
    # A damaged part is refused by checksum before any task reads it.
    good = write_dataset(tmp_path / "damaged", [table.slice(0, 2)], DOCUMENTS_SCHEMA, "documents")
    part = good.files()[0].path
    with open(part, "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\0" * 8)  # same size, so opening the dataset succeeds
    with pytest.raises(CurationError, match=r"part-00000\.parquet: sha256 differs"):
        dedup_documents(str(tmp_path / "damaged"), DedupConfig(), None, None, ray_engine)
    # One that its manifest vouches for but that is not Parquet fails inside a task:
    # the caller gets the task's own error, naming the file, not Ray's wrappers.
    from curation.storage import resolve
    from curation.storage.manifest import sha256_of

    entry = dataclasses.replace(good.manifest.files[0], sha256=sha256_of(resolve(part)))
    good.manifest.files[0] = entry
    (tmp_path / "damaged" / "manifest.json").write_bytes(good.manifest.to_json())
    with pytest.raises(
        IntegrityError,
        match=r"part-00000\.parquet: unreadable .*magic bytes",
    ):
        dedup_documents(str(tmp_path / "damaged"), DedupConfig(), None, None, ray_engine)


def test_a_distributed_engine_gets_an_encoder_each_worker_builds(small_corpus, ray_engine, tmp_path):
    from curation.device import CPU
    from curation.embeddings import Encoder
    from curation.stages import make_encoder

    factory = make_encoder("hashed", CPU, max_chars=500, engine=ray_engine)
    instance = make_encoder("hashed", CPU, max_chars=500)
    assert not isinstance(factory, Encoder) and isinstance(instance, Encoder)
    assert factory(CPU).config() == instance.config()
    embed_dataset(small_corpus, tmp_path / "ray", factory, rows_per_part=1000, engine=ray_engine)
    embed_dataset(small_corpus, tmp_path / "local", instance, rows_per_part=1000)
    assert Dataset.open(tmp_path / "ray").manifest == Dataset.open(tmp_path / "local").manifest
