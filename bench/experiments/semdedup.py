"""Experiment 4: SemDeDup keeping 80% vs a random 80% (vs the whole pool), the
same number of steps (Abbas et al., arXiv 2303.09540).

    .venv/bin/python bench/experiments/semdedup.py [--epochs 1] [--pool-share 0.5] [--quick]

Corpus: the bundled one after exact + fuzzy dedup; 10% of documents (by a hash
of the id) are held out and scored with the same tokenizer; the training pool
is a hash-chosen share of the rest (--pool-share). The pool is embedded and
clustered once (k = sqrt(n)); SemDeDup (keep "hard", epsilon set for 80% kept)
runs inside each cluster. The random arm keeps the same number of documents,
drawn with the run's seed. Every arm trains --epochs passes over the pruned
pool's sequences, in steps of 16, with a cosine schedule over those steps.
"""

from __future__ import annotations

import common
import embedded
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import semdedup_stage

SEMDEDUP, RANDOM, FULL = "SemDeDup 80%", "random 80%", "full pool (100%)"
ARMS = (SEMDEDUP, RANDOM, FULL)
COLORS = {SEMDEDUP: "tab:blue", RANDOM: "tab:orange", FULL: "tab:gray"}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--keep", type=float, default=0.8, help="share of the pool both pruned arms keep")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the pruned pool: sets the steps")
    p.add_argument("--pool-share", type=float, default=0.5, help="share of the non-held-out documents used")
    embedded.add_flags(p)
    common.run_experiment(p, "semdedup", "4. SemDeDup at 80% vs random pruning to 80%", run)


