"""Experiment 8: the combination a user would run (kMQ selection, then Cooldown + RS2 +
CoLM while training) vs plain proportional training, the same steps from the same
pretrained base.

    .venv/bin/python bench/experiments/combined.py [--corpus bundled|docs] [--steps 100] [--seeds 0,1,2]

Starts from the base model and the fine-tuning pool of experiment 6
(finetune.py: pretrained on a disjoint half of the deduplicated corpus, cached
per corpus). The combination, each piece through the library with its
defaults: the pool is embedded (the static encoder), clustered (k = sqrt(n)),
scored by the base model's perplexity on each document
(`ReferenceModel.score`, quality = -loss), and iterative kMQ
(`curation.train.refine.iterative_kmq`, N = 3 rounds with probe runs between
them) keeps --share of its documents; training on that selection draws sources
by the Cooldown schedule (T = 5, then T = 1 from half way), RS2 without
replacement inside each source (r = 10%, the rounds that give about --steps
steps, `with_rs2_steps`) and trains on CoLM coresets of b = 32 from each big
batch of B = 64. The baselines train on the whole pool with sources in
proportion to their tokens, the same number of steps: plain B = 64 (the same
rows drawn per step) and plain b = 32 (the same rows trained per step). Held-out
loss on the same 10% of documents, pooled and mean over sources.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common
import finetune
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from curation.device import CPU
from curation.embeddings import EmbeddingStore, cluster_embeddings, embed_dataset
from curation.selectors.diversity import KMQConfig
from curation.selectors.mixture import MixtureConfig
from curation.selectors.quality.perplexity import PerplexityConfig, ReferenceModel
from curation.selectors.rs2 import RS2Config
from curation.stages import default_k, make_encoder
from curation.storage import Dataset
from curation.storage.decisions import apply_decisions
from curation.train.colm import CoLMConfig
from curation.train.loop import TrainConfig
from curation.train.model import GPTConfig
from curation.train.refine import ProbeConfig, iterative_kmq
from curation.train.run import with_rs2_steps

BIG, SMALL = 64, 32
QUICK_BIG = 16
PER_SOURCE = 64
RS2_FRACTION = 0.1  # the paper's r
PLAIN_B, PLAIN_SMALL, COMBINED = (
    "plain proportional, same B",
    "plain proportional, b = B/2",
    "kMQ + Cooldown + RS2 + CoLM",
)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="about this many steps (RS2 rounds are whole)")
    p.add_argument("--share", type=float, default=0.5, help="share of the pool's documents kMQ keeps")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    common.run_experiment(p, "combined", "8. The combination: kMQ + Cooldown + RS2 + CoLM vs plain", run)


def run(args, work) -> dict:
    setup = finetune.prepare(args, work, per_source=8 if args.quick else PER_SOURCE)
    root = setup.pool.parent
    big = QUICK_BIG if args.quick else BIG
    started = time.perf_counter()
    pool = _pool_documents(setup, root)
    clusters, k, encoder = _clusters(pool, root, args.quick)
    quality = _quality(setup, pool, root)
    selection, kept = _selection(pool, clusters, quality, args.share, args.quick, root)
    prepared = time.perf_counter() - started
    chosen = work / "chosen"
    made = common.shards(pool, chosen, setup.tokenizer, [selection])
    rs2, steps = _rs2(chosen, big, 8 if args.quick else args.steps)
    common.log(
        f"kMQ kept {kept} documents; RS2 {rs2.rounds} rounds of r={rs2.fraction}: {steps} steps each arm"
    )
    eval_every = 4 if args.quick else max(10, steps // 10)
    arms = {
        PLAIN_B: (setup.pool, {"batch_size": big}),
        PLAIN_SMALL: (setup.pool, {"batch_size": big // 2}),
        COMBINED: (chosen, {"batch_size": big, "mixture": MixtureConfig(), "colm": CoLMConfig()}),
    }  # fmt: skip
    tasks = [
        (seed, arm, shard_set, changes, steps, eval_every, setup.base, setup.validation)
        for seed in common.seeds_of(args)
        for arm, (shard_set, changes) in arms.items()
    ]
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in arms}
    for arm, records in common.parallel_map(_train_one, tasks, 1 if args.quick else args.jobs):
        runs[arm].append(records)
    facts = {"clusters": k, "encoder": encoder, "kept": kept, "pool_documents": Dataset.open(pool).rows,
             "prepare_seconds": prepared, "rs2_rounds": rs2.rounds, "big": big,
             "chosen_tokens": made.tokens, "pool_tokens": setup.pool_tokens}  # fmt: skip
    return _report(args, setup, runs, steps, facts)


def _train_one(task):
    seed, arm, shard_set, changes, steps, eval_every, base, validation = task
    common.log(f"seed {seed}: {arm}")
    if arm == COMBINED:
        changes = {**changes, "rs2": RS2Config(fraction=RS2_FRACTION, seed=seed)}
    config = finetune.finetune_config(steps, seed, eval_every, **changes)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = finetune.starting_trainer(shard_set, config, Path(tmp), validation, base)
        start = {"step": 0, "eval": trainer.evaluate()}
        trainer.train()
        return arm, [start, *finetune.metrics(Path(tmp))]


# -- the selection -------------------------------------------------------------------


def _pool_documents(setup, root: Path) -> str:
    """The fine-tuning pool as its own documents dataset (what kMQ selects from)."""
    out = root / "pool-documents"
    if not (out / "_manifest.json").exists():
        apply_decisions(
            Dataset.open(setup.documents), pq.read_table(setup.pool_table), str(out), {"split": "pool"}
        )
    return str(out)


def _clusters(pool: str, root: Path, quick: bool) -> tuple[str, int, str]:
    """Embeddings (the static encoder; hashed n-grams in --quick) and k-means, k ~ sqrt(n)."""
    name = "hashed" if quick else "auto"
    out = root / f"clusters-{name}"
    if not (root / f"clusters-{name}.done").exists():
        embed_dataset(pool, str(root / f"embeddings-{name}"), make_encoder(name, CPU))
        rows = EmbeddingStore.open(root / f"embeddings-{name}").rows
        cluster_embeddings(str(root / f"embeddings-{name}"), str(out), default_k(rows))
        (root / f"clusters-{name}.done").write_text("")
    rows = EmbeddingStore.open(root / f"embeddings-{name}").rows
    return str(out), default_k(rows), "hashed n-grams" if quick else "static (distilled MiniLM)"


def _quality(setup, pool: str, root: Path) -> str:
    """Quality = minus the base model's mean token loss on each document's opening
    (reference-model perplexity; the base never saw the pool)."""
    out = root / "quality.parquet"
    if out.exists():
        return str(out)
    reference = ReferenceModel(PerplexityConfig(context=common.SEQ_LEN - 1))
    reference.tokenizer = Tokenizer.from_file(str(setup.tokenizer))
    model = finetune.starting_trainer(setup.pool, finetune.finetune_config(1, 0, 1), root / "quality-run",
                                      {}, setup.base).model  # fmt: skip
    reference.model = model.eval()
    table = Dataset.open(pool).read_table(["id", "text"])
    losses = reference.score(table.column("text").to_pylist())
    pq.write_table(pa.table({"id": table.column("id"), "quality": pa.array(-losses)}), out)
    return str(out)


def _selection(pool: str, clusters: str, quality: str, share: float, quick: bool, root: Path):
    """Iterative kMQ (N = 3) keeping `share` of the pool, once per corpus (seed 0)."""
    out = root / f"kmq-{share:g}"
    documents = Dataset.open(pool).rows
    budget = round(share * documents)
    if not (root / f"kmq-{share:g}.done").exists():
        steps = 4 if quick else 60
        probe = ProbeConfig(
            train=TrainConfig(
                steps=steps,
                eval_every=steps,
                holdout=1,
                batch_size=16,
                lr=2e-3,
                model=GPTConfig(layers=2, width=128, heads=4),
            ),
            vocab_size=common.VOCAB,
        )
        iterative_kmq(pool, clusters, str(out), KMQConfig(budget=budget, rounds=3, seed=0), probe, CPU,
                      quality=quality, log=common.log)  # fmt: skip
        (root / f"kmq-{share:g}.done").write_text("")
    kept = int(pq.read_table(out / "decisions.parquet").column("kept").to_numpy(zero_copy_only=False).sum())
    return out, kept


def _rs2(chosen, big: int, target: int) -> tuple[RS2Config, int]:
    """The fewest whole RS2 rounds that give at least `target` steps of `big`."""
    for rounds in range(1, 1000):
        rs2 = RS2Config(fraction=RS2_FRACTION, rounds=rounds)
        config = with_rs2_steps(TrainConfig(batch_size=big, holdout=0, rs2=rs2), str(chosen))
        if config.steps >= target:
            return rs2, config.steps
    return rs2, config.steps


# -- report ------------------------------------------------------------------------------


def _report(args, setup, runs, steps, facts) -> dict:
    numbers: dict = {"steps": steps, **facts, "base_loss": setup.base_loss,
                     "pool_shares": finetune.source_shares(setup.pool)}  # fmt: skip
    rows = []
    for arm in runs:
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        macro = [finetune.mean_over_sources(common.final_eval(r)) for r in runs[arm]]
        seconds = [float(np.median([x["step_seconds"] for x in r[1:]])) for r in runs[arm]]
        by_source = {s: [common.final_eval(r)["by_source"][s] for r in runs[arm]]
                     for s in common.final_eval(runs[arm][0])["by_source"]}  # fmt: skip
        numbers[arm] = {"final": finals, "macro": macro, "by_source": by_source, "s_per_step_in_run": seconds}
        rows.append([arm, common.mean_std(finals), common.mean_std(macro), f"{np.mean(seconds):.3f}"])
    table = common.markdown_table(
        ["arm", "final held-out loss", "mean over sources", "s / step (in run, 2 runs sharing 2 cores)"], rows
    )
    sources = list(numbers[PLAIN_B]["by_source"])
    source_table = common.markdown_table(
        ["source", "share of the pool (tokens)", *runs],
        [[s, f"{numbers['pool_shares'].get(s, 0):.1%}",
          *(common.mean_std(numbers[a]["by_source"][s]) for a in runs)] for s in sources],
    )  # fmt: skip
    comparisons = {
        "vs plain B": common.compare(numbers[COMBINED]["final"], numbers[PLAIN_B]["final"]),
        "vs plain b": common.compare(numbers[COMBINED]["final"], numbers[PLAIN_SMALL]["final"]),
        "vs plain B, mean over sources": common.compare(
            numbers[COMBINED]["macro"], numbers[PLAIN_B]["macro"]
        ),
    }
    numbers["comparisons"] = {
        k: {"gap": g, "two_se": n, "outcome": o} for k, (g, n, o) in comparisons.items()
    }
    gap, noise, outcome = comparisons["vs plain B"]
    summary = {
        "claim": "kMQ + Cooldown + RS2 + CoLM beats plain proportional training at equal steps (fine-tuning)",
        "outcome": outcome,
        "figures": (f"held-out {np.mean(numbers[COMBINED]['final']):.3f} vs plain B "
                    f"{np.mean(numbers[PLAIN_B]['final']):.3f} (gap {gap:+.3f} ± {noise:.3f}), plain b "
                    f"{np.mean(numbers[PLAIN_SMALL]['final']):.3f}"),
    }  # fmt: skip
    return {"tables": [table, source_table], "verdict": _verdict(numbers, comparisons), "numbers": numbers,
            "setup": _setup(args, setup, runs, steps, facts), "figure": _figure(runs, numbers, sources),
            "summary": summary}  # fmt: skip


def _setup(args, setup, runs, steps, facts) -> str:
    shares = ", ".join(f"{name} {share:.0%}" for name, share in finetune.source_shares(setup.pool).items())
    big = facts["big"]
    return (
        f"{len(runs[PLAIN_B])} seeds, paired (the same seed gives every arm the same initial sampler seed; "
        f"all start from one base model). Base: the experiments' 2-layer GPT pretrained for "
        f"{setup.pretrain['steps']} steps on a pool disjoint by document (experiment 6's, held-out loss "
        f"{setup.base_loss['overall']:.3f}). Fine-tuning pool: {facts['pool_documents']:,} documents, "
        f"{facts['pool_tokens']:,} tokens ({shares}). kMQ: {facts['encoder']} embeddings, "
        f"{facts['clusters']} clusters, quality = minus the base model's loss on each document, 3 rounds "
        f"with probe runs of 60 steps, keeping {facts['kept']:,} documents "
        f"({facts['chosen_tokens']:,} tokens); selection made once (seed 0) and shared by the seeds, "
        f"{facts['prepare_seconds']:.0f} s here (cached after the first run). Training: {steps} steps every "
        f"arm = {facts['rs2_rounds']} RS2 rounds of r = {RS2_FRACTION:.0%} over the selection (without "
        f"replacement, inside each source); Cooldown T = 5 then T = 1 from step {steps // 2}; CoLM "
        f"b = {big // 2} of B = {big}, unweighted; lr {finetune.FINETUNE_LR}, linear decay after a 3% "
        f"warmup, no weight "
        f"decay. Held-out loss on up to {PER_SOURCE} sequences per source of the held-out 10% of documents. "
        f"New in this round."
    )


def _verdict(numbers, comparisons) -> str:
    final = {arm: float(np.mean(numbers[arm]["final"])) for arm in (PLAIN_B, PLAIN_SMALL, COMBINED)}

    def said(key: str) -> str:
        gap, noise, outcome = comparisons[key]
        return f"{outcome} (gap {gap:+.3f} ± {noise:.3f})"

    return (
        f"At equal steps the combination ended at held-out loss {final[COMBINED]:.3f}, plain proportional "
        f"training at {final[PLAIN_B]:.3f} with the same rows drawn per step and {final[PLAIN_SMALL]:.3f} "
        f"with the same rows trained per step. 'The combination beats plain B' {said('vs plain B')}; against "
        f"plain b {said('vs plain b')}; on the mean over sources (where Cooldown's extra weight on small "
        f"sources should show) {said('vs plain B, mean over sources')}."
    )


def _figure(runs, numbers, sources):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, arm in enumerate(runs):
        common.curves(left, arm, [common.eval_curve(r) for r in runs[arm]], color=f"C{i}")
    left.set(xlabel="fine-tuning step", ylabel="held-out loss (nats/token)", title="from the pretrained base")
    left.legend(fontsize=8)
    width = 0.8 / len(runs)
    x = np.arange(len(sources))
    for i, arm in enumerate(runs):
        base = numbers[PLAIN_B]["by_source"]
        gaps = [np.mean(np.array(numbers[arm]["by_source"][s]) - np.array(base[s])) for s in sources]
        right.bar(x + i * width, gaps, width, label=arm, color=f"C{i}")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xticks(x + width, sources, rotation=30, fontsize=8)
    right.set(ylabel="final loss minus plain B's", title="per source (lower is better)")
    right.legend(fontsize=7)
    return fig


if __name__ == "__main__":
    main()
