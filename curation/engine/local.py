"""The local engine: everything in this process, streaming row groups.

Dedup, clustering and tokenisation call the library functions directly (their
compiled kernels, FAISS and the tokenizer already use every core). Embedding
can spread its parts over a process pool (`workers`), which helps encoders
that run on one core, such as the hashed encoder.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import pyarrow as pa

from curation.device import CPU, Device
from curation.embeddings.cluster import ClusterReport, KMeansConfig, KMeansModel, cluster_embeddings
from curation.embeddings.encoders import Encoder
from curation.embeddings.store import EmbeddingStore, EmbedReport, embed_dataset
from curation.errors import CurationError
from curation.selectors.dedup import DedupConfig, run_dedup
from curation.storage.dataset import Dataset
from curation.storage.fs import resolve
from curation.storage.shards import ShardConfig, write_shards

from .base import Engine, Progress
from .common import assign_job, assign_report, assign_with, embed_with, template_encoder
from .io import FileSpan
from .tasks import EmbedTask, assign_part, embed_part

READ_BATCH = 8192  # rows per batch read for dedup, as the dedup stage reads them


class LocalEngine(Engine):
    name = "local"

    def __init__(self, workers: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise CurationError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers

    def describe(self) -> str:
        return f"local ({self.workers} worker{'s' if self.workers > 1 else ''})"

    def dedup(
        self, documents, config: DedupConfig, workdir=None, progress: Progress | None = None
    ) -> pa.Table:
        data = Dataset.open(documents)
        return run_dedup(
            lambda: data.iter_batches(["id", "source", "text"], batch_size=READ_BATCH),
            config,
            workdir or tempfile.gettempdir(),
            progress,
        )

    def embed(self, documents, out, encoder, batch_size=1024, rows_per_part=32_768, dtype="float32",
              progress=None) -> EmbedReport:  # fmt: skip
        if self.workers == 1:
            model = template_encoder(encoder)
            return embed_dataset(documents, out, model, batch_size, rows_per_part, dtype, progress)

        def run(tasks: list[EmbedTask], spans: list[FileSpan], folder: str) -> Iterator[dict[str, Any]]:
            context = multiprocessing.get_context("spawn")  # no forked numba/torch thread pools
            with ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_set_worker_encoder, initargs=(encoder,)
            ) as pool:
                futures = [pool.submit(_embed_in_worker, t, spans, folder, dtype, batch_size) for t in tasks]
                for future in as_completed(futures):
                    yield future.result()

        return embed_with(
            run, documents, out, template_encoder(encoder), batch_size, rows_per_part, dtype, progress
        )

    def cluster(self, embeddings, out, k, config=KMeansConfig(), device: Device = CPU) -> ClusterReport:
        return cluster_embeddings(embeddings, out, k, config, device)

    def assign(self, embeddings, out, model: KMeansModel, config=KMeansConfig(), device: Device = CPU):
        start = time.perf_counter()
        store = EmbeddingStore.open(embeddings)
        folder = resolve(out)

        def run(spans, folder_uri, fitted):
            for index, span in enumerate(spans):
                yield assign_part(index, span, folder_uri, fitted, config.assign_batch, device)

        sizes = assign_with(run, store, folder, model, assign_job(store, model, config), 0)
        return assign_report(store, folder, model, sizes, start)

    def tokenize(self, documents, out, tokenizer, config: ShardConfig | None = None,
                 keep: np.ndarray | None = None, extra=None) -> dict[str, Any]:  # fmt: skip
        return write_shards(documents, out, tokenizer, config, keep, extra)


_WORKER_ENCODER: dict[str, Encoder] = {}


def _set_worker_encoder(encoder: Encoder | Callable[[Device], Encoder]) -> None:
    _WORKER_ENCODER["encoder"] = encoder if isinstance(encoder, Encoder) else encoder(CPU)


def _embed_in_worker(task, spans, folder, dtype, batch_size) -> dict[str, Any]:
    return embed_part(task, spans, folder, _WORKER_ENCODER["encoder"], dtype, batch_size)
