"""k-means: curation's FAISS wrapper vs raw faiss.Kmeans vs scikit-learn KMeans.

Same embeddings for all (hashed encoder over stdlib function sources and
docstrings), same k, same number of Lloyd iterations, one initialisation
each. Inertia is computed the same way for all: the sum of squared Euclidean
distances from each point to its assigned centroid.

    .venv/bin/python bench/kmeans.py [--docs 20000] [--k 100] [--niter 25]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from sklearn.cluster import KMeans
from stdlib_docs import stdlib_texts

from curation.embeddings import HashedEncoder, KMeansConfig, assign, fit_kmeans
from curation.embeddings.cluster import inertia


def corpus(n: int) -> list[str]:
    docs, sources = stdlib_texts()
    texts = docs + sources
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} stdlib texts here, asked for {n}")
    return texts[:n]


def ours(x, k, niter, spherical, max_points=256):
    config = KMeansConfig(niter=niter, spherical=spherical, seed=0, max_points_per_centroid=max_points)
    start = time.perf_counter()
    rows = np.sort(np.random.default_rng(0).choice(len(x), min(len(x), k * max_points), replace=False))
    model = fit_kmeans(x[rows], k, config)
    labels, _ = assign(x, model)
    return time.perf_counter() - start, model.centroids, labels


def raw_faiss(x, k, niter, spherical):
    start = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=0, spherical=spherical, max_points_per_centroid=10**9)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return time.perf_counter() - start, km.centroids, labels[:, 0]


def sklearn(x, k, niter):
    start = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=1, max_iter=niter, tol=0.0, random_state=0).fit(x)
    return time.perf_counter() - start, km.cluster_centers_.astype(np.float32), km.labels_


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--niter", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    texts = corpus(args.docs)
    start = time.perf_counter()
    x = HashedEncoder(dim=256).encode(texts)
    print(f"{len(texts)} texts, hashed encoder (256 d): {time.perf_counter() - start:.1f} s")
    threads = faiss.omp_get_max_threads()
    print(f"k={args.k}, {args.niter} iterations, one initialisation, faiss threads {threads}\n")

    runs = {
        "curation fit_kmeans + assign (Euclidean)": lambda: ours(x, args.k, args.niter, False),
        "raw faiss.Kmeans (Euclidean)": lambda: raw_faiss(x, args.k, args.niter, False),
        "curation, spherical (SemDeDup default)": lambda: ours(x, args.k, args.niter, True),
        "raw faiss.Kmeans, spherical": lambda: raw_faiss(x, args.k, args.niter, True),
        "curation, trained on a 64-per-centroid sample": lambda: ours(x, args.k, args.niter, False, 64),
        "scikit-learn KMeans (k-means++, lloyd)": lambda: sklearn(x, args.k, args.niter),
    }
    results = {}
    for _ in range(args.repeats):  # alternate, so background load hits every method
        for name, run in runs.items():
            seconds, centroids, labels = run()
            results.setdefault(name, []).append((seconds, inertia(x, centroids, labels.astype(np.int64))))
    print("| method | median seconds | inertia |")
    print("|---|---|---|")
    for name, rows in results.items():
        print(f"| {name} | {np.median([r[0] for r in rows]):.2f} | {rows[-1][1]:.1f} |")
    base = np.median([r[0] for r in results["raw faiss.Kmeans (Euclidean)"]])
    mine = np.median([r[0] for r in results["curation fit_kmeans + assign (Euclidean)"]])
    skl = np.median([r[0] for r in results["scikit-learn KMeans (k-means++, lloyd)"]])
    print(f"\ntime ours / raw faiss: {mine / base:.2f}; scikit-learn / ours: {skl / mine:.1f}x")
    same = (
        results["curation fit_kmeans + assign (Euclidean)"][-1][1]
        / results["raw faiss.Kmeans (Euclidean)"][-1][1]
    )
    print(f"inertia ours / raw faiss: {same:.4f}")


if __name__ == "__main__":
    main()
