"""Small plots for Dagster metadata and reports: PNG bytes, or Markdown that embeds them."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display anywhere we run
import matplotlib.pyplot as plt


def bar_png(counts: dict[str, int], title: str, xlabel: str = "", log: bool = False) -> bytes:
    """A horizontal bar chart of named counts, largest first."""
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(len(items), 3) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    if log:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def s_curve_png(bands: int, rows: int, threshold: float | None = None) -> bytes:
    """Probability that a pair of Jaccard similarity s shares an LSH bucket: 1-(1-s^r)^b."""
    import numpy as np

    s = np.linspace(0, 1, 201)
    p = 1 - (1 - s**rows) ** bands
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(s, p, color="#4c72b0")
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"target {threshold}")
        ax.legend(loc="upper left")
    ax.set_xlabel("Jaccard similarity")
    ax.set_ylabel("P(candidate pair)")
    ax.set_title(f"LSH S-curve: {bands} bands x {rows} rows")
    return _png(fig)


def histogram_png(values: list[int], title: str, xlabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(values or [0], bins=min(50, max(len(set(values)), 1)), color="#4c72b0", log=True)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def loss_curves_png(records: list[dict], title: str = "training") -> bytes:
    """Training loss per step and validation loss, overall and per source, from metrics.jsonl."""
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in records]
    train_ax.plot(steps, [r["loss"] for r in records], color="#999999", linewidth=0.8)
    train_ax.set_title(f"{title}: train loss")
    train_ax.set_xlabel("step")
    evals = [r for r in records if r.get("eval")]
    if evals:
        eval_steps = [r["step"] for r in evals]
        eval_ax.plot(eval_steps, [r["eval"]["overall"] for r in evals], color="black", label="overall")
        for source in sorted(evals[-1]["eval"]["by_source"]):
            values = [r["eval"]["by_source"].get(source) for r in evals]
            eval_ax.plot(eval_steps, values, label=source, linewidth=1)
        eval_ax.legend(fontsize=7)
    eval_ax.set_title("validation loss")
    eval_ax.set_xlabel("step")
    return _png(fig)


def weights_over_steps_png(
    steps: list[int], weights: dict[str, list[float]], title: str = "per-source sampling weight"
) -> bytes:
    """One line per source: its weight at each training step (e.g. a Cooldown's switch)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, values in sorted(weights.items(), key=lambda kv: -max(kv[1], default=0)):
        ax.step(steps, values, where="post", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("weight")
    ax.set_ylim(0, max((max(v, default=0) for v in weights.values()), default=1) * 1.05 or 1)
    ax.set_title(title)
    if weights:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return _png(fig)


def cluster_sizes_png(sizes: list[int], title: str = "Cluster sizes") -> bytes:
    """Histogram of k-means cluster sizes (how many clusters hold n documents)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = list(sizes) or [0]
    ax.hist(values, bins=min(50, max(len(set(values)), 1)), color="#4c72b0")
    ax.set_title(f"{title} (k={len(sizes)})")
    ax.set_xlabel("documents in cluster")
    ax.set_ylabel("clusters")
    return _png(fig)


def cluster_map_png(vectors, clusters, sample: int = 3000, seed: int = 0, title: str = "Clusters") -> bytes:
    """A seeded sample of points on their first two principal components, coloured by cluster."""
    import numpy as np

    vectors, clusters = np.asarray(vectors, dtype=np.float32), np.asarray(clusters)
    rows = np.random.default_rng(seed).permutation(len(vectors))[:sample]
    points = vectors[rows] - vectors[rows].mean(axis=0) if len(rows) else np.zeros((0, 2))
    if len(rows) > 1:
        _, _, axes = np.linalg.svd(points, full_matrices=False)
        points = points @ axes[:2].T
    fig, ax = plt.subplots(figsize=(5, 4))
    if len(rows):
        ax.scatter(points[:, 0], points[:, -1], c=clusters[rows] % 20, cmap="tab20", s=4, linewidths=0)
    ax.set_title(f"{title}: {len(rows)} points, first two principal components")
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def score_histograms_png(scores, sources, kept, title: str, xlabel: str) -> bytes:
    """One histogram per source: every document's score (grey) and the kept
    ones (blue), so the kept band shows against the whole distribution."""
    import numpy as np

    scores, sources, kept = np.asarray(scores, dtype=float), np.asarray(sources), np.asarray(kept, dtype=bool)
    names = sorted(set(sources.tolist()))
    columns = min(3, max(len(names), 1))
    rows = -(-max(len(names), 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.4 * rows), squeeze=False)
    finite = scores[np.isfinite(scores)]
    edges = np.histogram_bin_edges(finite if finite.size else [0.0, 1.0], bins=40)
    for ax, name in zip(axes.flat, names, strict=False):
        mine = (sources == name) & np.isfinite(scores)
        ax.hist(scores[mine], bins=edges, color="#bbbbbb", label="all")
        ax.hist(scores[mine & kept], bins=edges, color="#4c72b0", label="kept")
        ax.set_title(f"{name} ({int(mine.sum()):,})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{title}: {xlabel}", fontsize=10)
    return _png(fig)
