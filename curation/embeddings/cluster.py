"""FAISS k-means: train on a seeded sample, assign every vector in batches.

Spherical k-means (unit centroids, inner-product assignment) is the default,
as in SemDeDup. Indexes go to the GPU when the injected `Device` says FAISS
can use one; nothing here checks hardware.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from curation.device import CPU, Device, part_device
from curation.embeddings.store import EmbeddingStore, vectors_of
from curation.engine import Engine, local_default
from curation.errors import CurationError
from curation.storage.dataset import ROW_GROUP_ROWS, Dataset, clear_dataset, part_name, schema_to_dict
from curation.storage.decisions import align_by_id, parquet_bytes
from curation.storage.fs import Location, resolve, write_bytes_atomic
from curation.storage.lock import locks_output
from curation.storage.manifest import MANIFEST_NAME, FileEntry, Manifest, write_manifest
from curation.storage.output import claim_all
from curation.storage.ranges import FileSpan, file_spans, iter_rows, portable, read_rows

KIND = "clusters"
CENTROIDS_FILE = "centroids.npy"
CLUSTERS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("cluster", pa.int32(), nullable=False),
        pa.field("distance_to_centroid", pa.float32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class KMeansConfig:
    """k-means settings. Defaults follow SemDeDup: spherical, 100 iterations, one run.

    `KMeansConfig.kmq()` gives kMQ's: 300 iterations, the best of 5 restarts, as
    for-ai/iterative-data-selection's selection/methods/kmeansiter.py calls
    `faiss.Kmeans(d, K, niter=300, nredo=5)`.

    Fields:
        niter: Lloyd iterations per run.
        nredo: runs from different seeds; the best objective wins.
        spherical: unit-norm centroids and cosine assignment; distance_to_centroid
            is then 1 - cosine similarity, otherwise the Euclidean distance.
        seed: seeds the training sample and FAISS's initialisation.
        max_points_per_centroid: the training sample is at most k times this
            (FAISS's own default, 256); all points are assigned afterwards.
        assign_batch: vectors searched at once when assigning.
    """

    niter: int = 100
    nredo: int = 1
    spherical: bool = True
    seed: int = 0
    max_points_per_centroid: int = 256
    assign_batch: int = 65_536

    @classmethod
    def kmq(cls, **overrides: Any) -> KMeansConfig:
        """Diversify and Conquer's settings: 300 iterations, best of 5 restarts."""
        return cls(**{"niter": 300, "nredo": 5, **overrides})

    def __post_init__(self) -> None:
        for name in ("niter", "nredo", "max_points_per_centroid", "assign_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class KMeansModel:
    centroids: np.ndarray  # (k, d) float32
    objective: float  # FAISS's last objective: total similarity (spherical) or squared error
    spherical: bool


def fit_kmeans(
    x: np.ndarray, k: int, config: KMeansConfig = KMeansConfig(), device: Device = CPU
) -> KMeansModel:
    """Train k-means on the rows of `x` (already the sample to train on)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise CurationError(f"k-means needs 1 <= k <= number of vectors, got k={k} for {n} vectors")
    import faiss  # here, not at import: a command that never clusters need not load it

    clustering = faiss.Clustering(d, k)
    clustering.niter, clustering.nredo, clustering.seed = config.niter, config.nredo, config.seed
    clustering.spherical = config.spherical
    clustering.max_points_per_centroid = max(n // k + 1, config.max_points_per_centroid)  # we sampled
    clustering.verbose = False
    index, _keep = _flat_index(d, config.spherical, device)
    clustering.train(x, index)
    centroids = faiss.vector_to_array(clustering.centroids).reshape(k, d).astype(np.float32)
    stats = clustering.iteration_stats
    objective = float(stats.at(stats.size() - 1).obj) if stats.size() else float("nan")
    return KMeansModel(centroids, objective, config.spherical)


def assign(
    x: np.ndarray, model: KMeansModel, device: Device = CPU, batch: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of `x`: (cluster int32, distance float32)."""
    searcher = Assigner(model, device)
    parts = [searcher(x[i : i + batch]) for i in range(0, len(x), batch)]
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class Assigner:
    """Holds a flat index over the centroids; call it on batches of vectors."""

    def __init__(self, model: KMeansModel, device: Device = CPU):
        self.spherical, self.centroids = model.spherical, model.centroids
        self.index, self._keep = _flat_index(model.centroids.shape[1], model.spherical, device)
        self.index.add(np.ascontiguousarray(model.centroids, dtype=np.float32))

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = self.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        best = scores[:, 0]
        # FAISS L2 search returns squared distances
        distance = 1.0 - best if self.spherical else np.sqrt(np.maximum(best, 0.0))
        return labels[:, 0].astype(np.int32), distance.astype(np.float32)


def _flat_index(d: int, spherical: bool, device: Device):
    """A flat index, on the GPU when the device allows. The GPU resources
    object is returned too: it must outlive the index."""
    import faiss

    index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
    if not device.faiss_gpu:
        return index, None
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, device.index, index), resources


def inertia(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared Euclidean distances to the assigned centroids (sklearn's inertia)."""
    diff = x - centroids[labels]
    return float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))


def choose_k(
    x: np.ndarray,
    candidates: list[int],
    config: KMeansConfig = KMeansConfig(),
    device: Device = CPU,
    sample: int = 10_000,
) -> tuple[int, dict[int, float]]:
    """Best k by silhouette score on a seeded sample (Diversify and Conquer's rule)."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))
    points = x[rows]
    metric = "cosine" if config.spherical else "euclidean"
    scores = {}
    for k in candidates:
        labels, _ = assign(points, fit_kmeans(points, k, config, device), device)
        scores[k] = float(silhouette_score(points, labels, metric=metric)) if k > 1 else -1.0
    return max(scores, key=lambda k: (scores[k], -k)), scores


def k_candidates(rows: int) -> list[int]:
    """Powers of two for `choose_k`: the paper's 64 to 2048 where the corpus
    allows, never above rows / 8 (a cluster needs members to score), at least 2."""
    top = min(2048, rows // 8)
    low = 64 if top >= 256 else 2
    found = [2**i for i in range(1, 12) if low <= 2**i <= top]
    return found or [min(2, rows)]


def auto_k(
    embeddings_path: str | Location,
    config: KMeansConfig = KMeansConfig(),
    device: Device = CPU,
    candidates: list[int] | None = None,
    sample: int = 10_000,
) -> tuple[int, dict[int, float]]:
    """k by silhouette over `k_candidates` on a seeded sample of an embeddings store."""
    store = EmbeddingStore.open(embeddings_path)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(store.rows, size=min(sample, store.rows), replace=False))
    search = replace(config, nredo=1)  # one run per candidate; the chosen k gets every restart
    return choose_k(store.take(rows), candidates or k_candidates(store.rows), search, device, sample)


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class ClusterReport:
    path: str
    rows: int
    k: int
    train_points: int
    objective: float
    seconds: float
    sizes: tuple[int, ...] = field(repr=False, default=())

    @property
    def empty_clusters(self) -> int:
        return sum(1 for s in self.sizes if s == 0)


Progress = Callable[[int, int], None]


@locks_output("out_path")  # the whole run: a second one fails before training
def cluster_embeddings(
    embeddings_path: str | Location,
    out_path: str | Location,
    k: int,
    config: KMeansConfig = KMeansConfig(),
    device: Device = CPU,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> ClusterReport:
    """k-means over an embeddings store; writes (id, cluster, distance_to_centroid)
    in embeddings order plus `centroids.npy`. Same inputs and config: a no-op.
    The engine reads the training sample and assigns the parts; this process fits."""
    start = time.perf_counter()
    engine = local_default(engine)
    store = EmbeddingStore.open(embeddings_path)
    folder = resolve(out_path)
    job = {"embeddings": store.dataset.fingerprint(), "k": k, **asdict(config)}
    done = finished_clusters(folder, job)
    if done is not None:
        return done
    rows = training_rows(store.rows, k, config)
    spans = file_spans(store.dataset)
    model = fit_kmeans(_sample(engine, spans, rows, store.dim), k, config, device)
    sizes = _assign_parts(engine, store, spans, folder, model, config, device, job, len(rows), progress)
    seconds = time.perf_counter() - start
    return ClusterReport(str(folder), store.rows, k, len(rows), model.objective, seconds, sizes)


@locks_output("out_path")
def assign_embeddings(
    embeddings_path: str | Location,
    out_path: str | Location,
    model: KMeansModel,
    config: KMeansConfig = KMeansConfig(),
    device: Device = CPU,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> ClusterReport:
    """Assign every vector to the nearest of the given centroids: a clusters dataset at `out_path`."""
    start = time.perf_counter()
    store = EmbeddingStore.open(embeddings_path)
    centroids = hashlib.sha256(np.ascontiguousarray(model.centroids, np.float32).tobytes()).hexdigest()
    job = {
        "embeddings": store.dataset.fingerprint(),
        "k": len(model.centroids),
        **asdict(config),
        "spherical": model.spherical,
        "centroids_sha256": centroids,
    }
    folder = resolve(out_path)
    spans = file_spans(store.dataset)
    sizes = _assign_parts(
        local_default(engine), store, spans, folder, model, config, device, job, 0, progress
    )
    seconds = time.perf_counter() - start
    return ClusterReport(str(folder), store.rows, len(model.centroids), 0, model.objective, seconds, sizes)


def training_rows(n: int, k: int, config: KMeansConfig) -> np.ndarray:
    """Sorted row numbers of the training sample: all rows when n is small."""
    limit = k * config.max_points_per_centroid
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(n, size=limit, replace=False))


def _sample(engine: Engine, spans: list[FileSpan], rows: np.ndarray, dim: int) -> np.ndarray:
    """The vectors at sorted global `rows`, each part's read where the engine runs it."""
    wanted = []
    for span in spans:
        lo, hi = np.searchsorted(rows, [span.first, span.first + span.rows])
        if hi > lo:
            wanted.append((span, rows[lo:hi]))
    blocks = list(engine.map(sample_rows, wanted))
    return np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)


