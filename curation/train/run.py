"""Train on a shard set: the entry point the CLI, Dagster and the demo share."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from curation.device import Device, resolve
from curation.errors import CurationError
from curation.plots import loss_curves_png
from curation.selectors.rs2 import steps_run
from curation.storage.shards import ShardReader
from curation.train.clusters import cluster_validation, write_scores
from curation.train.data import ReplaySource, ShardSource, TopicSource, train_counts
from curation.train.loop import TrainConfig, Trainer, TrainResult

DROP_LAST = "without_replacement"  # the reference drops a round's last partial batch in this mode only


def train_on_shards(
    shards: str,
    config: TrainConfig,
    out: str | Path,
    device: str | Device = "auto",
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    clusters: tuple[str, str] | None = None,
) -> TrainResult:
    """Train the bundled GPT on `shards`; the model's vocabulary and context
    come from the shard set. With `resume`, continue from the last checkpoint.
    `clusters` = (documents, clusters) adds validation per k-means cluster and
    writes cluster_scores.json, which kMQ's refinement round reads."""
    config = with_rs2_steps(config, shards)
    source = ShardSource(
        shards, config.batch_size, config.steps, config.mixture, config.rs2, config.seed, config.holdout
    )
    model = dataclasses.replace(config.model, vocab_size=source.vocab_size, context=source.context)
    config = dataclasses.replace(config, model=model)
    data = source
    if config.replay:
        data = ReplaySource(source, config.replay)
    elif config.topic_batches:
        data = TopicSource(source, config.topic_batches)
    by_cluster = None
    if clusters is not None:
        by_cluster = cluster_validation(*clusters, source.reader.tokenizer(), source.context)
    trainer = Trainer(config, data, out, source.validation(), resolve(device), by_cluster)
    if resume:
        trainer.resume()
    else:  # a fresh run must not leave an older run's checkpoints to be resumed later
        shutil.rmtree(Path(out) / "checkpoints", ignore_errors=True)
    result = trainer.train(on_step)
    write_loss_plot(Path(out))
    if result.eval.get("by_cluster"):
        write_scores(Path(out), result.eval["by_cluster"])
    return result


def with_rs2_steps(config: TrainConfig, shards: str) -> TrainConfig:
    """With `[rs2] rounds`: the steps those rounds take on this shard set's
    training rows (RS2 runs inside each source; a round is every source's
    r*N_i), so that the schedule spans them."""
    if config.rs2 is None or config.rs2.rounds is None:
        return config
    counts = train_counts(ShardReader(shards), config.holdout)
    rs2 = config.rs2
    drop_last = rs2.mode == DROP_LAST
    steps = steps_run(list(counts.values()), rs2.fraction, rs2.rounds, config.batch_size, drop_last)
    if steps < 1:
        raise CurationError(
            f"{shards}: an RS2 round ({rs2.fraction} of {sum(counts.values())} rows) is smaller than one "
            f"batch of {config.batch_size}"
        )
    return dataclasses.replace(config, steps=steps)


def write_loss_plot(out: Path) -> Path:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    path = out / "loss_curves.png"
    path.write_bytes(loss_curves_png(records))
    return path
