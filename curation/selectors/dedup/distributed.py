"""Dedup cut into per-part and per-partition steps, for engines that spread work.

    from curation.engine import get_engine
    from curation.selectors.dedup import DedupConfig, dedup_distributed

    with get_engine("ray", ray_address="auto") as engine:
        decisions = dedup_distributed("data/documents", DedupConfig(), engine).decisions

The local `run_dedup` streams batches through one process. `dedup_distributed`
gives the same decisions with the steps cut at other places, on the engine's
frames (`Engine.frame`): Ray Data on the Ray engine, lists of tables on the
local engine (which `dedup_documents` does not use: it streams `run_dedup`;
tests compare the two algorithms without Ray). The step functions only
compute, never read or write, and all call the dedup library's own kernels
(cleaning, fingerprints, MinHash, band hashes, union-find, `decide`).

1. `signature_part` (one task per row range of `rows_per_task` documents):
   read the rows, then `signature_rows`: per document its global row, id,
   source, whether it passes the short filter, its scope (0 in global mode,
   a 64-bit hash of the source name in local mode), its 128-bit
   fingerprint, and the LSH band hashes of the batch's first copy of each
   text (later copies get theirs through the exact-duplicate link).
2. Exact groups: `exact_keys` adds a partition column; all members of a
   (scope, fingerprint) group land in one partition, where `exact_edges`
   links every member to the group's first row: the local owner.
3. LSH: `band_rows` makes one row per (document, band) with a partition
   column; `bucket_edges` links every member of a (band, scope, band hash)
   bucket to the bucket's first row.
4. Connected components without gathering the edges: `large_star` and
   `small_star` (Kiveris et al., "Connected Components in MapReduce and
   Beyond", 2014) rewrite the edge list, grouped by node, so that it keeps
   the same components and converges to stars around each component's
   smallest node. `star_rounds` runs them on the engine until the edges fit
   in `local_edges` (or are stars); `star_components` runs them in memory.
5. `decide_rows`: the driver finishes the components with union-find and
   applies the keep rule with the library's `decide`.

Memory, on Ray (the local frames hold all of it in this process):
- A signature task: its rows' text (16,384 documents, cut into
  `batch_chars` pieces) plus about 4 bytes per text byte; its output, about
  110 bytes plus id and source per document, sits in Ray's object store
  (spilled to disk when full).
- Shuffles: 32 bytes per eligible document for exact groups; 25 bytes per
  band per signature for LSH; partitions of `rows_per_partition` (2M) rows,
  each sorted in one task's memory.
- Components: 16 bytes per edge per round, two shuffles per round.
- Driver: the decision table (ids, sources) plus 24 bytes per document, as
  with `run_dedup`, and the leftover edges, 16 bytes each: at most
  `local_edges` (20M), or one per duplicate once they are stars; this caps
  one run at roughly 10^8 documents.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.engine import Engine, Frame, LocalFrame
from curation.errors import CurationError
from curation.storage.dataset import Dataset
from curation.storage.ranges import FileSpan, RowRange, file_spans, plan_ranges, read_rows

from . import components as cc
from .clean import Cleaner
from .config import DedupConfig
from .minhash import HashFamily, band_hashes, signatures
from .pipeline import (
    Progress,
    check_columns,
    decision_table,
    kernel_threads,
    number_sources,
    split_batch,
    string_column,
)

PART = "_p"  # the partition column every shuffle groups by
ROWS_PER_TASK = 16_384  # documents read by one signature task
ROWS_PER_PARTITION = 2_000_000  # rows per shuffle partition: bounds a task's memory
LOCAL_EDGES = 20_000_000  # edges the driver finishes with union-find (16 bytes each)
EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
STAR_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64()), ("changed", pa.int64())])
DOC_COLUMNS = ["row", "id", "source", "eligible"]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BAND_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def band_columns(bands: int) -> list[str]:
    return [f"b{t}" for t in range(bands)]


def signature_schema(bands: int) -> pa.Schema:
    fields = [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("eligible", pa.bool_()),
        ("scope", pa.int64()),
        ("lo", pa.uint64()),
        ("hi", pa.uint64()),
        ("sig", pa.bool_()),
    ]
    return pa.schema(fields + [(name, pa.uint64()) for name in band_columns(bands)])


def source_scope(name: str) -> int:
    """A stable 64-bit code for a source name (Python's hash() differs per process)."""
    return int.from_bytes(
        hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


def scopes(sources: pa.Array, mode: str) -> np.ndarray:
    """The exact/LSH scope of each document: 0 in global mode, its source's code in local mode."""
    if mode != "local" or len(sources) == 0:
        return np.zeros(len(sources), dtype=np.int64)
    uniques = pc.unique(sources)
    codes = np.array([source_scope(s) for s in uniques.to_pylist()], dtype=np.int64)
    return codes[pc.index_in(sources, value_set=uniques).to_numpy(zero_copy_only=False)]


def signature_rows(batch: pa.RecordBatch | pa.Table, first_row: int, config: DedupConfig) -> pa.Table:
    """Step 1 for the documents at global rows first_row, first_row + 1, ...

    `batch` needs string columns id, source and text (checked as `run_dedup`
    checks them, errors name the global row); it is cut so that no piece
    cleans more than `config.batch_chars` bytes of text at once."""
    family = HashFamily.from_seed(config.seed, config.num_perm, config.ngram)
    schema = signature_schema(config.bands)
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
    if batch is None or batch.num_rows == 0:
        return schema.empty_table()
    check_columns(batch, first_row)
    clean = Cleaner(config.normalize)
    tables, row = [], first_row
    for piece in split_batch(batch, config.batch_chars):
        sources = string_column(piece, "source")
        cleaned = clean(piece.column("text"))
        eligible = cleaned.short_lengths(config.short_count) >= config.min_chars
        scope = scopes(sources, config.mode)
        lo, hi = cleaned.digest_lo.copy(), cleaned.digest_hi.copy()
        sig = _first_copies(scope, lo, hi, eligible) if config.fuzzy else np.zeros(piece.num_rows, bool)
        hashes = np.zeros((piece.num_rows, config.bands), dtype=np.uint64)
        chosen = np.flatnonzero(sig)
        if chosen.size:
            hashes[chosen] = band_hashes(
                signatures(cleaned, chosen, family), config.bands, config.rows, family
            )
        columns = [
            pa.array(np.arange(row, row + piece.num_rows, dtype=np.int64)),
            string_column(piece, "id"),
            sources,
            pa.array(eligible),
            pa.array(scope),
            pa.array(lo),
            pa.array(hi),
            pa.array(sig),
            *(pa.array(hashes[:, t]) for t in range(config.bands)),
        ]
        tables.append(pa.Table.from_arrays(columns, schema=schema))
        row += piece.num_rows
    return pa.concat_tables(tables)


def _first_copies(scope, lo, hi, eligible) -> np.ndarray:
    """Eligible documents that are the first in this batch with their (scope, fingerprint)."""
    out = np.zeros(scope.size, dtype=bool)
    rows = np.flatnonzero(eligible)
    if rows.size:
        keys = np.stack([scope[rows].view(np.uint64), lo[rows], hi[rows]], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        out[rows[first]] = True
    return out


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 (wrapping): spreads keys over partitions."""
    x = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def partition_of(key: np.ndarray, partitions: int) -> np.ndarray:
    return (mix(key) % np.uint64(max(partitions, 1))).astype(np.int32)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _edges(u: np.ndarray, v: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays([pa.array(u, pa.int64()), pa.array(v, pa.int64())], schema=EDGE_SCHEMA)


def _runs(*keys: np.ndarray) -> np.ndarray:
    """For rows sorted by `keys`: the index of the first row of each row's run of equal keys."""
    n = keys[0].size
    new = np.ones(n, dtype=bool)
    if n > 1:
        same = np.ones(n - 1, dtype=bool)
        for key in keys:
            same &= key[1:] == key[:-1]
        new[1:] = ~same
    starts = np.flatnonzero(new)
    return starts[np.cumsum(new) - 1]


# ---------------------------------------------------------------- exact groups


def exact_keys(table: pa.Table, partitions: int) -> pa.Table:
    """(row, scope, lo, hi, partition) of the documents that pass the short filter."""
    table = table.filter(table.column("eligible")).select(["row", "scope", "lo", "hi"])
    with np.errstate(over="ignore"):
        key = _column(table, "lo") ^ (_column(table, "scope").view(np.uint64) * _GOLDEN)
    return table.append_column(PART, pa.array(partition_of(key, partitions)))


def exact_edges(table: pa.Table) -> pa.Table:
    """Within one partition: (first row, row) for every later member of an exact group."""
    row, scope, lo, hi = (_column(table, name) for name in ("row", "scope", "lo", "hi"))
    return _edges(*_star_links(row, scope, lo, hi))


# ---------------------------------------------------------------- LSH buckets


def band_rows(table: pa.Table, bands: int, partitions: int) -> pa.Table:
    """One row (band, scope, hash, node, partition) per band of each signature owner."""
    table = table.filter(table.column("sig"))
    n = table.num_rows
    node = np.tile(_column(table, "row"), bands)
    scope = np.tile(_column(table, "scope"), bands)
    band = np.repeat(np.arange(bands, dtype=np.int8), n)
    hashes = (
        np.concatenate([_column(table, name) for name in band_columns(bands)])
        if n
        else np.zeros(0, np.uint64)
    )
    with np.errstate(over="ignore"):
        key = hashes ^ (scope.view(np.uint64) * _GOLDEN) ^ (band.astype(np.uint64) * _BAND_MIX)
    return pa.table(
        {
            "band": pa.array(band),
            "scope": pa.array(scope),
            "hash": pa.array(hashes, pa.uint64()),
            "node": pa.array(node, pa.int64()),
            PART: pa.array(partition_of(key, partitions)),
        }
    )


def bucket_edges(table: pa.Table) -> pa.Table:
    """Within one partition: (first node, node) for every later member of a
    (band, scope, band hash) bucket. A star per bucket has the components of
    all the bucket's pairs, as in the local LSH step."""
    band, scope, hashes, node = (_column(table, name) for name in ("band", "scope", "hash", "node"))
    return unique_edges(*_star_links(node, band, scope, hashes))


def _star_links(node: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first node, node) for every later member of each group of rows with equal
    `keys`; the first is the group's smallest node."""
    order = np.lexsort((node, *reversed(keys)))
    node = node[order]
    first = node[_runs(*(key[order] for key in keys))]
    later = first != node
    return first[later], node[later]


def unique_edges(u: np.ndarray, v: np.ndarray) -> pa.Table:
    """Distinct edges, each as (smaller node, larger node), without self-loops."""
    a, b = np.minimum(u, v), np.maximum(u, v)
    keep = a != b
    a, b = a[keep], b[keep]
    if a.size:
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)
        a, b = pairs[:, 0], pairs[:, 1]
    return _edges(a, b)


# ---------------------------------------------------------------- components


def for_large_star(table: pa.Table, partitions: int) -> pa.Table:
    """Each edge in both directions, (a, b), partitioned by a."""
    u, v = _column(table, "u"), _column(table, "v")
    a, b = np.concatenate([u, v]), np.concatenate([v, u])
    return pa.table({"a": a, "b": b, PART: pa.array(partition_of(a, partitions))})


def for_small_star(table: pa.Table, partitions: int) -> pa.Table:
    """Each edge once, (a = larger node, b = smaller node), partitioned by a."""
    u, v = _column(table, "u"), _column(table, "v")
    a, b = np.maximum(u, v), np.minimum(u, v)
    return pa.table({"a": a, "b": b, PART: pa.array(partition_of(a, partitions))})


def large_star(table: pa.Table) -> pa.Table:
    """For each node a with neighbours N(a), m = min(N(a) + {a}): every larger
    neighbour b gets the edge (m, b). `changed` counts rewired edges."""
    a, b, changed = _star(table, larger=True)
    return _star_table(a, b, changed)


def small_star(table: pa.Table) -> pa.Table:
    """For each node a with smaller neighbours S, m = min(S): a and every other
    member of S get the edge (m, x). `changed` counts rewired edges."""
    a, b, changed = _star(table, larger=False)
    return _star_table(a, b, changed)


def _star(table: pa.Table, larger: bool):
    a, b = _column(table, "a"), _column(table, "b")
    if a.size == 0:
        return a, b, 0
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    group = np.cumsum(np.r_[True, a[1:] != a[:-1]]) - 1
    smallest = np.minimum(np.minimum.reduceat(b, starts), a[starts])[group]
    if larger:
        keep = b > a
        u, v = smallest[keep], b[keep]
        changed = int(np.count_nonzero(smallest[keep] != a[keep]))
        return u, v, changed
    # small star: b < a for every row; m = the group's smallest b
    others = b != smallest
    u = np.concatenate([smallest[starts], smallest[others]])
    v = np.concatenate([a[starts], b[others]])
    return u, v, int(np.count_nonzero(others))


def _star_table(u, v, changed: int) -> pa.Table:
    edges = unique_edges(u, v)
    flags = np.zeros(edges.num_rows, dtype=np.int64)
    if flags.size:
        flags[0] = changed  # the partition's count rides on one row; the driver sums the column
    return edges.append_column("changed", pa.array(flags))


def star_rounds(edges: Frame, parts_for, local_edges: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """Large-star and small-star rounds on the engine until the edge list (u, v)
    is a set of stars or holds at most `local_edges` edges; returns the edges,
    gathered on the driver, and the rounds run. They have the components the
    input has. `parts_for(rows)` is the partition count for `rows` rows."""
    rounds = 0
    while True:
        count = edges.count()
        if count <= local_edges or count == 0:
            break
        parts = parts_for(2 * count)
        large = edges.map(for_large_star, partitions=parts).group(large_star, PART).materialize()
        small = large.map(for_small_star, partitions=parts).group(small_star, PART).materialize()
        rounds += 1
        changed = large.sum("changed") + small.sum("changed")
        edges = small.select(["u", "v"]).materialize()
        if changed == 0:
            break
    return pairs(edges.collect()), rounds


def star_components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """`star_rounds` in memory until the edges are stars around each component's
    smallest node; returns (centres, leaves, rounds)."""
    edges = LocalFrame([unique_edges(np.asarray(u, np.int64), np.asarray(v, np.int64))])
    (centres, leaves), rounds = star_rounds(edges, partial(partitions, 1))
    return centres, leaves, rounds


def partitions(slots: int, rows: int, rows_per_partition: int = ROWS_PER_PARTITION) -> int:
    """Shuffle partitions for `rows` rows: at least two per slot, at most
    `rows_per_partition` rows each."""
    return max(2 * slots, math.ceil(rows / rows_per_partition))


def no_edges() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def pairs(table: pa.Table | None) -> tuple[np.ndarray, np.ndarray]:
    """The (u, v) columns of an edge table as arrays."""
    if table is None or table.num_rows == 0:
        return no_edges()
    return table.column("u").to_numpy(), table.column("v").to_numpy()


# ---------------------------------------------------------------- decisions


def decide_rows(
    docs: pa.Table,
    owner_edges: tuple[np.ndarray, np.ndarray],
    edges: tuple[np.ndarray, np.ndarray],
    config: DedupConfig,
) -> pa.Table:
    """The decision table, as `run_dedup` builds it, from the documents in input
    order (row, id, source, eligible), the exact-group links (owner, member)
    and the remaining fuzzy edges."""
    n = docs.num_rows
    rows = _column(docs, "row") if n else np.zeros(0, np.int64)
    if not np.array_equal(rows, np.arange(n, dtype=np.int64)):
        raise RuntimeError("engine bug: the documents' rows are not 0..n-1 in order")
    eligible = docs.column("eligible").to_numpy(zero_copy_only=False).astype(bool)
    owners = np.where(eligible, np.arange(n, dtype=np.int64), np.int64(-1))
    owner, member = owner_edges
    owners[member] = owner
    parent = np.arange(n, dtype=np.int64)
    if config.exact or config.fuzzy:
        cc.link_owners(parent, owners)
    if config.fuzzy:
        cc.union_pairs(parent, np.ascontiguousarray(edges[0]), np.ascontiguousarray(edges[1]))
    ids = docs.column("id").combine_chunks() if n else pa.array([], pa.string())
    sources = docs.column("source").combine_chunks() if n else pa.array([], pa.string())
    codes: dict[str, int] = {}
    number_sources(sources, codes)
    return decision_table([ids], [sources], codes, parent, owners, config)


def check_scopes(sources: pa.Array | pa.ChunkedArray) -> None:
    """Local mode tells sources apart by a 64-bit code; make sure no two names share one."""
    names = pc.unique(sources).to_pylist()
    codes = {}
    for name in names:
        code = source_scope(name)
        if code in codes:
            raise RuntimeError(f"sources {codes[code]!r} and {name!r} share a 64-bit code; rename one")
        codes[code] = name


# ---------------------------------------------------------------- the run


@dataclass
class DistributedRun:
    """What `dedup_distributed` decided (the `run_dedup` table), the star rounds
    it ran on the engine, and seconds per step."""

    decisions: pa.Table
    rounds: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def dedup_distributed(
    documents,
    config: DedupConfig,
    engine: Engine,
    progress: Progress | None = None,
    *,
    rows_per_task: int = ROWS_PER_TASK,
    rows_per_partition: int = ROWS_PER_PARTITION,
    local_edges: int = LOCAL_EDGES,
) -> DistributedRun:
    """`run_dedup`'s decisions for a documents dataset, with the steps on the
    engine's frames (see the module docstring). Tuning, not results:
    `rows_per_task` documents per signature task, `rows_per_partition` rows per
    shuffle partition, and when the fuzzy edges number at most `local_edges`
    the driver finishes the components (0: star rounds until they converge)."""
    if config.verify:
        raise CurationError("dedup with verify=True runs on the local engine only; use engine 'local'")
    for name, value in (("rows_per_task", rows_per_task), ("rows_per_partition", rows_per_partition)):
        if value < 1:
            raise CurationError(f"{name} must be >= 1, got {value}")
    data = Dataset.open(documents)
    spans = file_spans(data)
    per_task = max(1024, min(rows_per_task, math.ceil(data.rows / (4 * engine.slots)) or 1))
    ranges = plan_ranges(spans, per_task)
    if not ranges:
        empty = pa.table({c: [] for c in DOC_COLUMNS})
        return DistributedRun(decide_rows(empty, no_edges(), no_edges(), config))
    seconds: dict[str, float] = {}
    clock = Clock(seconds)
    report = progress or (lambda step, done: None)
    sigs = engine.frame(partial(signature_part, spans=spans, config=config), ranges).materialize()
    docs = sigs.select(DOC_COLUMNS).collect().sort_by("row")
    if config.mode == "local":
        check_scopes(docs.column("source"))
    clock("signatures")
    report("signatures", data.rows)
    eligible = int(pc.sum(docs.column("eligible")).as_py() or 0)
    parts_for = partial(partitions, engine.slots, rows_per_partition=rows_per_partition)
    owners, edges, rounds = _links(sigs, eligible, config, parts_for, max(0, local_edges), clock)
    report("lsh", data.rows)
    decisions = decide_rows(docs, owners, edges, config)
    clock("decide")
    report("decide", data.rows)
    return DistributedRun(decisions, rounds, seconds)


def _links(sigs: Frame, eligible: int, config: DedupConfig, parts_for, local_edges: int, clock):
    """Exact-group links (owner, member), the fuzzy edges left for the driver, and
    the star rounds run; `parts_for(rows)` is the partition count for `rows` rows."""
    owners = edges = no_edges()
    rounds = 0
    if eligible and (config.exact or config.fuzzy):
        keyed = sigs.map(exact_keys, partitions=parts_for(eligible))
        owners = pairs(keyed.group(exact_edges, PART).collect())
        clock("exact")
    if eligible and config.fuzzy:
        rows = sigs.map(band_rows, bands=config.bands, partitions=parts_for(eligible * config.bands))
        buckets = rows.group(bucket_edges, PART).materialize()
        clock("lsh")
        edges, rounds = star_rounds(buckets, parts_for, local_edges)
        clock("components")
    return owners, edges, rounds


def signature_part(rows: RowRange, spans: list[FileSpan], config: DedupConfig) -> pa.Table:
    """Step 1 for one row range, read where the task runs."""
    with kernel_threads(config.num_threads):  # 0: the threads the engine gave the task
        table = read_rows(spans, rows.start, rows.stop, ["id", "source", "text"])
        return signature_rows(table, rows.start, config)


class Clock:
    """Seconds per step, into `into[step]`."""

    def __init__(self, into: dict[str, float]):
        self.into, self.last = into, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.into[step] = round(now - self.last, 3)
        self.last = now


__all__ = [
    "EDGE_SCHEMA",
    "PART",
    "DistributedRun",
    "band_rows",
    "bucket_edges",
    "decide_rows",
    "dedup_distributed",
    "exact_edges",
    "exact_keys",
    "for_large_star",
    "for_small_star",
    "large_star",
    "signature_part",
    "signature_rows",
    "small_star",
    "star_components",
    "star_rounds",
]
