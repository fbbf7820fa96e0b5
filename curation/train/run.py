"""Train on a shard set: the entry point the CLI, Dagster and the demo share.

A run folder holds checkpoints/, metrics.jsonl, loss_curves.png (and
cluster_scores.json with clusters), and a manifest written at the end that
lists them all, so `curation info RUN --verify` checks a run too. The run holds
the folder's lock throughout. It resumes only a run with the same settings and
says what it found otherwise; starting over (resume=False, the CLI's
--overwrite) removes only the files a run of ours wrote there.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

from curation.device import Device, resolve
from curation.errors import CurationError
from curation.plots import loss_curves_png
from curation.selectors.rs2 import steps_run
from curation.storage.dataset import Dataset
from curation.storage.fs import resolve as location
from curation.storage.fs import write_bytes_atomic
from curation.storage.lock import locks_output
from curation.storage.manifest import MANIFEST_NAME, Manifest, write_manifest
from curation.storage.output import claim, clear_output, uncommit
from curation.storage.shards import ShardReader
from curation.train.checkpoint import latest_checkpoint, saved_state
from curation.train.clusters import ClusterScoring, cluster_validation, write_scores
from curation.train.data import ReplaySource, ShardSource, TopicSource, train_counts
from curation.train.loop import TrainConfig, Trainer, TrainResult

RUN_KIND = "training_run"
METRICS = "metrics.jsonl"
DROP_LAST = "without_replacement"  # the reference drops a round's last partial batch in this mode only


@locks_output("out")  # the whole run: a second one on this folder fails before any step
def train_on_shards(
    shards: str,
    config: TrainConfig,
    out: str | Path,
    device: str | Device = "auto",
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    clusters: ClusterScoring | None = None,
) -> TrainResult:
    """Train the bundled GPT on `shards`; the model's vocabulary and context
    come from the shard set. With `resume`, continue from the last checkpoint
    of a run with the same settings (a run with other settings is refused,
    naming what differs; a finished one is reported, not trained again).
    `clusters` (a select round's output) adds validation per k-means cluster
    and writes cluster_scores.json, which kMQ's refinement round reads."""
    config = with_rs2_steps(config, shards)
    source = ShardSource(
        shards, config.batch_size, config.steps, config.mixture, config.rs2, config.seed, config.holdout
    )
    model = dataclasses.replace(config.model, vocab_size=source.vocab_size, context=source.context)
    config = dataclasses.replace(config, model=model)
    folder = location(out)
    if resume:
        finished = _check_same_run(Path(out), config)
        if finished is not None:
            return finished
        uncommit(folder)  # the manifest goes while the run changes its files
    else:
        clear_output(folder)  # a fresh run leaves no older checkpoint to be resumed later
    data = source
    if config.replay:
        data = ReplaySource(source, config.replay)
    elif config.topic_batches:
        data = TopicSource(source, config.topic_batches)
    by_cluster = None
    if clusters is not None:
        by_cluster = cluster_validation(clusters, source.reader.tokenizer(), source.context)
    trainer = Trainer(config, data, out, source.validation(), resolve(device), by_cluster)
    if resume:
        trainer.resume()
    claim(folder.join(METRICS))  # the loop appends to it
    result = trainer.train(on_step)
    write_loss_plot(Path(out))
    if result.eval.get("by_cluster"):
        write_scores(Path(out), result.eval["by_cluster"])
    extra = {"result": {**dataclasses.asdict(result), "final_loss": _number(result.final_loss)}}
    write_manifest(folder, Manifest(RUN_KIND, [], {}, settings_record(config), extra))
    return result


def settings_record(config: TrainConfig) -> dict:
    """The settings as a checkpoint's state.json holds them (JSON types)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=lambda v: v.item()))


def _check_same_run(out: Path, config: TrainConfig) -> TrainResult | None:
    """Refuse a folder holding a run with other settings; the result of a
    finished run with these settings; None when there is a run to continue."""
    found = latest_checkpoint(out / "checkpoints")
    if found is None:
        return None
    state = saved_state(found)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("step"), int):
        raise CurationError(f"{found}: checkpoint is unreadable (state.json has no settings or step)")
    saved, wanted = state["config"], settings_record(config)
    if saved != wanted:
        changed = [key for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)]
        shown = ", ".join(_change(key, saved.get(key), wanted.get(key)) for key in changed[:3])
        raise CurationError(
            f"{out}: holds a training run saved at step {state.get('step')} with other settings "
            f"({shown}{', ...' if len(changed) > 3 else ''}); pass --overwrite (or --no-resume) to "
            "start over there, or pick another --out"
        )
    if state["step"] != config.steps or not (out / MANIFEST_NAME).exists():
        return None
    run = Dataset.open(location(out))
    run.verify(fresh=False)  # a finished run is reported only when all its files are whole
    result = run.manifest.extra["result"]
    result["final_loss"] = float("nan") if result["final_loss"] is None else result["final_loss"]
    return TrainResult(**{**result, "seconds": 0.0, "resumed_from": config.steps})


def _change(key: str, saved, wanted) -> str:
    if isinstance(saved, dict) or isinstance(wanted, dict):
        return f"{key} differs"
    return f"{key} {saved} then, {wanted} now"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


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
    records = [json.loads(line) for line in (out / METRICS).read_text().splitlines() if line]
    path = out / "loss_curves.png"
    write_bytes_atomic(location(path), loss_curves_png(records))
    return path
