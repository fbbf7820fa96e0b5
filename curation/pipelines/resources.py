"""Resources shared by every asset: where data lives, which device, which engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from curation.device import Device
from curation.device import resolve as resolve_device
from curation.engine import ENGINES, require_ray
from curation.errors import CurationError
from curation.storage.fs import Location, resolve, safe_join

T = TypeVar("T")


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
    """Where a stage's heavy work runs: `local` (the run's own process) or `ray`
    (Ray Data, on `ray_address` or a Ray started for the run). Dedup runs on it;
    the other stages run locally for now."""

    kind: str = Field(default="local", description="local (in process) or ray (needs curation[ray]).")
    ray_address: str = Field(default="", description="Ray cluster address (e.g. auto); empty: start one.")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.check()

    def check(self) -> None:
        if self.kind not in ENGINES:
            raise CurationError(f"unknown engine {self.kind!r}: use local or ray")
        if self.kind == "ray":
            require_ray()

    def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one stage call on this engine and return its report."""
        self.check()
        if "engine" in kwargs:  # stages that can run on Ray take the engine by name
            kwargs = {**kwargs, "engine": self.kind, "ray_address": self.ray_address or None}
        return work(*args, **kwargs)
