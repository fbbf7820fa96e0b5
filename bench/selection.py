"""Diversity at equal budget: kMQ vs uniform random selection.

Embeddings: hashed encoder over stdlib docstrings and function sources.
Coverage is the mean cosine distance from every document to its nearest
selected document (lower is better); clusters hit counts the k-means
clusters (the ones kMQ used) with at least one selected document.

    .venv/bin/python bench/selection.py [--docs 20000] [--k 100] [--budget 1000] [--seeds 5]
"""

from __future__ import annotations

import argparse

import faiss
import numpy as np
from stdlib_docs import stdlib_texts

from curation.embeddings import HashedEncoder, KMeansConfig, assign, fit_kmeans
from curation.selectors.diversity import KMQ, KMQConfig


def coverage(x: np.ndarray, chosen: np.ndarray) -> float:
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x[chosen])
    sims, _ = index.search(x, 1)
    return float(np.mean(1.0 - sims[:, 0]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--budget", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    docs, sources = stdlib_texts()
    texts = (docs + sources)[: args.docs]
    x = HashedEncoder(dim=256).encode(texts)
    labels, _ = assign(x, fit_kmeans(x, args.k, KMeansConfig(seed=0)))
    sizes = np.bincount(labels, minlength=args.k)
    spread = f"{sizes.min()}/{int(np.median(sizes))}/{sizes.max()}"
    print(f"{len(texts)} texts, k={args.k} (sizes min/median/max {spread}), {args.seeds} seeds")
    for budget in args.budget:
        compare(x, labels, args.k, budget, args.seeds)


def compare(x, labels, k, budget, seeds) -> None:
    fine, _ = assign(x, fit_kmeans(x, budget, KMeansConfig(seed=0, niter=25)))
    print(f"\nbudget {budget} documents\n")
    methods = {
        "uniform random": lambda s: np.random.default_rng(s).choice(len(x), budget, replace=False),
        f"kMQ proportional (k={k})": lambda s: KMQ(KMQConfig(budget, seed=s)).fit(labels).select(),
        f"kMQ even (k={k})": lambda s: KMQ(KMQConfig(budget, split="even", seed=s)).fit(labels).select(),
        f"kMQ proportional (k={budget})": lambda s: KMQ(KMQConfig(budget, seed=s)).fit(fine).select(),
    }
    print(f"| method | mean distance to nearest selected | clusters hit (of {k}) |")
    print("|---|---|---|")
    for name, pick in methods.items():
        dist, hit = [], []
        for seed in range(seeds):
            chosen = pick(seed)
            assert len(chosen) == budget
            dist.append(coverage(x, chosen))
            hit.append(len(np.unique(labels[chosen])))
        print(f"| {name} | {np.mean(dist):.4f} ± {np.std(dist):.4f} | {np.mean(hit):.1f} |")


if __name__ == "__main__":
    main()
