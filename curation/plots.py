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
