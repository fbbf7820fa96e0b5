"""Union-find over document indices, and the keep/drop decision per document."""

from __future__ import annotations

import numba as nb
import numpy as np

# Codes used by `decide`; the pipeline turns them into strings.
STAGES = ("short", "exact", "fuzzy")
REASONS = ("too_short", "exact_duplicate", "near_duplicate", "unique", "representative")
SHORT, EXACT, FUZZY = 0, 1, 2
TOO_SHORT, EXACT_DUP, NEAR_DUP, UNIQUE, REPRESENTATIVE = 0, 1, 2, 3, 4


@nb.njit(cache=True, inline="always")
def find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@nb.njit(cache=True)
def union(parent, a, b):
    """Join the sets of a and b; the smaller index becomes the root (deterministic)."""
    ra, rb = find(parent, a), find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@nb.njit(cache=True)
def union_pairs(parent, u, v):
    for i in range(u.size):
        union(parent, u[i], v[i])


@nb.njit(cache=True)
def link_owners(parent, owners):
    """Put every exact duplicate in its owner's set."""
    for i in range(owners.size):
        if owners[i] >= 0 and owners[i] != i:
            union(parent, owners[i], i)


@nb.njit(cache=True)
def decide(parent, owners, key, exact, fuzzy, last_stage):
    """Stage, reason, kept flag and cluster (index of the kept member, -1 if
    alone) for every document. In each group the member with the smallest
    `key` is kept; exact duplicates name the group's kept member too."""
    n = owners.size
    roots = np.empty(n, dtype=np.int64)
    best = np.full(n, -1, dtype=np.int64)  # per root: kept member
    size = np.zeros(n, dtype=np.int64)
    exact_best = np.full(n, -1, dtype=np.int64)  # per owner: smallest key
    for i in range(n):
        if owners[i] < 0:
            roots[i] = -1
            continue
        r = find(parent, i)
        roots[i] = r
        size[r] += 1
        if best[r] < 0 or key[i] < key[best[r]]:
            best[r] = i
        o = owners[i]
        if exact_best[o] < 0 or key[i] < key[exact_best[o]]:
            exact_best[o] = i
    stage = np.empty(n, dtype=np.int8)
    reason = np.empty(n, dtype=np.int8)
    kept = np.zeros(n, dtype=np.bool_)
    cluster = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if owners[i] < 0:
            stage[i], reason[i] = SHORT, TOO_SHORT
            continue
        r = roots[i]
        winner = best[r]
        if size[r] > 1:
            cluster[i] = winner
        if i == winner:
            kept[i] = True
            stage[i] = last_stage
            reason[i] = REPRESENTATIVE if size[r] > 1 else UNIQUE
        elif exact and exact_best[owners[i]] != i:
            stage[i], reason[i] = EXACT, EXACT_DUP
        else:
            stage[i], reason[i] = FUZZY, NEAR_DUP
    return stage, reason, kept, cluster