def sample_rows(wanted: tuple[FileSpan, np.ndarray]) -> np.ndarray:
    """The vectors at global rows `rows` (sorted, all inside this embeddings part)."""
    span, rows = wanted
    column = read_rows([span], span.first, span.first + span.rows, ["embedding"]).column("embedding")
    return vectors_of(column.combine_chunks(), column.type.list_size)[np.asarray(rows, np.int64) - span.first]


def _assign_parts(engine, store, spans, folder, model, config, device, job, train_points, progress) -> tuple:
    """Centroids, then one clusters part per embeddings part (assigned by the engine), then the manifest."""
    clear_dataset(folder)
    write_bytes_atomic(folder.join(CENTROIDS_FILE), _npy_bytes(model.centroids))
    parts = list(enumerate([s for s in spans if s.rows] or spans[:1]))
    claim_all(folder, [part_name(i) for i, _ in parts])  # workers write them; this run owns them
    on, gpus = part_device(device if device.faiss_gpu else CPU, engine.gpus, engine.distributed)
    setup = partial(Assigner, model, on)
    work = partial(assign_part, folder=portable(folder), batch=config.assign_batch)
    sizes, rows, done = np.zeros(len(model.centroids), dtype=np.int64), [], 0
    for row in engine.map(work, parts, setup=setup, cpus=1 - gpus, gpus=gpus):
        sizes += np.asarray(row.pop("sizes"), dtype=np.int64)
        rows.append(row["entry"])
        done += row["entry"].rows
        if progress:
            progress(done, store.rows)
    extra = {
        "k": len(sizes),
        "train_points": train_points,
        "objective": model.objective,
        "centroids": CENTROIDS_FILE,
        "sizes": sizes.tolist(),
    }
    write_manifest(folder, Manifest(KIND, rows, schema_to_dict(CLUSTERS_SCHEMA), job, extra))
    return tuple(int(s) for s in sizes)


