"""Resources shared by every asset: where data lives, which device, which engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from curation.device import Device
from curation.device import resolve as resolve_device
from curation.engine import ENGINES, Engine, engine_for, require_ray
from curation.errors import CurationError
from curation.storage.fs import Location, resolve, safe_join


class StorageRoot(ConfigurableResource):
    """Where every asset writes: a local folder or an object-store URI."""

    root: str = Field(
        default="curation-data",
        description="Folder or URI (s3://bucket/prefix) that holds every stage's output.",
    )
    inbox: str = Field(
        default="",
        description=(
            "Folder the inbox sensor watches for new corpora (files or folders); created when missing. "
            "Empty: <root>/inbox."
        ),
    )
    ingest_bundled: bool = Field(
        default=False,
        description=(
            "On its first tick the inbox sensor also registers and ingests the bundled corpus "
            "'stdlib' (the demo; off for your own data)."
        ),
    )

    def location(self, *parts: str) -> Location:
        return safe_join(self.root, *parts)  # config-given names may not leave the root

    def inbox_location(self) -> Location:
        return resolve(self.inbox) if self.inbox else self.location("inbox")


class ComputeDevice(ConfigurableResource):
    """Where tensor and FAISS work runs, resolved by `curation.device`."""

    device: str = Field(
        default="auto",
        description="auto (the first CUDA GPU if torch sees one, else cpu), cpu, cuda or cuda:N.",
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.resolve()  # a bad device string fails the run before any work starts

    def resolve(self) -> Device:
        return resolve_device(self.device)


class ExecutionEngine(ConfigurableResource):
    """Where the heavy stages run: `local` (the run's own process) or `ray`.

    One engine is opened per run process and handed to every stage (`get()`),
    so one Ray serves the whole run. Ray: the cluster at `ray_address`; or the
    Ray that the dagster-ray resource `ray` (LocalRay, KubeRayCluster) started
    or joined, which it also shuts down; else a Ray started for the run."""

    kind: str = Field(default="local", description="local (in process) or ray (needs curation[ray]).")
    ray_address: str = Field(default="", description="Ray cluster address (e.g. auto); empty: start one.")
    ray: ConfigurableResource | None = Field(
        default=None,
        description="A dagster-ray resource (LocalRay, KubeRayCluster) that connects the run to Ray first.",
    )
    _engine: Engine | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[ExecutionEngine]:
        self.check()
        with engine_for(self.kind, self.ray_address or None) as engine:
            context.log.info(f"engine: {engine.describe()}")
            self._engine = engine
            try:
                yield self
            finally:
                self._engine = None

    def check(self) -> None:
        if self.kind not in ENGINES:
            raise CurationError(f"unknown engine {self.kind!r}: use local or ray")
        if self.ray is None:
            return
        if self.kind != "ray" or self.ray_address:
            raise CurationError("the ray resource needs kind ray and no ray_address (it knows the address)")
        if not require_ray().is_initialized():
            raise CurationError("the ray resource did not connect this process to Ray (lifecycle.connect?)")

    def get(self) -> Engine:
        """The run's engine, for a stage's `engine=`."""
        if self._engine is None:
            raise CurationError("the engine resource is open only inside a Dagster run")
        return self._engine

    def describe(self) -> str:
        return self.get().describe()
