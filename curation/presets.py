"""Named settings for a small end-to-end run, shared by `curation demo` and the
Dagster pipeline's defaults.

The library's own defaults (an 8192-token vocabulary, 1024-token sequences, a
4-layer model for 200 steps) suit real corpora on a GPU; on the bundled corpus
and a laptop CPU they would take half an hour. `DEMO` trains a 4096-token
vocabulary, packs 129-token sequences and trains a 2-layer model for 150 steps:
about a minute. Raise them (Launchpad, or the CLI's options) for real data.
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.selectors.budget import Budget
from curation.selectors.mixture import MixtureConfig
from curation.selectors.rs2 import RS2Config
from curation.storage.shards import ShardConfig
from curation.storage.tokenizer import TokenizerConfig
from curation.train.loop import TrainConfig
from curation.train.model import GPTConfig


@dataclass(frozen=True)
class Preset:
    """select_fraction: kMQ keeps this share of what semantic dedup kept;
    shards_budget: how much of the selection the shards take; tokenizer,
    shards, train: the settings of those steps."""

    select_fraction: float
    shards_budget: Budget
    tokenizer: TokenizerConfig
    shards: ShardConfig
    train: TrainConfig


DEMO = Preset(
    select_fraction=0.6,
    shards_budget=Budget(fraction=1.0),  # all of it
    tokenizer=TokenizerConfig(vocab_size=4096),
    shards=ShardConfig(seq_len=129),
    train=TrainConfig(
        model=GPTConfig(layers=2, heads=4, width=128),
        steps=150,
        batch_size=16,
        lr=2e-3,
        eval_every=25,
        checkpoint_every=50,
        mixture=MixtureConfig(),  # Cooldown: T=5, then T=1 at half
        rs2=RS2Config(fraction=0.5),
        holdout=8,
    ),
)
