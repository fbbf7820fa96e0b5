"""Iterative kMQ end to end: every round of `select_stage`, with a probe run
between rounds that scores each cluster on the documents held out for it.

What a user does by hand with `select`, `subset`, `train --score-clusters` and
`select --refine-from`, in one call (the Dagster asset and the experiments use
it). Round r's selection lives under a scratch folder; the last round writes
`out` with every round's documents kept.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from curation.device import Device
from curation.engine import Engine
from curation.selectors.budget import Budget
from curation.selectors.diversity import KMQConfig
from curation.selectors.mixture import MixtureConfig
from curation.stages import StageReport, select_stage
from curation.storage.shards import ShardConfig
from curation.storage.tokenizer import TokenizerConfig
from curation.subset import SubsetConfig, materialize_subset
from curation.train.clusters import SCORES_FILE, ClusterScoring, read_scores
from curation.train.loop import TrainConfig
from curation.train.model import GPTConfig
from curation.train.run import train_on_shards


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """The short training run that scores clusters between rounds.

    Fields: train (its settings; a small GPT by default); seq_len and
    vocab_size of the probe's shards and tokenizer; score_on ("held_out" or
    "selected", see `ClusterScoring`).
    """

    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=100, eval_every=100, holdout=1, model=GPTConfig(layers=2, width=128, heads=4)
        )
    )
    seq_len: int = 128
    vocab_size: int = 2048
    score_on: str = "held_out"


def iterative_kmq(
    documents: str,
    clusters: str,
    out: str,
    config: KMQConfig,
    probe: ProbeConfig = ProbeConfig(),
    device: str | Device = "auto",
    quality: str | None = None,
    log: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> StageReport:
    """All `config.rounds` rounds of kMQ (selection and probe shards on `engine`);
    returns the last round's report."""
    with tempfile.TemporaryDirectory(prefix="kmq-rounds-") as scratch:
        work = Path(scratch)
        previous, scores = None, None
        for r in range(1, config.rounds + 1):
            target = out if r == config.rounds else str(work / f"round-{r}")
            report = select_stage(
                documents, clusters, target, config, previous, scores, quality, engine=engine
            )
            if log:
                log(f"kMQ round {r} of {config.rounds}: {report.kept} selected")
            if r < config.rounds:
                scores = _probe_scores(target, report, probe, device, work / f"probe-{r}", engine)
                previous = target
    return report


def _probe_scores(
    selection: str, report: StageReport, probe: ProbeConfig, device: str | Device, work: Path, engine
):
    subset = SubsetConfig(
        budget=Budget(fraction=1.0),
        mixture=MixtureConfig(schedule="constant", temperature=1.0),
        shards=ShardConfig(seq_len=probe.seq_len),
        tokenizer=TokenizerConfig(vocab_size=probe.vocab_size),
    )
    materialize_subset(f"{selection}/documents", str(work / "shards"), subset, engine=engine)
    scoring = ClusterScoring(selection, on=probe.score_on)
    train_on_shards(str(work / "shards"), probe.train, work / "run", device, False, clusters=scoring)
    return read_scores(work / "run" / SCORES_FILE, report.details["clusters"])
