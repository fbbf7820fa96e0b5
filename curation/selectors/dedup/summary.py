"""A small, JSON-friendly summary of a decision table (for the CLI and Dagster)."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa


def summarize_decisions(decisions: pa.Table, top: int = 10) -> dict[str, Any]:
    """Counts in and out, by stage and reason, per source, and the largest clusters.

    `clusters` counts every member of a group, the kept one included.
    """
    frame = pl.from_arrow(decisions.select(["source", "stage", "kept", "reason", "cluster"]))
    assert isinstance(frame, pl.DataFrame)
    kept = int(frame["kept"].sum()) if frame.height else 0
    by_reason = frame.group_by("stage", "reason").len().sort("stage", "reason").iter_rows(named=True)
    by_source = (
        frame.group_by("source")
        .agg(pl.len().alias("docs"), pl.col("kept").sum().alias("kept"))
        .sort("source")
        .iter_rows(named=True)
    )
    clusters = (
        frame.filter(pl.col("cluster").is_not_null())
        .group_by("cluster")
        .len()
        .sort(["len", "cluster"], descending=[True, False])
    )
    return {
        "docs_in": frame.height,
        "kept": kept,
        "dropped": frame.height - kept,
        "by_stage_reason": {f"{r['stage']}/{r['reason']}": r["len"] for r in by_reason},
        "by_source": {r["source"]: {"docs": r["docs"], "kept": int(r["kept"])} for r in by_source},
        "clusters": clusters.height,
        "largest_clusters": [
            {"cluster": r["cluster"], "size": r["len"]} for r in clusters.head(top).iter_rows(named=True)
        ],
    }
