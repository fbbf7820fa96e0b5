"""Orchestration shared by engines that run parts elsewhere (a process pool, Ray).

The job bookkeeping (settings file, resume, manifest) is the embeddings
store's and the clusters dataset's own; only "run these parts" is injected.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

import numpy as np

from curation.device import CPU, Device
from curation.embeddings.cluster import (
    CENTROIDS_FILE,
    CLUSTERS_SCHEMA,
    ClusterReport,
    KMeansConfig,
    KMeansModel,
    finished_clusters,
    fit_kmeans,
    training_rows,
)
from curation.embeddings.cluster import KIND as CLUSTERS_KIND
from curation.embeddings.encoders import Encoder
from curation.embeddings.store import KIND as EMBEDDINGS_KIND
from curation.embeddings.store import (
    EmbeddingStore,
    EmbedReport,
    check_embed_settings,
    embed_dataset,
    embed_job,
    embed_report,
    embeddings_schema,
    finished_report,
    prepare_store,
)
from curation.errors import CurationError
from curation.storage.dataset import Dataset, clear_dataset, schema_to_dict
from curation.storage.fs import Location, resolve, write_bytes_atomic
from curation.storage.lock import locks_output, output_lock
from curation.storage.manifest import Manifest, write_manifest
from curation.storage.output import claim_all

from .io import FileSpan, file_spans, portable
from .tasks import EmbedTask, embed_tasks, file_entries, npy_bytes

EncoderFactory = Callable[[Device], Encoder]
RunEmbed = Callable[[list[EmbedTask], list[FileSpan], str], Iterable[dict[str, Any]]]
RunGather = Callable[[list[tuple[FileSpan, np.ndarray]]], list[np.ndarray]]
RunAssign = Callable[[list[FileSpan], str, KMeansModel], Iterable[dict[str, Any]]]


def template_encoder(encoder: Encoder | EncoderFactory) -> Encoder:
    """An encoder instance on the CPU: for its config() and dim."""
    return encoder if isinstance(encoder, Encoder) else encoder(CPU)


def embed_with(
    run: RunEmbed,
    documents_path,
    out_path,
    encoder: Encoder,
    batch_size: int,
    rows_per_part: int,
    dtype: str,
    progress: Callable[[int, int], None] | None,
) -> EmbedReport:
    """`embed_dataset` with the parts encoded by `run`, which yields one row per finished part."""
    check_embed_settings(dtype, batch_size, rows_per_part)
    start = time.perf_counter()
    documents = Dataset.open(documents_path)
    if documents.rows == 0:  # one empty part records the schema: nothing to spread
        return embed_dataset(documents_path, out_path, encoder, batch_size, rows_per_part, dtype, progress)
    folder = resolve(out_path)
    job = embed_job(documents, encoder, dtype, rows_per_part)
    with output_lock(folder):  # one writer per store, as embed_dataset
        return _embed_locked(run, documents, folder, job, encoder, dtype, rows_per_part, progress, start)


def _embed_locked(run, documents, folder, job, encoder, dtype, rows_per_part, progress, start) -> EmbedReport:
    done = finished_report(folder, job, documents.rows, encoder, start)
    if done is not None:
        return done
    prepare_store(folder, job)
    tasks = embed_tasks(documents.rows, rows_per_part)
    claim_all(folder, [t.name for t in tasks])  # workers write them; the run owns them
    done: list[dict[str, Any]] = []
    for row in run(tasks, file_spans(documents), portable(folder)):
        done.append(row)
        if progress:
            progress(min(sum(r["rows"] for r in done), documents.rows), documents.rows)
    if sorted(r["index"] for r in done) != list(range(len(tasks))):
        raise CurationError(f"{folder}: {len(done)} parts came back for {len(tasks)} asked")
    reused = sum(1 for r in done if r["reused"])
    encoded = sum(r["rows"] for r in done if not r["reused"])
    schema = embeddings_schema(encoder.dim, dtype)
    extra = {"dim": encoder.dim, "encoder": encoder.config()}
    entries = file_entries(done)
    write_manifest(folder, Manifest(EMBEDDINGS_KIND, entries, schema_to_dict(schema), job, extra))
    return embed_report(folder, documents.rows, encoder, len(entries), reused, encoded, start)


@locks_output("out_path")  # the whole run: a second one fails before training
def cluster_with(
    gather: RunGather,
    run: RunAssign,
    embeddings_path,
    out_path,
    k: int,
    config: KMeansConfig,
    device: Device,
) -> ClusterReport:
    """`cluster_embeddings` with the training sample read and the vectors assigned by the engine."""
    start = time.perf_counter()
    store = EmbeddingStore.open(embeddings_path)
    folder = resolve(out_path)
    job = {"embeddings": store.dataset.fingerprint(), "k": k, **asdict(config)}
    done = finished_clusters(folder, job)
    if done is not None:
        return done
    rows = training_rows(store.rows, k, config)
    sample = _sample(gather, file_spans(store.dataset), rows, store.dim)
    model = fit_kmeans(sample, k, config, device)
    sizes = assign_with(run, store, folder, model, job, len(rows))
    seconds = time.perf_counter() - start
    return ClusterReport(str(folder), store.rows, k, len(rows), model.objective, seconds, sizes)


def _sample(gather: RunGather, spans: list[FileSpan], rows: np.ndarray, dim: int) -> np.ndarray:
    wanted = []
    for span in spans:
        lo, hi = np.searchsorted(rows, [span.first, span.first + span.rows])
        if hi > lo:
            wanted.append((span, rows[lo:hi]))
    blocks = gather(wanted)
    return np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)


def assign_job(store: EmbeddingStore, model: KMeansModel, config: KMeansConfig) -> dict[str, Any]:
    """The settings that identify an assignment to given centroids."""
    centroids = hashlib.sha256(np.ascontiguousarray(model.centroids, np.float32).tobytes()).hexdigest()
    return {
        "embeddings": store.dataset.fingerprint(),
        "k": len(model.centroids),
        **asdict(config),
        "spherical": model.spherical,
        "centroids_sha256": centroids,
    }


def assign_with(
    run: RunAssign, store: EmbeddingStore, folder: Location, model: KMeansModel, job: dict, train_points: int
) -> tuple[int, ...]:
    """Write centroids, the parts `run` assigns, then the manifest; returns cluster sizes."""
    with output_lock(folder):
        return _assign_locked(run, store, folder, model, job, train_points)


def _assign_locked(run, store, folder, model, job, train_points) -> tuple[int, ...]:
    clear_dataset(folder)
    write_bytes_atomic(folder.join(CENTROIDS_FILE), npy_bytes(model.centroids))
    spans = [s for s in file_spans(store.dataset) if s.rows] or file_spans(store.dataset)[:1]
    claim_all(folder, [f"part-{i:05d}.parquet" for i in range(len(spans))])  # written by workers
    done = list(run(spans, portable(folder), model))
    sizes = np.zeros(len(model.centroids), dtype=np.int64)
    for row in done:
        sizes += np.asarray(row["sizes"], dtype=np.int64)
    extra = {
        "k": len(sizes),
        "train_points": train_points,
        "objective": model.objective,
        "centroids": CENTROIDS_FILE,
        "sizes": sizes.tolist(),
    }
    write_manifest(
        folder, Manifest(CLUSTERS_KIND, file_entries(done), schema_to_dict(CLUSTERS_SCHEMA), job, extra)
    )
    return tuple(int(s) for s in sizes)


def assign_report(store, folder, model, sizes, start) -> ClusterReport:
    seconds = time.perf_counter() - start
    return ClusterReport(str(folder), store.rows, len(model.centroids), 0, model.objective, seconds, sizes)


def default_device(device: Device | None) -> Device:
    return device if device is not None else CPU