def run(args, work) -> dict:
    corpus = embedded.prepare(args, work, pool_share=args.pool_share)
    stage = semdedup_stage(
        corpus.pool, corpus.embeddings, corpus.clusters, str(work / "semdedup"),
        SemDeDupConfig(target_fraction=args.keep),
    )  # fmt: skip
    decisions = work / "semdedup" / "decisions.parquet"
    kept = pq.read_table(decisions).column("kept").to_numpy(zero_copy_only=False)
    common.log(f"SemDeDup kept {kept.sum()} of {len(kept)} (epsilon {stage.details['epsilon']})")
    ids = corpus.pool_ids()
    sets = {
        SEMDEDUP: common.shards(corpus.pool, work / "shards-semdedup", corpus.tokenizer, [decisions]),
        FULL: common.shards(corpus.pool, work / "shards-full", corpus.tokenizer),
    }
    sequences = embedded.sequences_in(work / "shards-semdedup")
    steps = 20 if args.quick else round(args.epochs * sequences / 16)
    eval_every = 5 if args.quick else max(10, steps // 12)
    common.log(f"{sequences} SemDeDup sequences: {steps} steps per arm")

    runs: dict[str, list[list[dict]]] = {arm: [] for arm in ARMS}
    random_tokens = []
    for seed in common.seeds_of(args):
        mask = embedded.random_selection(len(ids), int(kept.sum()), seed)
        table = common.selection_table(ids, mask, work / f"random-{seed}.parquet")
        sets[RANDOM] = common.shards(corpus.pool, work / f"shards-random-{seed}", corpus.tokenizer, [table])
        random_tokens.append(sets[RANDOM].tokens)
        for arm in ARMS:
            name = arm.split()[0].lower()
            config = common.train_config(steps, seed, eval_every)
            common.log(f"seed {seed}: {arm}")
            folder = work / f"shards-{name}" if arm != RANDOM else work / f"shards-random-{seed}"
            runs[arm].append(common.train(folder, config, work / f"run-{seed}-{name}", corpus.validation))
    tokens = {SEMDEDUP: sets[SEMDEDUP].tokens, RANDOM: int(np.mean(random_tokens)), FULL: sets[FULL].tokens}
    dropped = _dropped_by_source(stage.details["by_source"])
    return _report(runs, steps, tokens, corpus, stage, dropped, args)


def _dropped_by_source(by_source: dict) -> dict[str, float]:
    """Share of each source's documents SemDeDup dropped."""
    return {s: round(1 - c["kept"] / c["docs"], 4) for s, c in by_source.items() if c["docs"]}


def _report(runs, steps, tokens, corpus, stage, dropped, args) -> dict:
    numbers: dict = {"steps": steps, "epsilon": stage.details["epsilon"], "dropped_by_source": dropped}
    rows = []
    for arm in ARMS:
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        best = [min(common.eval_curve(r)[1]) for r in runs[arm]]
        train_loss = [np.mean([x["loss"] for x in r[-20:]]) for r in runs[arm]]
        epochs = steps * 16 * 128 / tokens[arm]
        rows.append(
            [arm, common.mean_std(finals), common.mean_std(best), common.mean_std(train_loss),
             f"{tokens[arm]:,}", f"{epochs:.2f}"]
        )  # fmt: skip
        numbers[arm] = {"final": finals, "best": best, "train_last20": train_loss, "tokens": tokens[arm]}
    table = common.markdown_table(
        ["arm", "final val loss", "best val loss", "train loss (last 20 steps)", "tokens", "epochs"], rows
    )
    by_source = common.markdown_table(
        ["source", "share dropped by SemDeDup", *(f"final val loss: {a}" for a in ARMS)],
        [[s, f"{dropped.get(s, 0.0):.1%}", *(_mean_source(runs[a], s) for a in ARMS)]
         for s in sorted(corpus.validation)],
    )  # fmt: skip
    return {
        "tables": [table, by_source],
        "verdict": _verdict(numbers),
        "numbers": numbers,
        "setup": _setup(runs, steps, corpus, stage, args),
        "figure": _figure(runs, steps, corpus),
    }


def _mean_source(runs: list[list[dict]], source: str) -> str:
    return common.mean_std([common.final_eval(r)["by_source"][source] for r in runs])


def _verdict(numbers: dict) -> str:
    sem, rnd, full = (np.array(numbers[a]["final"]) for a in ARMS)
    gap, noise = rnd.mean() - sem.mean(), common.paired_noise(sem, rnd)
    if len(sem) < 2:
        direction = f"{'held' if gap > 0 else 'did not hold'} on one seed (no noise estimate)"
    elif gap > noise:
        direction = "held: SemDeDup beat random pruning by more than two standard errors"
    elif gap > 0:
        direction = "held only within noise (SemDeDup lower, by less than two standard errors)"
    else:
        direction = "did not hold: SemDeDup was no better than random pruning"
    vs_full = full.mean() - sem.mean()
    if abs(vs_full) <= common.paired_noise(sem, full):
        matched = f"was within noise of the full pool ({-vs_full:+.3f})"
    else:
        matched = f"{'beat' if vs_full > 0 else 'trailed'} the full pool by {abs(vs_full):.3f}"
    return (
        f"SemDeDup ended at {sem.mean():.3f} vs {rnd.mean():.3f} for a random 80% (paired "
        f"difference {gap:+.3f}, two standard errors {noise:.3f}) and {full.mean():.3f} for the whole "
        f"pool: the paper's direction (semantic pruning to 80% is at least as good as random pruning) "
        f"{direction}; "
        f"at equal steps SemDeDup {matched}." + common.spread_note(numbers, ARMS)
    )


def _setup(runs, steps, corpus, stage, args) -> str:
    seeds = len(runs[SEMDEDUP])
    return (
        f"{seeds} seeds; pool {stage.docs_in:,} documents ({args.pool_share:.0%} of the non-held-out "
        f"documents), {corpus.k} k-means clusters; SemDeDup kept {stage.kept:,} (epsilon "
        f"{stage.details['epsilon']:.4f}); equal steps: {steps} steps of 16 x 128 tokens for every arm "
        f"({args.epochs:g} passes over the SemDeDup pool; torch on {args.threads} thread(s)). "
        f"Encoder: {embedded.encoder_note(corpus)}"
    )


def _figure(runs, steps, corpus):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in ARMS:
        common.curves(left, arm, [common.eval_curve(r) for r in runs[arm]], color=COLORS[arm])
    left.set(xlabel="step", ylabel="held-out loss (nats/token)", title=f"{steps} steps each, batch 16 x 128")
    left.legend()
    sources = sorted(corpus.validation)
    x = np.arange(len(sources))
    base = np.array([np.mean([common.final_eval(r)["by_source"][s] for r in runs[RANDOM]]) for s in sources])
    for i, arm in enumerate((SEMDEDUP, FULL)):
        mean = np.array([np.mean([common.final_eval(r)["by_source"][s] for r in runs[arm]]) for s in sources])
        right.bar(x + (i - 0.5) * 0.38, mean - base, width=0.38, label=arm, color=COLORS[arm])
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xticks(x, sources, rotation=30)
    right.set(ylabel="final loss minus random 80% (lower = better)", title="by held-out source")
    right.legend()
    return fig


if __name__ == "__main__":
    main()
