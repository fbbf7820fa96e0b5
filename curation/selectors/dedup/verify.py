"""Optional check of candidate pairs: exact Jaccard similarity of shingle sets.

Shingles are compared by their 64-bit fingerprints (see minhash.py), so two
different shingles count as equal only on a 64-bit collision. The sorted
fingerprint sets of the documents that appear in a pair are appended to one
file in the work folder and memory-mapped, so memory stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import numba as nb
import numpy as np

from .clean import CleanBatch
from .minhash import HashFamily, fingerprint_sets


class FingerprintStore:
    """Shingle fingerprint sets of chosen documents, on disk."""

    def __init__(self, path: Path):
        self.path = path
        self._nodes: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()

    def add(self, batch: CleanBatch, docs: np.ndarray, nodes: np.ndarray, family: HashFamily):
        """Store the sets of batch documents `docs`, known globally as `nodes`."""
        if docs.size == 0:
            return
        flat, offsets = fingerprint_sets(batch, docs, family)
        self._file.write(flat.tobytes())
        self._nodes.append(np.asarray(nodes, dtype=np.int64))
        self._counts.append(np.diff(offsets))

    def close(self) -> None:
        self._file.close()

    def jaccard(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Exact Jaccard similarity of each pair (u[i], v[i]) of stored nodes."""
        self.close()
        if not self._nodes:
            return np.zeros(u.size, dtype=np.float64)
        nodes = np.concatenate(self._nodes)
        counts = np.concatenate(self._counts)
        starts = np.zeros(counts.size, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        order = np.argsort(nodes, kind="stable")
        nodes, counts, starts = nodes[order], counts[order], starts[order]
        data = np.memmap(self.path, dtype=np.uint64, mode="r")
        out = np.empty(u.size, dtype=np.float64)
        iu, iv = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
        _pair_jaccard(data, starts, counts, iu, iv, out)
        return out


@nb.njit(cache=True, parallel=True)
def _pair_jaccard(data, starts, counts, iu, iv, out):
    for t in nb.prange(iu.size):
        a0, an = starts[iu[t]], counts[iu[t]]
        b0, bn = starts[iv[t]], counts[iv[t]]
        i = j = common = 0
        while i < an and j < bn:
            x, y = data[a0 + i], data[b0 + j]
            if x == y:
                common += 1
                i += 1
                j += 1
            elif x < y:
                i += 1
            else:
                j += 1
        out[t] = common / (an + bn - common)
