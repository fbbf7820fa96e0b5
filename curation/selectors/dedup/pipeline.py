"""run_dedup: short filter, exact dedup, then MinHash LSH fuzzy dedup, streaming.

Pass 1 reads the batches once: clean, fingerprint, find exact groups, and
compute MinHash band hashes for the first member of each group, spilling them
to the work folder. The LSH step then sorts band hashes a few bands at a time
and joins bucket members with union-find. With `verify`, a second read of the
batches stores shingle sets of candidate documents and keeps only pairs whose
exact Jaccard similarity reaches the threshold. Finally each group keeps its
member with the smallest (source rank, id).

Memory: per document about 40 bytes plus its id and source strings (the
decision table itself); per batch the text and its cleaned code points; per
LSH pass about 30 bytes per signature owner and band in the pass.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.storage.decisions import DECISION_SCHEMA

from . import components as cc
from .clean import Cleaner, _utf8_views
from .config import DedupConfig
from .exact import ExactIndex
from .lsh import BandSpill, band_passes, bucket_pairs, union_buckets, unique_pairs
from .minhash import HashFamily, band_hashes, signatures
from .verify import FingerprintStore

Progress = Callable[[str, int], None]
REQUIRED = ("id", "source", "text")

READ_BATCH = 8192  # rows per batch read from a documents dataset


def run_dedup(
    batches: Callable[[], Iterator[pa.RecordBatch]],
    config: DedupConfig,
    workdir: str | Path,
    progress: Progress | None = None,
) -> pa.Table:
    """Decide, for every input document, whether it is kept and why.

    `batches()` must return a fresh iterator of record batches with string
    columns id (unique), source and text; it is called once, or twice when
    `config.verify` is set. Returns one row per input id, in input order, with
    columns id, source, stage, kept, reason, cluster (see DECISION_SCHEMA).
    Temporary files go to a fresh folder inside `workdir`, removed at the end.
    """
    Path(workdir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dedup-", dir=workdir))
    try:
        with kernel_threads(config.num_threads):
            state = _first_pass(batches, config, scratch, progress)
            parent = np.arange(state.docs, dtype=np.int64)
            owners = state.owners()
            if config.exact or config.fuzzy:
                cc.link_owners(parent, owners)
            if config.fuzzy:
                _fuzzy(batches, config, state, parent, scratch, progress)
            table = decision_table(state.ids, state.sources, state.source_codes, parent, owners, config)
            if progress is not None:
                progress("decide", state.docs)
            return table
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def dedup_documents(documents, config: DedupConfig, workdir, progress: Progress | None, engine) -> pa.Table:
    """The decisions for a documents dataset: `run_dedup` streamed here on a
    local engine; `dedup_distributed` (same decisions, no `verify`) on an engine
    whose parts run elsewhere, where `workdir` is not used."""
    if engine.distributed:
        from .distributed import dedup_distributed  # it imports this module

        return dedup_distributed(documents, config, engine, progress).decisions
    from curation.storage.dataset import Dataset

    data = Dataset.open(documents)
    return run_dedup(
        lambda: data.iter_batches(["id", "source", "text"], batch_size=READ_BATCH), config, workdir, progress
    )


@dataclass
class _State:
    """What pass 1 keeps per document, in input order."""

    family: HashFamily
    spill: BandSpill
    exact: ExactIndex = field(default_factory=ExactIndex)
    ids: list[pa.Array] = field(default_factory=list)
    sources: list[pa.Array] = field(default_factory=list)
    owner_chunks: list[np.ndarray] = field(default_factory=list)
    source_codes: dict[str, int] = field(default_factory=dict)
    docs: int = 0

    def owners(self) -> np.ndarray:
        if not self.owner_chunks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self.owner_chunks)


def _first_pass(batches, config: DedupConfig, scratch: Path, progress) -> _State:
    family = HashFamily.from_seed(config.seed, config.num_perm, config.ngram)
    state = _State(family=family, spill=BandSpill(scratch / "bands", config.bands))
    clean = Cleaner(config.normalize)
    for batch in _pieces(batches, config.batch_chars):
        first = state.docs
        state.ids.append(string_column(batch, "id"))
        state.sources.append(string_column(batch, "source"))
        codes = number_sources(state.sources[-1], state.source_codes)
        cleaned = clean(batch.column("text"))
        eligible = cleaned.short_lengths(config.short_count) >= config.min_chars
        scope = codes if config.mode == "local" else np.zeros_like(codes)
        owners = state.exact.assign(scope, cleaned.digest_lo, cleaned.digest_hi, eligible)
        state.owner_chunks.append(owners)
        state.docs += batch.num_rows
        if config.fuzzy:
            local = np.flatnonzero(owners == np.arange(first, state.docs))
            sigs = signatures(cleaned, local, family)
            hashes = band_hashes(sigs, config.bands, config.rows, family)
            state.spill.write(local + first, scope[local], hashes)
        if progress is not None:
            progress("signatures", state.docs)
    return state


def _fuzzy(batches, config, state: _State, parent, scratch: Path, progress) -> None:
    def report(bands_done: int) -> None:
        if progress is not None:
            progress("lsh", state.docs * bands_done // config.bands)

    if not config.verify:
        band_passes(
            state.spill, config.bands_per_pass,
            lambda keys, nodes, scope: union_buckets(keys, nodes, scope, parent), report,
        )  # fmt: skip
        return
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []

    def collect(keys, nodes, scope) -> None:
        u, v = bucket_pairs(keys, nodes, scope, config.verify_max_bucket)
        us.append(u)
        vs.append(v)
        if sum(x.size for x in us) > 4 * max(state.docs, 1 << 20):
            merged = unique_pairs(us, vs)  # keep the candidate list compact
            us[:], vs[:] = [merged[0]], [merged[1]]

    band_passes(state.spill, config.bands_per_pass, collect, report)
    u, v = unique_pairs(us, vs)
    similarity = _verify_pairs(batches, config, state, u, v, scratch, progress)
    good = similarity >= config.verify_threshold
    cc.union_pairs(parent, u[good], v[good])


def _verify_pairs(batches, config, state: _State, u, v, scratch: Path, progress) -> np.ndarray:
    needed = np.zeros(state.docs, dtype=bool)
    needed[u] = True
    needed[v] = True
    store = FingerprintStore(scratch / "shingles.bin")
    clean = Cleaner(config.normalize)
    done = 0
    try:
        for batch in _pieces(batches, config.batch_chars):
            first, done = done, done + batch.num_rows
            local = np.flatnonzero(needed[first:done])
            if local.size:
                cleaned = clean(batch.column("text"))
                store.add(cleaned, local, local + first, state.family)
            if progress is not None:
                progress("verify", done)
        if done != state.docs:
            raise ValueError(f"batches() gave {done} rows on the second read, {state.docs} first")
        return store.jaccard(u, v)
    finally:
        store.close()


def decision_table(ids: list[pa.Array], sources: list[pa.Array], codes: dict[str, int], parent, owners,
                   config: DedupConfig) -> pa.Table:  # fmt: skip
    """One row per document (input order) from its id and source chunks, the source
    codes, the union-find `parent` and exact-group `owners`; the engines call it too."""
    ids = pa.chunked_array(ids, type=pa.string())
    sources = pa.chunked_array(sources, type=pa.string())
    key = _keep_keys(ids, sources, codes, config.source_priority)
    last = cc.STAGES.index(config.stages[-1])
    stage, reason, kept, cluster = cc.decide(parent, owners, key, config.exact, config.fuzzy, last)
    cluster_ids = pc.take(ids, pa.array(cluster, mask=cluster < 0))
    table = pa.table(
        [
            ids,
            sources,
            pc.take(pa.array(cc.STAGES), stage),
            pa.array(kept),
            pc.take(pa.array(cc.REASONS), reason),
            cluster_ids,
        ],
        schema=DECISION_SCHEMA,
    )
    return table.combine_chunks()


def _keep_keys(ids, sources, codes: dict[str, int], priority: tuple[str, ...]) -> np.ndarray:
    """Sort key per document: (source rank, id) folded into one int64."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = pc.sort_indices(ids).to_numpy()
    sorted_ids = pc.take(ids, order)
    same = pc.equal(sorted_ids[1:], sorted_ids[:-1]) if n > 1 else pa.array([], pa.bool_())
    if pc.any(same).as_py():
        position = int(np.flatnonzero(same.to_numpy(zero_copy_only=False))[0])
        duplicate = sorted_ids[position].as_py()
        raise ValueError(f"column 'id' must be unique; {duplicate!r} appears more than once")
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[order] = np.arange(n, dtype=np.int64)
    if not priority:
        return id_rank
    rank_of_code = np.full(max(codes.values(), default=0) + 1, len(priority), dtype=np.int64)
    for rank, name in enumerate(priority):
        if name in codes:
            rank_of_code[codes[name]] = rank
    doc_codes = number_sources(sources, dict(codes))
    return rank_of_code[doc_codes] * n + id_rank


