"""Resources shared by every asset: where data lives, which device, which engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from curation.device import Device
from curation.device import resolve as resolve_device
from curation.errors import CurationError
from curation.storage.fs import Location, resolve

T = TypeVar("T")

ENGINES = ("local", "ray")


class StorageRoot(ConfigurableResource):
    """Where every asset writes: a local folder or an object-store URI."""

    root: str = Field(
        default="curation-data",
        description="Folder or URI (s3://bucket/prefix) that holds every stage's output.",
    )
    inbox: str = Field(
        default="",
        description=(
            "Folder the inbox sensor watches for new corpora (files or folders). Empty: <root>/inbox."
        ),
    )

    def location(self, *parts: str) -> Location:
        return resolve(self.root).join(*parts)

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
    """Where a stage's work runs. `local`: in the run's own process. `ray` is
    reserved for the Ray engine and refused until it lands."""

    kind: str = Field(default="local", description="local (in process); ray is not available yet.")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.check()

    def check(self) -> None:
        if self.kind == "ray":
            raise CurationError(
                "engine 'ray' is not available yet: the Ray engine has not landed; use engine kind 'local'"
            )
        if self.kind not in ENGINES:
            raise CurationError(f"unknown engine {self.kind!r}: use local")

    def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one stage call on this engine and return its report."""
        self.check()
        return work(*args, **kwargs)
