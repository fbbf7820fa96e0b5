"""Corpora as dynamic partitions of `documents`, and the inbox they arrive in.

Each registered corpus is one partition of the `documents` asset and lands in
`<storage>/documents/<corpus>/`, so adding a corpus ingests only that corpus.
The bundled standard-library corpus is the partition `stdlib`; any other
partition is named like the source its inbox entries get: a file's name up to
its first dot (`web.jsonl.gz` is the corpus `web`), a folder's name; entries of
the same name (`web.jsonl` and `web.csv`) are one corpus. The global stages
downstream read every registered corpus.
"""

from __future__ import annotations

import itertools

import pyarrow.fs as pafs
from dagster import DagsterInstance, DynamicPartitionsDefinition

from curation.errors import CurationError
from curation.pipelines.resources import StorageRoot
from curation.storage import DOCUMENTS_SCHEMA, Dataset, InputSpec, Location, write_dataset
from curation.storage.ingest import file_source_name

CORPORA = "corpora"
DEFAULT_CORPUS = "stdlib"
corpora = DynamicPartitionsDefinition(name=CORPORA)

# Names the inbox sensor leaves alone: hidden files, files still being written
# under a temporary name (write, then rename into the inbox), and names Dagster
# refuses as partition keys.
_SKIP_PREFIXES = (".", "_")
_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
_BAD_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0", ",", "[", "]")


def corpus_location(storage: StorageRoot, corpus: str) -> Location:
    return storage.location("documents", corpus)


def corpus_inputs(storage: StorageRoot, corpus: str) -> list[InputSpec]:
    """What a partition ingests when its config names no inputs: the inbox entries
    of its name (files and folders; see the module doc)."""
    inbox = storage.inbox_location()
    names = [name for name, entry in _inbox_listing(inbox).items() if corpus in (name, entry[0])]
    if not names:
        raise CurationError(
            f"corpus {corpus!r}: nothing named {corpus}.* or {corpus}/ in the inbox {inbox}; put the "
            "file or folder there or list inputs in the documents config"
        )
    return [InputSpec(path=inbox.join(name).uri) for name in sorted(names)]


def registered_corpora(instance: DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(CORPORA))


def ingested_corpora(storage: StorageRoot, corpora_keys: list[str]) -> list[Dataset]:
    """The documents dataset of every registered corpus; a corpus registered but
    not ingested is an error, never silently left out of the global stages."""
    if not corpora_keys:
        raise CurationError(
            "no corpora are registered: add a partition of documents (the bundled one is "
            f"{DEFAULT_CORPUS!r}) or drop a file in the inbox with the inbox sensor running"
        )
    missing = [k for k in corpora_keys if not corpus_location(storage, k).join("manifest.json").exists()]
    if missing:
        raise CurationError(
            f"corpora {missing} are registered but not ingested: materialize documents for "
            "those partitions first, or delete the partitions"
        )
    return [Dataset.open(corpus_location(storage, k)) for k in corpora_keys]


def combine_corpora(datasets: list[Dataset], out: Location, corpora_keys: list[str]) -> Dataset:
    """All corpora in one documents dataset, in corpus order, streamed."""
    batches = itertools.chain.from_iterable(d.iter_batches(batch_size=8192) for d in datasets)
    config = {"corpora": {k: str(d.folder) for k, d in zip(corpora_keys, datasets, strict=True)}}
    extra = {"report": {"documents": sum(d.rows for d in datasets)}}
    return write_dataset(out, batches, DOCUMENTS_SCHEMA, "documents", config, extra)


def inbox_corpora(inbox: Location) -> dict[str, str]:
    """The corpora the inbox holds, each with a signature (names, sizes and
    modification times of its entries) that changes when any of them changes."""
    grouped: dict[str, list[str]] = {}
    for name, (corpus, signature) in sorted(_inbox_listing(inbox).items()):
        if corpus != DEFAULT_CORPUS:
            grouped.setdefault(corpus, []).append(f"{name}={signature}")
    return {corpus: "|".join(parts) for corpus, parts in grouped.items()}


def _inbox_listing(inbox: Location) -> dict[str, tuple[str, str]]:
    """Files and folders directly in the inbox that can be corpora: name -> (corpus, signature)."""
    if not inbox.exists():
        return {}
    found = {}
    for info in inbox.fs.get_file_info(pafs.FileSelector(inbox.path)):
        name = info.base_name
        if not usable_name(name):
            continue
        if info.type == pafs.FileType.File:
            found[name] = (file_source_name(name), f"{info.size}:{info.mtime_ns}")
        elif info.type == pafs.FileType.Directory:
            found[name] = (name, f"dir:{_folder_signature(inbox.fs, info.path)}")
    return found


def usable_name(name: str) -> bool:
    return (
        bool(name)
        and name != DEFAULT_CORPUS
        and not name.startswith(_SKIP_PREFIXES)
        and not name.endswith(_SKIP_SUFFIXES)
        and not any(bad in name for bad in _BAD_SUBSTRINGS)
    )


def _folder_signature(fs: pafs.FileSystem, path: str) -> str:
    files = [
        i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File
    ]
    return (
        f"{len(files)}:{sum(i.size or 0 for i in files)}:{max((i.mtime_ns or 0 for i in files), default=0)}"
    )
