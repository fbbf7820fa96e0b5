"""Trainer throughput: tokens/s, and the share of step time spent loading data and in CoLM selection.

Builds shards from the bundled corpus (after dedup), then trains the same small
GPT with and without CoLM for the same number of steps and prints per-phase time.

    .venv/bin/python bench/trainer.py --steps 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from curation import default_corpus
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.selectors.mixture import MixtureConfig
from curation.stages import dedup_stage
from curation.storage import ingest
from curation.storage.shards import ShardConfig
from curation.storage.tokenizer import TokenizerConfig
from curation.subset import SubsetConfig, materialize_subset
from curation.train.colm import CoLMConfig
from curation.train.config import train_config_from_dict
from curation.train.run import train_on_shards


def build_shards(work: Path, seq_len: int) -> str:
    ingest(default_corpus.build(work / "raw"), str(work / "documents"))
    dedup_stage(str(work / "documents"), str(work / "dedup"), DedupConfig())
    config = SubsetConfig(
        budget=Budget.parse("fraction=1"),
        mixture=MixtureConfig(schedule="constant", temperature=1.0),
        shards=ShardConfig(seq_len=seq_len),
        tokenizer=TokenizerConfig(vocab_size=4096),
    )
    materialize_subset(str(work / "dedup" / "documents"), str(work / "shards"), config)
    return str(work / "shards")


def run(shards: str, out: Path, steps: int, batch: int, colm: bool) -> dict:
    config = train_config_from_dict({
        "steps": steps, "batch_size": batch, "eval_every": 10**9, "checkpoint_every": 10**9,
        "model": {"layers": 4, "heads": 4, "width": 256},
    })  # fmt: skip
    if colm:
        config = type(config)(**{**config.__dict__, "colm": CoLMConfig()})
    train_on_shards(shards, config, out, device="cpu", resume=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][5:]  # skip warm-up
    step = sum(r["step_seconds"] for r in records)
    trained_rows = [r.get("kept", batch) for r in records]
    return {
        "steps_timed": len(records),
        "seconds_per_step": step / len(records),
        "data_share": sum(r["data_seconds"] for r in records) / step,
        "selection_share": sum(r.get("selection_seconds", 0.0) for r in records) / step,
        "rows_trained_per_step": statistics.mean(trained_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=257)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shards = build_shards(work, args.seq_len)
        context = args.seq_len - 1
        print(f"model: 4 layers, width 256, context {context}; batch {args.batch}; {args.steps} steps; CPU")
        print(f"{'run':<10}{'s/step':>9}{'tokens/s':>11}{'data %':>9}{'CoLM sel. %':>13}{'rows/step':>11}")
        for name, colm in (("plain", False), ("colm B/2", True)):
            r = run(shards, work / name, args.steps, args.batch, colm)
            tokens_per_s = r["rows_trained_per_step"] * context / r["seconds_per_step"]
            print(
                f"{name:<10}{r['seconds_per_step']:>9.3f}{tokens_per_s:>11,.0f}{100 * r['data_share']:>9.2f}"
                f"{100 * r['selection_share']:>13.1f}{r['rows_trained_per_step']:>11.1f}"
            )


if __name__ == "__main__":
    main()
