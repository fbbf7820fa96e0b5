"""FAISS k-means: seeded, samples for training, assigns everything, GPU by the device switch."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from curation.device import CPU, Device
from curation.embeddings import (
    HashedEncoder,
    KMeansConfig,
    assign,
    choose_k,
    cluster_embeddings,
    embed_dataset,
    fit_kmeans,
    load_clustered,
    read_clusters,
)
from curation.embeddings.cluster import inertia, training_rows
from curation.errors import CurationError, IntegrityError
from curation.plots import cluster_map_png, cluster_sizes_png

from .conftest import write_documents


def blobs(n_per: int = 100, k: int = 4, d: int = 16, spread: float = 0.05, seed: int = 0):
    """Unit vectors around k random directions; returns (x, true labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    x = x + spread * rng.standard_normal(x.shape)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_recovers_planted_clusters():
    x, truth = blobs()
    model = fit_kmeans(x, 4, KMeansConfig(seed=1))
    labels, distance = assign(x, model)
    assert same_partition(labels, truth)
    np.testing.assert_allclose(np.linalg.norm(model.centroids, axis=1), 1.0, atol=1e-5)
    expected = 1.0 - (x * model.centroids[labels]).sum(axis=1)
    np.testing.assert_allclose(distance, expected, atol=1e-5)


def test_same_seed_same_result(real_texts):
    x = HashedEncoder(dim=64).encode(real_texts)
    config = KMeansConfig(seed=7, niter=20)
    first, second = fit_kmeans(x, 8, config), fit_kmeans(x, 8, config)
    assert np.array_equal(first.centroids, second.centroids)
    assert np.array_equal(assign(x, first)[0], assign(x, second)[0])


def test_euclidean_distances_and_inertia():
    x, _ = blobs(d=8)
    model = fit_kmeans(x, 4, KMeansConfig(spherical=False))
    labels, distance = assign(x, model, batch=7)
    direct = np.linalg.norm(x[:, None, :] - model.centroids[None], axis=2)
    assert np.array_equal(labels, direct.argmin(axis=1))
    np.testing.assert_allclose(distance, direct.min(axis=1), atol=1e-4)
    assert inertia(x, model.centroids, labels) == pytest.approx(
        float((direct.min(axis=1) ** 2).sum()), rel=1e-4
    )


def test_training_sample_is_seeded_and_bounded():
    config = KMeansConfig(max_points_per_centroid=10, seed=3)
    rows = training_rows(1000, 5, config)
    assert len(rows) == 50 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, training_rows(1000, 5, config))
    assert len(training_rows(40, 5, config)) == 40


def test_k_larger_than_n_is_refused():
    with pytest.raises(CurationError, match="k-means needs"):
        fit_kmeans(np.eye(3, dtype=np.float32), 4)


def test_cluster_embeddings_writes_assignments_and_centroids(tmp_path, documents, real_texts):
    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=64), rows_per_part=64)
    config = KMeansConfig(max_points_per_centroid=20, niter=25)
    report = cluster_embeddings(tmp_path / "emb", tmp_path / "clusters", 6, config)
    assert (report.rows, report.k, report.train_points) == (200, 6, 120)
    assert sum(report.sizes) == 200
    clusters = read_clusters(tmp_path / "clusters")
    assert clusters.centroids.shape == (6, 64)
    x = HashedEncoder(dim=64).encode(real_texts)
    sims = x @ clusters.centroids.T
    assert np.array_equal(clusters.cluster, sims.argmax(axis=1))
    np.testing.assert_allclose(clusters.distance, 1 - sims.max(axis=1), atol=1e-5)
    assert np.bincount(clusters.cluster, minlength=6).tolist() == list(report.sizes)

    loaded = load_clustered(documents, tmp_path / "clusters", tmp_path / "emb")
    assert loaded.ids.equals(clusters.ids) and loaded.embeddings.shape == (200, 64)
    assert set(loaded.sources.to_pylist()) == {"stdlib"}


def test_cluster_embeddings_rerun_is_a_no_op(tmp_path, documents):
    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=32))
    cluster_embeddings(tmp_path / "emb", tmp_path / "cl", 5)
    first = (tmp_path / "cl" / "part-00000.parquet").read_bytes()
    mtime = (tmp_path / "cl" / "manifest.json").stat().st_mtime_ns
    report = cluster_embeddings(tmp_path / "emb", tmp_path / "cl", 5)
    assert (tmp_path / "cl" / "manifest.json").stat().st_mtime_ns == mtime
    assert report.k == 5 and sum(report.sizes) == 200
    assert cluster_embeddings(tmp_path / "emb", tmp_path / "cl", 3).k == 3
    cluster_embeddings(tmp_path / "emb", tmp_path / "cl", 5)
    assert (tmp_path / "cl" / "part-00000.parquet").read_bytes() == first


