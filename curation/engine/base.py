"""The engine interface: where the heavy stages run, chosen by configuration.

    from curation.engine import get_engine

    with get_engine("ray", ray_address="auto") as engine:
        decisions = engine.dedup("data/documents", DedupConfig(), "work/")

Both engines take the same arguments and give the same results (same
decisions, same vectors, same clusters, same shards); only where the work
runs differs. Stage code is written once: the per-batch and per-part
functions live in the libraries and in `curation.engine.tasks` /
`curation.engine.dedup_ops`; an engine only orchestrates them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from curation.device import CPU, Device
from curation.embeddings.cluster import ClusterReport, KMeansConfig, KMeansModel
from curation.embeddings.encoders import Encoder
from curation.embeddings.store import EmbedReport
from curation.errors import CurationError
from curation.selectors.dedup.config import DedupConfig
from curation.storage.shards import ShardConfig

ENGINES = ("local", "ray")
RAY_MISSING = (
    "the ray engine needs Ray, which is not installed: pip install 'curation[ray]' (or use engine 'local')"
)
Progress = Callable[[str, int], None]


class Engine(ABC):
    """Runs the heavy stages. Use as a context manager, or call close()."""

    name: str = ""

    @abstractmethod
    def dedup(
        self,
        documents: str,
        config: DedupConfig,
        workdir: str | None = None,
        progress: Progress | None = None,
    ) -> pa.Table:
        """`run_dedup` over a documents dataset: one decision row per document, in input order."""

    @abstractmethod
    def embed(
        self,
        documents: str,
        out: str,
        encoder: Encoder | Callable[[Device], Encoder],
        batch_size: int = 1024,
        rows_per_part: int = 32_768,
        dtype: str = "float32",
        progress: Callable[[int, int], None] | None = None,
    ) -> EmbedReport:
        """`embed_dataset`. `encoder` is an encoder, or a function of a `Device` that
        makes one (so that remote workers can build theirs on their own GPU)."""

    @abstractmethod
    def cluster(
        self, embeddings: str, out: str, k: int, config: KMeansConfig = KMeansConfig(), device: Device = CPU
    ) -> ClusterReport:
        """`cluster_embeddings`: fit k-means on the seeded sample, assign every vector."""

    @abstractmethod
    def assign(
        self, embeddings: str, out: str, model: KMeansModel, config: KMeansConfig = KMeansConfig(),
        device: Device = CPU,
    ) -> ClusterReport:  # fmt: skip
        """Assign every vector to the nearest of the given centroids; a clusters dataset at `out`."""

    @abstractmethod
    def tokenize(
        self,
        documents: str,
        out: str,
        tokenizer,
        config: ShardConfig | None = None,
        keep: np.ndarray | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`write_shards`: tokenised, packed, checksummed shards; returns the index."""

    def describe(self) -> str:
        return self.name

    def close(self) -> None:  # noqa: B027 - engines with nothing to release keep this
        """Release what the engine started (nothing for the local engine)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require_ray():
    """The `ray` module, or a CurationError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise CurationError(RAY_MISSING) from exc
    return ray


def get_engine(name: str = "local", ray_address: str | None = None, **options: Any) -> Engine:
    """The engine called `name` ("local" or "ray").

    local: in this process; `workers=N` encodes embedding parts in N processes.
    ray: Ray Data on the cluster at `ray_address` ("auto", "ray://host:10001",
    ...), or on a Ray started here for this process when it is None; see
    `RayEngine` for its options.
    """
    if name == "local":
        if ray_address:
            raise CurationError("ray_address is only for engine 'ray'")
        from .local import LocalEngine

        return LocalEngine(**options)
    if name == "ray":
        require_ray()
        from .ray_engine import RayEngine

        return RayEngine(address=ray_address, **options)
    raise CurationError(f"engine {name!r}: use one of {', '.join(ENGINES)}")
