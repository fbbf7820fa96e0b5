"""Stage calls with the engine chosen by configuration: what the CLI and Dagster call.

    from curation.engine.stages import engine_for
    from curation.stages import dedup_stage

    report = dedup_stage("data/documents", "data/dedup", DedupConfig(), engine="ray", ray_address="auto")

    with engine_for("ray", ray_address=None) as engine:   # several stages, one Ray
        engine.embed(documents, out, encoder)
        engine.cluster(embeddings, clusters_out, k, config, device)
        engine.tokenize(documents, shards_out, tokenizer, shard_config, keep)

`engine` is "local", "ray" or an `Engine` already open (left open).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .base import Engine, get_engine


@contextmanager
def engine_for(
    engine: str | Engine = "local", ray_address: str | None = None, **options: Any
) -> Iterator[Engine]:
    """An engine for a block of work: opened here (and closed after) when given by name."""
    if isinstance(engine, Engine):
        yield engine
        return
    opened = get_engine(engine, ray_address=ray_address, **options)
    try:
        yield opened
    finally:
        opened.close()