def test_clusters_from_other_documents_are_refused(tmp_path, documents, real_texts):
    embed_dataset(documents, tmp_path / "emb", HashedEncoder(dim=16))
    cluster_embeddings(tmp_path / "emb", tmp_path / "cl", 3)
    other = write_documents(tmp_path / "other", real_texts[:150]).folder
    with pytest.raises(IntegrityError, match="150"):
        load_clustered(other.path, tmp_path / "cl")


class FakeGpuFaiss:
    """Stands in for faiss's GPU classes and records what was moved to the GPU."""

    def __init__(self):
        self.moved = []

    def resources(self):
        return object()

    def to_gpu(self, resources, device, index):
        self.moved.append((device, type(index).__name__))
        return index  # the CPU index does the work; the switch is what is tested


@pytest.fixture
def fake_gpu_faiss(monkeypatch):
    fake = FakeGpuFaiss()
    monkeypatch.setattr(faiss, "StandardGpuResources", fake.resources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", fake.to_gpu, raising=False)
    return fake


def test_gpu_index_when_the_device_allows(fake_gpu_faiss):
    x, truth = blobs()
    gpu = Device("cuda", 1, "bfloat16", faiss_gpu=True)
    labels, _ = assign(x, fit_kmeans(x, 4, KMeansConfig(), gpu), gpu)
    assert same_partition(labels, truth)
    assert fake_gpu_faiss.moved == [(1, "IndexFlatIP"), (1, "IndexFlatIP")]  # training, assignment


@pytest.mark.parametrize("device", [CPU, Device("cuda", 0, "float16", faiss_gpu=False)])
def test_cpu_index_otherwise(fake_gpu_faiss, device):
    x, _ = blobs()
    assign(x, fit_kmeans(x, 4, KMeansConfig(spherical=False), device), device)
    assert fake_gpu_faiss.moved == []


def test_choose_k_by_silhouette():
    x, _ = blobs(n_per=60, k=5, spread=0.03)
    best, scores = choose_k(x, [2, 5, 9], KMeansConfig(niter=30))
    assert best == 5 and set(scores) == {2, 5, 9}


def test_cluster_plots_are_png():
    x, truth = blobs()
    assert cluster_sizes_png([10, 20, 5, 0]).startswith(b"\x89PNG")
    assert cluster_map_png(x, truth, sample=50).startswith(b"\x89PNG")


class BlobEncoder:
    """Texts "blob-j ..." go near direction j: an embeddings store with a known k."""

    dim = 16

    def __init__(self, k: int = 4):
        self.centres = np.eye(self.dim)[:k]  # orthogonal directions

    def encode(self, texts):
        rng = np.random.default_rng(len(texts))
        x = self.centres[[int(t.split()[0].split("-")[1]) for t in texts]]
        x = x / np.linalg.norm(x, axis=1, keepdims=True) + 0.05 * rng.standard_normal((len(texts), self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def config(self):
        return {"name": "blobs"}


def test_cluster_command_chooses_k_by_silhouette_and_runs_kmq_settings(tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.storage import Dataset

    write_documents(tmp_path / "docs", [f"blob-{i % 4} text {i}" for i in range(400)])
    embed_dataset(str(tmp_path / "docs"), str(tmp_path / "emb"), BlobEncoder())
    runner = CliRunner()
    cluster = ["cluster", str(tmp_path / "emb"), "-o"]
    result = runner.invoke(app, [*cluster, str(tmp_path / "auto"), "--k", "auto"])
    assert result.exit_code == 0, result.output
    assert "k = 4 by silhouette" in result.output  # candidates 2, 4, 8, 16, 32 (at most rows / 8)
    assert read_clusters(tmp_path / "auto").centroids.shape[0] == 4
    result = runner.invoke(app, [*cluster, str(tmp_path / "kmq"), "--preset", "kmq"])
    assert result.exit_code == 0, result.output
    job = Dataset.open(tmp_path / "kmq").manifest.config
    assert (job["niter"], job["nredo"], job["k"]) == (300, 5, 4)  # the paper's settings, k by silhouette
    bad = runner.invoke(app, [*cluster, str(tmp_path / "x"), "--k", "many"])
    assert bad.exit_code == 2 and "--k" in bad.output
