"""A pretrained base model and a disjoint fine-tuning pool (experiments 6 and 8).

CoLM is a fine-tuning method: the paper selects coresets while fine-tuning a
pretrained model, where per-example gradients agree enough for a few rows to
stand for the rest (from a random start they are nearly orthogonal). The
deduplicated corpus is split by a hash of the document id into a held-out
10%, a pretraining pool (half of the rest) and a fine-tuning pool (the other
half); one tokenizer serves all three. The base model trains on the
pretraining pool once per corpus and is kept under --cache (else --work).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import common
import numpy as np
import torch

from curation.storage import Dataset
from curation.storage.shards import ShardReader
from curation.train.schedules import Schedule

PRETRAIN_STEPS = 400
PRETRAIN_BATCH = 16
PRETRAIN_LR = 2e-3
# Fine-tuning, as the reference's scripts: linear decay after a 3% warmup, no weight decay
# (colm/scripts/train/base_training_args.sh); the rate a quarter of pretraining's.
FINETUNE_LR = 5e-4
VERSION = 1  # bump when the base's recipe changes, so a cached one is not reused


@dataclass
class Setup:
    pool: Path  # the fine-tuning pool's shards
    documents: str  # the deduplicated corpus
    pool_table: Path  # selection table of the fine-tuning pool's documents
    tokenizer: Path
    base: Path  # the pretrained model's state dict
    validation: dict[str, torch.Tensor]  # held-out sequences per source
    base_loss: dict  # the base model's held-out loss
    pool_tokens: int
    pretrain: dict  # how the base was trained


def prepare(args: argparse.Namespace, work: Path, per_source: int) -> Setup:
    """The split, the shards and the pretrained base (built once, then reused)."""
    root = (args.cache or work / "corpus") / (f"{args.corpus}-quick" if args.quick else args.corpus)
    root = root / f"finetune-v{VERSION}"
    documents = common.deduplicated(common.corpus_documents(args, work), work)
    ids = Dataset.open(documents).read_table(["id"]).column("id").to_pylist()
    held = np.array([common.stable_fraction(i) < 0.1 for i in ids])
    early = np.array([common.stable_fraction("pretrain" + i) < 0.5 for i in ids]) & ~held
    later = ~held & ~early
    tables = {name: common.selection_table(ids, kept, root / "split" / f"{name}.parquet")
              for name, kept in (("heldout", held), ("pretrain", early), ("pool", later))}  # fmt: skip
    tokenizer = common.shared_tokenizer(documents, root / "tokenizer.json", keep=tables["pool"])
    for name, table in tables.items():
        if not (root / name / "manifest.json").exists():
            common.shards(documents, root / name, tokenizer, [table])
    validation = common.sequences_of(root / "heldout", per_source)
    steps = 12 if args.quick else PRETRAIN_STEPS
    base = root / "base.pt"
    if not base.exists():
        _pretrain(root, steps, base)
    pretrain_tokens = sum(_source_tokens(root / "pretrain").values())
    pretrain = {
        "steps": steps,
        "batch_size": PRETRAIN_BATCH,
        "lr": PRETRAIN_LR,
        "pool_tokens": pretrain_tokens,
    }
    start = starting_trainer(root / "pool", finetune_config(1, 0, 1, batch_size=8), work / "base-eval",
                             validation, base)  # fmt: skip
    pool_tokens = sum(_source_tokens(root / "pool").values())
    return Setup(root / "pool", documents, tables["pool"], tokenizer, base, validation,
                 start.evaluate(), pool_tokens, pretrain)  # fmt: skip


def _source_tokens(shard_set: Path) -> dict[str, int]:
    index = ShardReader(str(shard_set)).index["sources"]
    return {name: int(entry["tokens"]) for name, entry in index.items()}


def source_shares(shard_set: Path) -> dict[str, float]:
    tokens = _source_tokens(shard_set)
    total = sum(tokens.values())
    return {name: n / total for name, n in sorted(tokens.items(), key=lambda kv: -kv[1])}


def _pretrain(root: Path, steps: int, out: Path) -> None:
    common.log(f"pretraining the base model: {steps} steps of {PRETRAIN_BATCH} on the pretraining pool")
    config = common.train_config(steps, 1234, 10**9, batch_size=PRETRAIN_BATCH, lr=PRETRAIN_LR)
    run = common.trainer(root / "pretrain", config, root / "pretrain-run", {})
    run.train()
    torch.save(run.model.state_dict(), out)


def finetune_config(steps: int, seed: int, eval_every: int, **changes):
    """The fine-tuning runs: the experiments' GPT, linear decay to zero after a 3% warmup, no weight decay."""
    schedule = Schedule(kind="wsd", warmup=max(1, round(0.03 * steps)), decay_fraction=1.0, decay="linear")
    return common.train_config(steps, seed, eval_every, lr=FINETUNE_LR, weight_decay=0.0, schedule=schedule,
                               **changes)  # fmt: skip


def mean_over_sources(evaluation: dict) -> float:
    """The mean of an evaluation's per-source losses: each source counts once, however small."""
    return float(np.mean(list(evaluation["by_source"].values())))


def metrics(out: Path) -> list[dict]:
    """A finished run's metrics, one record a step."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def starting_trainer(shard_set: Path, config, out: Path, validation, base: Path):
    """A Trainer whose model starts from the base's weights (its optimizer starts fresh)."""
    run = common.trainer(shard_set, config, out, validation)
    run.model.load_state_dict(torch.load(base, weights_only=True))
    return run