def _pieces(batches, max_chars: int) -> Iterator[pa.RecordBatch]:
    """Input batches, checked, and split so no piece holds much more than max_chars of text."""
    row = 0
    for batch in batches():
        parts = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for part in parts:
            check_columns(part, row)
            yield from split_batch(part, max_chars)
            row += part.num_rows


def split_batch(batch: pa.RecordBatch, max_chars: int) -> Iterator[pa.RecordBatch]:
    ends = _utf8_views(batch.column("text"))[2]  # cumulative UTF-8 bytes, from the offsets
    start = 0
    while start < batch.num_rows:
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + max_chars, side="right"))
        stop = max(stop, start + 1)
        yield batch.slice(start, stop - start)
        start = stop


def check_columns(batch: pa.RecordBatch, first_row: int) -> None:
    names = batch.schema.names
    for name in REQUIRED:
        if name not in names:
            raise ValueError(f"batches need columns {REQUIRED}; column {name!r} is missing")
        kind = batch.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"column {name!r} must hold strings, got {kind}")
    for name in REQUIRED:
        column = batch.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            where = f"input row {first_row + row}"
            if name == "text":
                where += f" (id {batch.column('id')[row].as_py()!r})"
            raise ValueError(f"column {name!r} is null at {where}")


def string_column(batch: pa.RecordBatch, name: str) -> pa.Array:
    column = batch.column(name)
    return column if column.type == pa.string() else column.cast(pa.string())


def number_sources(sources: pa.Array | pa.ChunkedArray, codes: dict[str, int]) -> np.ndarray:
    """Small integer per source name, numbered in order of first appearance."""
    uniques = pc.unique(sources)
    for name in uniques.to_pylist():
        codes.setdefault(name, len(codes))
    lookup = np.array([codes[name] for name in uniques.to_pylist()], dtype=np.int32)
    position = pc.index_in(sources, value_set=uniques)
    if isinstance(position, pa.ChunkedArray):
        position = position.combine_chunks()
    return lookup[position.to_numpy(zero_copy_only=False)]


@contextmanager
def kernel_threads(count: int):
    previous = nb.get_num_threads()
    if count:
        nb.set_num_threads(min(count, nb.config.NUMBA_NUM_THREADS))
    chunk = nb.set_parallel_chunksize(4)  # documents vary in length; keep threads busy
    try:
        yield
    finally:
        nb.set_parallel_chunksize(chunk)
        nb.set_num_threads(previous)