def assign_part(searcher: Assigner, part: tuple[int, FileSpan], *, folder: str, batch: int) -> dict[str, Any]:
    """Nearest centroid of every vector of one embeddings part, written as clusters part `index`."""
    index, span = part
    tables = []
    sizes = np.zeros(len(searcher.centroids), dtype=np.int64)
    for block in iter_rows([span], span.first, span.first + span.rows, ["id", "embedding"], batch):
        column = block.column("embedding")
        labels, distance = searcher(vectors_of(column, column.type.list_size))
        sizes += np.bincount(labels, minlength=len(sizes))
        tables.append(
            pa.table([block.column("id"), pa.array(labels), pa.array(distance)], schema=CLUSTERS_SCHEMA)
        )
    table = pa.concat_tables(tables) if tables else CLUSTERS_SCHEMA.empty_table()
    data = parquet_bytes(table, ROW_GROUP_ROWS)
    write_bytes_atomic(resolve(folder).join(part_name(index)), data)
    # described from the bytes written, not by reading the file back
    entry = FileEntry(part_name(index), table.num_rows, len(data), hashlib.sha256(data).hexdigest())
    return {"entry": entry, "sizes": sizes.tolist()}


def finished_clusters(folder: Location, job: dict[str, Any]) -> ClusterReport | None:
    if not folder.join(MANIFEST_NAME).exists():
        return None
    try:
        manifest = Dataset.open(folder).manifest
    except CurationError:
        return None
    if manifest.config != job:
        return None
    extra = manifest.extra
    sizes = tuple(extra["sizes"])
    return ClusterReport(
        str(folder), manifest.rows, extra["k"], extra["train_points"], extra["objective"], 0.0, sizes
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Clusters:
    ids: pa.Array
    cluster: np.ndarray  # int32
    distance: np.ndarray  # float32
    centroids: np.ndarray  # (k, d) float32
    spherical: bool


def read_clusters(path: str | Location) -> Clusters:
    dataset = Dataset.open(path)
    if dataset.manifest.kind != KIND:
        raise CurationError(f"{dataset.folder}: a {dataset.manifest.kind!r} dataset, not clusters")
    table = dataset.read_table()
    loc = dataset.sidecar(dataset.manifest.extra.get("centroids", CENTROIDS_FILE))
    with loc.fs.open_input_file(loc.path) as handle:
        centroids = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    return Clusters(
        table.column("id").combine_chunks(),
        table.column("cluster").to_numpy(),
        table.column("distance_to_centroid").to_numpy(),
        centroids,
        bool(dataset.manifest.config.get("spherical", True)),
    )


@dataclass(frozen=True)
class ClusteredDocuments:
    """What the selectors need, aligned row by row in document order."""

    ids: pa.Array
    sources: pa.Array
    cluster: np.ndarray
    distance: np.ndarray
    embeddings: np.ndarray | None  # (n, d) float32, when asked for


def load_clustered(
    documents_path: str | Location,
    clusters_path: str | Location,
    embeddings_path: str | Location | None = None,
) -> ClusteredDocuments:
    """Read ids and sources, clusters and (optionally) vectors; check that the
    three list the same ids in the same order."""
    documents = Dataset.open(documents_path)
    table = documents.read_table(["id", "source"])
    ids = table.column("id").combine_chunks()
    clusters = read_clusters(clusters_path)
    align_by_id(ids, pa.table({"id": clusters.ids}), "id", clusters_path, same_order=True)
    vectors = None
    if embeddings_path is not None:
        store_ids, vectors = EmbeddingStore.open(embeddings_path).read()
        align_by_id(ids, pa.table({"id": store_ids}), "id", embeddings_path, same_order=True)
    sources = table.column("source").combine_chunks()
    return ClusteredDocuments(ids, sources, clusters.cluster, clusters.distance, vectors)


def matching_store(ids: pa.Array, embeddings_path: str | Location) -> EmbeddingStore:
    """The embeddings store, checked to list `ids` in the same order (its ids are
    read, not its vectors)."""
    store = EmbeddingStore.open(embeddings_path)
    store_ids = store.dataset.read_table(["id"]).column("id").combine_chunks()
    align_by_id(ids, pa.table({"id": store_ids}), "id", embeddings_path, same_order=True)
    return store
