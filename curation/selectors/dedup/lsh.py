"""LSH bucketing as a sort: documents sharing (scope, band, band hash) are candidates.

Band hashes are spilled to Parquet, one file per batch, one column per band.
Bands are then read a few at a time; for each band the (scope-mixed) hashes
are sorted and every run of equal keys is one bucket. Without verification a
bucket only needs a star of edges (member -> first member) to give the same
connected components as all its pairs, so members are unioned directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .components import union
from .hashing import fmix64

_SCOPE_SALT = np.uint64(0xD6E8FEB86659FD93)


class BandSpill:
    """Band hashes of signature owners, written batch by batch to a work folder."""

    def __init__(self, folder: Path, bands: int):
        self.folder = folder
        self.bands = bands
        self.files: list[Path] = []
        self.rows = 0
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, nodes: np.ndarray, scope: np.ndarray, hashes: np.ndarray) -> None:
        if nodes.size == 0:
            return
        columns = {"node": pa.array(nodes), "scope": pa.array(scope)}
        for t in range(self.bands):
            columns[f"b{t}"] = pa.array(hashes[:, t])
        path = self.folder / f"bands-{len(self.files):06d}.parquet"
        pq.write_table(pa.table(columns), path, compression="none")
        self.files.append(path)
        self.rows += nodes.size

    def read(self, bands: list[int]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Node ids, scopes, and the hash column of each requested band."""
        names = ["node", "scope"] + [f"b{t}" for t in bands]
        tables = [pq.read_table(path, columns=names) for path in self.files]
        if not tables:
            empty = np.zeros(0, dtype=np.uint64)
            return np.zeros(0, np.int64), np.zeros(0, np.int32), [empty for _ in bands]
        table = pa.concat_tables(tables)
        column = lambda name: table.column(name).to_numpy()  # noqa: E731
        return column("node"), column("scope"), [column(f"b{t}") for t in bands]


def band_passes(
    spill: BandSpill,
    bands_per_pass: int,
    on_band: Callable[[np.ndarray, np.ndarray, np.ndarray], None],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Call on_band(keys, nodes, scopes) per band, sorted by key so buckets are runs."""
    for first in range(0, spill.bands, bands_per_pass):
        chosen = list(range(first, min(first + bands_per_pass, spill.bands)))
        nodes, scope, columns = spill.read(chosen)
        for hashes in columns:
            keys = _mix_scope(hashes, scope)
            order = np.argsort(keys, kind="stable")
            on_band(keys[order], nodes[order], scope[order])
            del keys, order
        del nodes, scope, columns
        if progress is not None:
            progress(chosen[-1] + 1)


@nb.njit(cache=True, parallel=True)
def _mix_scope_kernel(hashes, scope, out):
    # Different scopes land in different buckets; a rare clash is split later.
    for i in nb.prange(hashes.size):
        out[i] = fmix64(hashes[i] ^ (np.uint64(scope[i]) * _SCOPE_SALT))


def _mix_scope(hashes: np.ndarray, scope: np.ndarray) -> np.ndarray:
    out = np.empty(hashes.size, dtype=np.uint64)
    _mix_scope_kernel(np.ascontiguousarray(hashes), np.ascontiguousarray(scope), out)
    return out


@nb.njit(cache=True)
def union_buckets(keys, nodes, scope, parent):
    """Union every bucket member with the bucket's first member of the same scope."""
    n = keys.size
    i = 0
    while i < n:
        j = i + 1
        while j < n and keys[j] == keys[i]:
            j += 1
        for k in range(i + 1, j):
            anchor = i
            while scope[anchor] != scope[k]:  # only after a 64-bit clash
                anchor += 1
            if anchor != k:
                union(parent, nodes[anchor], nodes[k])
        i = j


@nb.njit(cache=True)
def _bucket_pairs(keys, nodes, scope, max_bucket, out_u, out_v, write):
    count = 0
    n = keys.size
    i = 0
    while i < n:
        j = i + 1
        while j < n and keys[j] == keys[i]:
            j += 1
        for k in range(i + 1, j):
            stop = k if j - i <= max_bucket else i + 1
            for m in range(i, stop):
                if scope[m] != scope[k]:
                    continue
                if write:
                    u, v = nodes[m], nodes[k]
                    out_u[count] = min(u, v)
                    out_v[count] = max(u, v)
                count += 1
        i = j
    return count


def bucket_pairs(keys: np.ndarray, nodes: np.ndarray, scope: np.ndarray, max_bucket: int):
    """Candidate pairs (u < v) of one band: all pairs in buckets of up to
    `max_bucket` members, member-to-first-member pairs in larger ones."""
    empty = np.zeros(0, dtype=np.int64)
    total = _bucket_pairs(keys, nodes, scope, max_bucket, empty, empty, False)
    u = np.empty(total, dtype=np.int64)
    v = np.empty(total, dtype=np.int64)
    _bucket_pairs(keys, nodes, scope, max_bucket, u, v, True)
    return u, v


def unique_pairs(us: list[np.ndarray], vs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (u, v) pairs, sorted."""
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.concatenate(us)
    v = np.concatenate(vs)
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return u[keep], v[keep]
