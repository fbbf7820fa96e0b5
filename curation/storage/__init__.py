"""Storage: the documents dataset format, readers for raw inputs, ingest, atomic writes."""

from curation.storage.dataset import Dataset, PartWriter, write_dataset
from curation.storage.fs import Location, resolve
from curation.storage.ingest import (
    DOCUMENTS_SCHEMA,
    QUARANTINE_SCHEMA,
    IngestConfig,
    IngestReport,
    InputSpec,
    ingest,
    open_quarantine,
)
from curation.storage.manifest import Manifest, read_manifest

__all__ = [
    "DOCUMENTS_SCHEMA",
    "QUARANTINE_SCHEMA",
    "Dataset",
    "IngestConfig",
    "IngestReport",
    "InputSpec",
    "Location",
    "Manifest",
    "PartWriter",
    "ingest",
    "open_quarantine",
    "read_manifest",
    "resolve",
    "write_dataset",
]
