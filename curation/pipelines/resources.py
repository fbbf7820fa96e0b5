"""Resources shared by every asset."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from curation.storage.fs import Location, resolve


class StorageRoot(ConfigurableResource):
    """Where every asset writes: a local folder or an object-store URI."""

    root: str = Field(
        default="curation-data",
        description="Folder or URI (s3://bucket/prefix) that holds every stage's output.",
    )

    def location(self, *parts: str) -> Location:
        return resolve(self.root).join(*parts)
