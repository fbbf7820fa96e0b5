"""Shared pieces of the evidence experiments.

Every experiment: parse the same flags, build its corpus in a work folder,
split off a fixed held-out set, pack shards with one shared tokenizer, train
the bundled GPT with fixed seeds, and write `<name>-<corpus>.md` (table,
command, wall time), `.png` and `.json` (every number) to the results folder.
`--corpus` picks the bundled corpus (the Python standard library) or `docs`
(the system's installed documentation, docs_corpus.py), so that no result rests
on one corpus. `--cache` keeps the ingested and deduplicated corpus between
scripts (the test suite's smoke runs share one). `--quick` shrinks everything
so the suite can smoke-test the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import docs_corpus
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from curation import default_corpus
from curation.selectors.budget import Budget
from curation.selectors.dedup import DedupConfig
from curation.selectors.mixture import MixtureConfig
from curation.stages import dedup_stage
from curation.storage import Dataset, ingest, write_dataset
from curation.storage.ingest import DOCUMENTS_SCHEMA
from curation.storage.shards import ShardConfig, ShardReader
from curation.storage.tokenizer import TokenizerConfig, train_tokenizer
from curation.subset import SubsetConfig, SubsetReport, materialize_subset
from curation.train.data import ShardSource
from curation.train.loop import TrainConfig, Trainer
from curation.train.model import GPTConfig
from curation.train.schedules import Schedule

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SEQ_LEN = 129  # 128 tokens of context plus the shifted target
VOCAB = 1024  # small: the output layer dominates a tiny model's step time
MODEL = GPTConfig(layers=2, heads=4, width=128)
# For runs long enough that loss curves flatten: 4.5x MODEL's steps per second, and after
# 50 s of training (bundled corpus) 4.16 nats/token vs 4.45 for 2 layers of width 96.
SMALL_MODEL = GPTConfig(layers=1, heads=2, width=64)
PROPORTIONAL = MixtureConfig(schedule="constant", temperature=1.0)
CORPORA = ("bundled", "docs")
QUICK_SHARE = 0.08  # --quick keeps this share of the corpus's documents (by a hash of the id)
DOCS_MB = 24.0  # the docs corpus's budget (files are sized before reading; ~16 MB of text; quick: 2)


def parser(description: str, seeds: str = "0,1,2") -> argparse.ArgumentParser:
    """The flags every experiment takes; scripts add their own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (the test suite's)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where <name>.md/.png/.json go")
    p.add_argument("--seeds", default=seeds, help="comma-separated training seeds")
    p.add_argument(
        "--work", type=Path, default=None, help="keep intermediate data here (default: a temp dir)"
    )
    p.add_argument("--corpus", choices=CORPORA, default="bundled", help="bundled (Python) or docs (prose)")
    p.add_argument(
        "--cache", type=Path, default=None, help="reuse the ingested and deduplicated corpus kept here"
    )
    return p


def run_experiment(p: argparse.ArgumentParser, name: str, title: str, run: Callable) -> None:
    """Parse the flags, run `run(args, work)` in a work folder, write its report.
    One torch thread: the model is tiny, and two threads per process oversubscribe
    a shared 2-core box (steps got 2-8x slower under load)."""
    args = p.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    with work_folder(args) as work:
        report = run(args, work)
    write_report(args, name, title, started=started, **report)


def seeds_of(args: argparse.Namespace) -> list[int]:
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    return seeds[:1] if args.quick else seeds


@contextmanager
def work_folder(args: argparse.Namespace):
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        yield args.work
        return
    with tempfile.TemporaryDirectory(prefix="curation-exp-") as tmp:
        yield Path(tmp)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- corpus -----------------------------------------------------------------


def corpus_documents(args: argparse.Namespace, work: Path) -> str:
    """The chosen corpus, ingested (with --quick, a hash-chosen slice of it):
    kept under --cache when given, so several scripts build it once."""
    root = _corpus_root(args, work)
    out = root / "documents"
    if not (out / "manifest.json").exists():
        raw = root / "raw"
        if args.corpus == "docs":
            specs = docs_corpus.build(raw, 2.0 if args.quick else DOCS_MB)
        else:
            specs = default_corpus.build(raw)
        documents = ingest(specs, str(root / "all" if args.quick else out)).output
        if args.quick:
            _slice(documents, out, QUICK_SHARE)
    return str(out)


def deduplicated(documents: str, work: Path, config: DedupConfig | None = None) -> str:
    """Exact + fuzzy dedup (the SlimPajama recipe, global): the usual starting
    point. Kept beside `documents` (so under --cache when it is there) unless a
    config other than the default asks for its own run in `work`."""
    out = (work / "dedup") if config is not None else Path(documents).parent / "dedup"
    if not (out / "documents" / "manifest.json").exists():
        dedup_stage(documents, str(out), config or DedupConfig())
    return str(out / "documents")


def corpus_with_heldout(
    args: argparse.Namespace, work: Path, per_source: int
) -> tuple[SubsetReport, dict[str, torch.Tensor]]:
    """The deduplicated corpus packed as work/train, less 10% of its documents
    (by a hash of the id), which become the validation set: up to `per_source`
    sequences of each source, packed with the same tokenizer."""
    documents = deduplicated(corpus_documents(args, work), work)
    pool, held = split_table(documents, work / "split", lambda i: stable_fraction(i) < 0.1)
    tokenizer = shared_tokenizer(documents, work / "tokenizer.json", keep=pool)
    train_set = shards(documents, work / "train", tokenizer, [pool])
    shards(documents, work / "heldout", tokenizer, [held])
    return train_set, sequences_of(work / "heldout", per_source)


def _corpus_root(args: argparse.Namespace, work: Path) -> Path:
    name = f"{args.corpus}-quick" if args.quick else args.corpus
    root = (args.cache or work / "corpus") / name
    root.mkdir(parents=True, exist_ok=True)
    return root


def _slice(documents: str, out: Path, share: float) -> None:
    """The documents whose id hashes below `share`, as their own dataset."""
    data = Dataset.open(documents)

    def batches():
        for batch in data.iter_batches():
            keep = [
                stable_fraction("q" + i) < share for i in batch.column("id").to_pylist()
            ]  # not the split's hash
            yield batch.filter(pa.array(keep))

    write_dataset(out, batches(), DOCUMENTS_SCHEMA, "documents")


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key`: splits that do not depend on row order."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_table(documents: str, out: Path, held_out: Callable[[str], bool]) -> tuple[Path, Path]:
    """Two selection tables over `documents`: (training pool, held-out set)."""
    ids = Dataset.open(documents).read_table(["id"]).column("id")
    held = np.array([held_out(i) for i in ids.to_pylist()], dtype=bool)
    out.mkdir(parents=True, exist_ok=True)
    pool, test = out / "pool.parquet", out / "heldout.parquet"
    pq.write_table(pa.table({"id": ids, "kept": pa.array(~held)}), pool)
    pq.write_table(pa.table({"id": ids, "kept": pa.array(held)}), test)
    return pool, test


def selection_table(ids: Sequence[str], kept: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"id": pa.array(list(ids), pa.string()), "kept": pa.array(kept, pa.bool_())}), path
    )
    return path


def shared_tokenizer(documents: str, path: Path, vocab: int = VOCAB, keep: Path | None = None) -> Path:
    """One tokenizer for every arm, so their losses are comparable."""
    if not path.exists():
        mask = None
        if keep is not None:
            mask = pq.read_table(keep).column("kept").to_numpy(zero_copy_only=False)
        train_tokenizer(documents, str(path), TokenizerConfig(vocab_size=vocab), keep=mask)
    return path


def shards(
    documents: str,
    out: Path,
    tokenizer: Path,
    selections: Iterable[Path | str] = (),
    budget: Budget | None = None,
    mixture: MixtureConfig = PROPORTIONAL,
    seed: int = 0,
) -> SubsetReport:
    config = SubsetConfig(
        budget=budget or Budget(fraction=1.0),
        mixture=mixture,
        seed=seed,
        shards=ShardConfig(seq_len=SEQ_LEN, text_copy=False),
    )
    return materialize_subset(documents, str(out), config, [str(s) for s in selections], str(tokenizer))


def sequences_of(shard_set: Path, per_source: int | None = None) -> dict[str, torch.Tensor]:
    """Every packed sequence of a shard set (or the first `per_source`), by source:
    the held-out validation set every arm of an experiment is scored on."""
    reader = ShardReader(str(shard_set))
    out = {}
    for name in reader.sources:
        count = reader.num_sequences(name)
        count = count if per_source is None else min(count, per_source)
        if count:
            rows = reader.get_many(name, np.arange(count))
            out[name] = torch.from_numpy(np.array(rows, dtype=np.int64))
    return out


# -- training -----------------------------------------------------------------


def train_config(steps: int, seed: int, eval_every: int, **changes) -> TrainConfig:
    """The experiments' trainer: a 2-layer GPT, batch 16 x 128 tokens, cosine
    over the steps run, no checkpoints (runs are short and not resumed)."""
    base = TrainConfig(
        model=MODEL,
        steps=steps,
        batch_size=16,
        lr=2e-3,
        schedule=Schedule(kind="cosine", warmup=max(1, steps // 20)),
        eval_every=eval_every,
        checkpoint_every=10**9,
        seed=seed,
        mixture=PROPORTIONAL,
        holdout=0,
    )
    return dataclasses.replace(base, **changes)


def trainer(
    shard_set: Path,
    config: TrainConfig,
    out: Path,
    validation: dict[str, torch.Tensor] | None = None,
    device=None,
    by_cluster: dict | None = None,
) -> Trainer:
    """A Trainer on `shard_set`, scored on `validation` (else the shard set's own
    `config.holdout` rows per source) and on `by_cluster` (validation rows per
    cluster) when given; vocabulary and context come from the shards."""
    source = ShardSource(
        str(shard_set),
        config.batch_size,
        config.steps,
        config.mixture,
        config.rs2,
        config.seed,
        config.holdout,
    )
    model = dataclasses.replace(config.model, vocab_size=source.vocab_size, context=source.context)
    config = dataclasses.replace(config, model=model)
    held = validation if validation is not None else source.validation()
    return Trainer(config, source, out, held, device=device, cluster_validation=by_cluster)


def train(
    shard_set: Path,
    config: TrainConfig,
    out: Path,
    validation: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[Trainer, int], None] | None = None,
    by_cluster: dict | None = None,
) -> list[dict]:
    """Train to the end; `on_step(trainer, step)` may look at the model between
    steps. Returns the metrics, one record a step."""
    run = trainer(shard_set, config, out, validation, by_cluster=by_cluster)
    run.train(on_step=(lambda step, _loss: on_step(run, step)) if on_step else None)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def parallel_map(function: Callable, tasks: Sequence, jobs: int):
    """`function` over `tasks`, `jobs` at a time in their own processes (one: in this one).

    Runs are independent and each is fixed by its seed, so the numbers do not
    depend on `jobs`. One torch thread per run: a tiny model gains little from
    a second thread, and two per process oversubscribe a 2-core box (a step
    got ~10x slower when other jobs shared it)."""
    if jobs <= 1:
        torch.set_num_threads(1)
        yield from map(function, tasks)
        return
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        yield from pool.map(function, tasks)


def eval_curve(records: list[dict], key: str = "overall", source: str | None = None):
    """(steps, values) of one validation number over training."""
    steps, values = [], []
    for record in records:
        if record.get("eval"):
            steps.append(record["step"])
            values.append(record["eval"]["by_source"][source] if source else record["eval"][key])
    return steps, values


def final_eval(records: list[dict]) -> dict:
    return next(r["eval"] for r in reversed(records) if r.get("eval"))


# -- reporting ----------------------------------------------------------------


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def corpus_label(corpus: str) -> str:
    return {"bundled": "bundled corpus", "docs": "docs corpus"}[corpus]


def compare(better: Sequence[float], worse: Sequence[float]) -> tuple[float, float, str]:
    """(mean paired gap worse - better, two standard errors, outcome) for a claim
    that `better` has the lower loss: "held" only beyond two standard errors,
    "not seen" within them, "did not hold" when the other arm is ahead beyond
    them. Seeds pair the arms (same initialisation and sampler seed)."""
    a, b = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    gap, noise = float(np.mean(b - a)), paired_noise(a, b)
    if len(a) < 2:
        return gap, noise, "one seed"
    outcome = "held" if gap > noise else ("did not hold" if gap < -noise else "not seen")
    return gap, noise, outcome


def paired_noise(a: np.ndarray, b: np.ndarray) -> float:
    """Two standard errors of the mean per-seed difference (arms of one seed share
    the model's initialisation and the sampler's seed), 0 with one seed."""
    if len(a) < 2:
        return 0.0
    return float(2 * np.std(np.asarray(a) - np.asarray(b), ddof=1) / np.sqrt(len(a)))


def spread_note(numbers: dict, arms: Iterable[str]) -> str:
    """A sentence for verdicts when seeds disagree more than the arms do."""
    spread = float(np.mean([np.std(numbers[a]["final"], ddof=1) for a in arms]))
    if not spread > 0.05:  # also false (nan) with one seed
        return ""
    return (
        f" Seeds differ by ±{spread:.2f} within an arm: separating arms closer than that needs more "
        "seeds or longer runs."
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def curves(ax, label: str, runs: list[tuple[list[int], list[float]]], color=None) -> None:
    """Mean over seeds as a line, min..max as a band."""
    steps = runs[0][0]
    values = np.array([v for _, v in runs])
    line = ax.plot(steps, values.mean(axis=0), label=label, color=color)[0]
    if len(runs) > 1:
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.2, color=line.get_color())


def zoom(ax, skip: float = 0.25) -> None:
    """Leave the first `skip` of every curve out of the y-range: the first steps'
    very high losses would flatten the arms' differences."""
    lines = [line.get_ydata() for line in ax.get_lines() if len(line.get_ydata()) > 2]
    if lines:
        tail = np.concatenate([np.asarray(y)[int(len(y) * skip) :] for y in lines])
        low, high = float(tail.min()), float(tail.max())
        ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command_line(args: argparse.Namespace) -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(HERE.parent.parent)
    except ValueError:
        shown = script
    return " ".join([".venv/bin/python", str(shown), *map(shlex.quote, sys.argv[1:])])


def write_report(
    args: argparse.Namespace,
    name: str,
    title: str,
    tables: Sequence[str],
    verdict: str,
    numbers: dict,
    started: float,
    setup: str = "",
    figure=None,
    summary: dict | None = None,
) -> Path:
    """<name>-<corpus>.md, .png (from `figure`) and .json under args.out.
    `summary` (claim, outcome, figures) feeds the README's summary table."""
    args.out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - started
    name = f"{name}-{args.corpus}"
    parts = [f"## {title} ({corpus_label(args.corpus)})", ""]
    if setup:
        parts += [setup, ""]
    parts += [f"Command: `{command_line(args)}`  ", f"Wall time: {wall / 60:.1f} min (2 CPU cores)", ""]
    for table in tables:
        parts += [table, ""]
    if figure is not None:
        save_figure(figure, args.out / f"{name}.png")
        parts += [f"![{title}]({name}.png)", ""]
    parts += [f"**Verdict.** {verdict}", ""]
    md = args.out / f"{name}.md"
    md.write_text("\n".join(parts))
    body = {
        **numbers,
        "name": name,
        "corpus": args.corpus,
        "quick": bool(args.quick),
        "wall_seconds": round(wall, 1),
        "summary": summary or {},
    }
    (args.out / f"{name}.json").write_text(json.dumps(body, indent=2, default=_plain) + "\n")
    log(f"wrote {md} ({wall:.0f} s)")
    return md


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value)}")
