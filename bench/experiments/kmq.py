"""Experiment 5: kMQ and iterative kMQ vs uniform random at the same budget and
the same number of steps (Diversify and Conquer, arXiv 2409.11378).

    .venv/bin/python bench/experiments/kmq.py [--budget-share 0.1] [--epochs 3] [--rounds 3] [--quick]

Corpus: the bundled one after exact + fuzzy dedup; 10% of documents (by a hash
of the id) are held out; the rest is the pool, embedded and clustered once
(k = sqrt(n)). Each arm selects the same number of pool documents b:
uniform random; kMQ (b split across clusters in proportion to size, uniform
inside a cluster: no quality score); iterative kMQ (b/N by kMQ, a probe run
on it scores each cluster by the loss left on the documents held out of the
pool for scoring (`scoring_split`), the next b/N is drawn with softmax(score)
cluster weights, N rounds, N = 3 as in the paper). Every arm then trains
from scratch for --epochs passes over kMQ's selection, in steps of 16.
Coverage: share of clusters hit, and the mean cosine distance from each
held-out document to its nearest selected document (lower = better covered).
"""

from __future__ import annotations

import common
import embedded
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from curation.embeddings import read_clusters
from curation.selectors.diversity import KMQConfig
from curation.stages import select_stage
from curation.train.clusters import SCORES_FILE, ClusterScoring, read_scores
from curation.train.run import train_on_shards

RANDOM, KMQ, ITERATIVE = "uniform random", "kMQ", "iterative kMQ"
COLORS = {RANDOM: "tab:orange", KMQ: "tab:blue", ITERATIVE: "tab:green"}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--budget-share", type=float, default=0.1, help="budget b as a share of the pool")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the selection: sets the steps")
    p.add_argument("--rounds", type=int, default=3, help="N, rounds of iterative kMQ (paper: 3)")
    embedded.add_flags(p)
    common.run_experiment(p, "kmq", "5. kMQ vs uniform random at equal budget", run)


def run(args, work) -> dict:
    corpus = embedded.prepare(args, work)
    ids = corpus.pool_ids()
    budget = round(args.budget_share * len(ids))
    arms = (RANDOM, KMQ, f"{ITERATIVE} (N={args.rounds})")
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in arms}
    selected: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
    tokens: dict[str, list[int]] = {arm: [] for arm in arms}  # kMQ and random may pick longer or shorter docs
    steps = None
    for seed in common.seeds_of(args):
        tables = {
            arms[0]: common.selection_table(
                ids, embedded.random_selection(len(ids), budget, seed), work / f"random-{seed}.parquet"
            ),
            arms[1]: _kmq(corpus, KMQConfig(budget=budget, rounds=1, seed=seed), work / f"kmq-{seed}"),
        }
        for arm in arms[:2]:
            made = common.shards(
                corpus.pool, work / f"shards-{seed}-{arms.index(arm)}", corpus.tokenizer, [tables[arm]]
            )
            tokens[arm].append(made.tokens)
        if steps is None:  # fixed once, from kMQ's selection, for every arm and seed
            steps = (
                20
                if args.quick
                else round(args.epochs * embedded.sequences_in(work / f"shards-{seed}-1") / 16)
            )
            common.log(f"budget {budget} of {len(ids)} documents, {steps} steps per arm")
        tables[arms[2]] = _iterative(corpus, budget, args.rounds, seed, steps, work / f"iter-{seed}")
        made = common.shards(corpus.pool, work / f"shards-{seed}-2", corpus.tokenizer, [tables[arms[2]]])
        tokens[arms[2]].append(made.tokens)
        eval_every = 5 if args.quick else max(10, steps // 12)
        for i, arm in enumerate(arms):
            common.log(f"seed {seed}: {arm}")
            config = common.train_config(steps, seed, eval_every)
            folder = work / f"run-{seed}-{i}"
            runs[arm].append(common.train(work / f"shards-{seed}-{i}", config, folder, corpus.validation))
            selected[arm].append(_kept(tables[arm]))
    return _report(args, corpus, arms, runs, selected, steps, budget, tokens)


def _kmq(corpus, config: KMQConfig, out, refine_from=None, scores=None):
    select_stage(corpus.pool, corpus.clusters, str(out), config, refine_from=refine_from, scores=scores)
    return out / "decisions.parquet"


def _iterative(corpus, budget: int, rounds: int, seed: int, steps: int, work):
    """N rounds of b/N (select_stage draws each round's share): after each but
    the last, a probe run on everything selected so far (steps in proportion to
    its size) scores the clusters on their held-out scoring documents."""
    config = KMQConfig(budget=budget, rounds=rounds, seed=seed)
    out = work / "round-1"
    _kmq(corpus, config, out)
    for r in range(1, rounds):
        probe = max(10, steps * r // rounds)
        scores = _probe(corpus, out, probe, seed, work / f"probe-{r}")
        nxt = work / f"round-{r + 1}"
        _kmq(corpus, config, nxt, refine_from=str(out), scores=scores)
        out = nxt
    return out / "decisions.parquet"


def _probe(corpus, selection, steps: int, seed: int, work) -> np.ndarray:
    """Train on the selection so far; per-cluster loss on held-out documents = what is left to learn."""
    common.shards(corpus.pool, work / "shards", corpus.tokenizer, [selection / "decisions.parquet"])
    config = common.train_config(steps, seed, steps, holdout=4)
    scoring = ClusterScoring(str(selection))
    train_on_shards(str(work / "shards"), config, work / "run", "cpu", False, clusters=scoring)
    return read_scores(work / "run" / SCORES_FILE, corpus.k)


def _kept(table) -> np.ndarray:
    return pq.read_table(table).column("kept").to_numpy(zero_copy_only=False)


def _report(args, corpus, arms, runs, selected, steps, budget, tokens) -> dict:
    clusters = read_clusters(corpus.clusters).cluster  # pool order, like the selections
    sizes = np.bincount(clusters, minlength=corpus.k)
    vectors = corpus.pool_vectors()
    numbers: dict = {"steps": steps, "budget": budget, "clusters": corpus.k}
    rows = []
    for arm in arms:
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        best = [min(common.eval_curve(r)[1]) for r in runs[arm]]
        hit = [len(np.unique(clusters[m])) / corpus.k for m in selected[arm]]
        distance = [embedded.coverage(m, vectors, corpus.held_vectors) for m in selected[arm]]
        spread = [_allocation_error(m, clusters, sizes) for m in selected[arm]]
        rows.append(
            [arm, f"{np.mean(tokens[arm]):,.0f}", common.mean_std(finals), common.mean_std(best),
             f"{np.mean(hit):.1%}", f"{np.mean(distance):.4f}", f"{np.mean(spread):.3f}"]
        )  # fmt: skip
        numbers[arm] = {"final": finals, "best": best, "clusters_hit": hit, "coverage_distance": distance,
                        "allocation_error": spread, "tokens": tokens[arm]}  # fmt: skip
    table = common.markdown_table(
        ["arm", "tokens selected", "final val loss", "best val loss", "clusters hit",
         "held-out → nearest selected (cosine distance)", "allocation error vs size-proportional"],
        rows,
    )  # fmt: skip
    return {
        "tables": [table],
        "verdict": _verdict(numbers, arms),
        "numbers": numbers,
        "setup": _setup(args, corpus, runs, steps, budget, len(clusters)),
        "figure": _figure(arms, runs, selected, clusters, sizes, numbers),
    }


def _allocation_error(mask: np.ndarray, clusters: np.ndarray, sizes: np.ndarray) -> float:
    """Total variation distance between the selection's cluster shares and the
    pool's: 0 = exactly size-proportional (kMQ's target)."""
    chosen = np.bincount(clusters[mask], minlength=len(sizes))
    return float(0.5 * np.abs(chosen / chosen.sum() - sizes / sizes.sum()).sum())


def _verdict(numbers: dict, arms) -> str:
    rnd, kmq, it = (np.array(numbers[a]["final"]) for a in arms)
    parts = []
    for name, arm in (("kMQ", kmq), ("iterative kMQ", it)):
        gap, noise = rnd.mean() - arm.mean(), common.paired_noise(rnd, arm)
        if len(arm) < 2:
            word = "beat" if gap > 0 else "did not beat"
            parts.append(f"{name} {word} random on one seed ({gap:+.3f})")
        elif gap > noise:
            parts.append(f"{name} beat random by {gap:.3f} (paired, two standard errors {noise:.3f})")
        elif gap > 0:
            parts.append(
                f"{name} was lower than random by {gap:.3f}, within noise (paired, 2 SE {noise:.3f})"
            )
        else:
            parts.append(f"{name} was not better than random ({gap:+.3f}, two standard errors {noise:.3f})")
    order = "held" if rnd.mean() > kmq.mean() > it.mean() else "did not hold"  # losses: lower is better
    cover = [np.mean(numbers[a]["coverage_distance"]) for a in arms]
    return (
        f"Final held-out loss: random {rnd.mean():.3f}, kMQ {kmq.mean():.3f}, iterative kMQ {it.mean():.3f}. "
        + "; ".join(parts)
        + f". The paper's order (iterative kMQ best, then kMQ, then random) {order} here. Coverage distance: "
        + ", ".join(f"{a} {c:.4f}" for a, c in zip(arms, cover, strict=True))
        + "."
        + common.spread_note(numbers, arms)
    )


def _setup(args, corpus, runs, steps, budget, pool) -> str:
    seeds = len(next(iter(runs.values())))
    probes = ", ".join(str(max(10, steps * r // args.rounds)) for r in range(1, args.rounds))
    return (
        f"{seeds} seeds; pool {pool:,} documents, {corpus.k} k-means clusters; budget b = {budget:,} "
        f"documents ({args.budget_share:.0%}) for every arm; no quality score, so kMQ samples uniformly "
        f"inside each cluster. Equal steps: every arm trains {steps} steps of 16 x 128 tokens from scratch "
        f"({args.epochs:g} passes over kMQ's selection); iterative kMQ also spends probe runs of {probes} "
        f"steps to score clusters (per-cluster validation loss, softmax T=1); torch on {args.threads} "
        "thread(s). "
        f"Encoder: {embedded.encoder_note(corpus)}"
    )


def _figure(arms, runs, selected, clusters, sizes, numbers):
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    for arm, color in zip(arms, COLORS.values(), strict=True):
        common.curves(left, arm, [common.eval_curve(r) for r in runs[arm]], color=color)
    left.set(xlabel="step", ylabel="held-out loss (nats/token)", title="validation (mean, min..max band)")
    left.legend()
    cover = [numbers[a]["coverage_distance"] for a in arms]
    for i, (c, color) in enumerate(zip(cover, COLORS.values(), strict=True)):
        middle.errorbar([i], [np.mean(c)], yerr=[[np.mean(c) - min(c)], [max(c) - np.mean(c)]], fmt="o",
                        color=color, capsize=4)  # fmt: skip
    middle.set_xticks(range(len(arms)), arms)
    middle.set_xlim(-0.5, len(arms) - 0.5)
    middle.set(ylabel="mean cosine distance, held-out → nearest selected", title="coverage (lower = better)")
    share = sum(selected[arms[0]][0]) / len(clusters)
    right.plot([0, sizes.max()], [0, share * sizes.max()], "k--", linewidth=0.8, label="size-proportional")
    for arm, color in zip(arms, COLORS.values(), strict=True):
        chosen = np.bincount(clusters[selected[arm][0]], minlength=len(sizes))
        right.plot(sizes, chosen, ".", color=color, label=arm, markersize=6, alpha=0.7)
    right.set(xlabel="cluster size (pool documents)", ylabel="documents selected (first seed)")
    right.set_title("selected per cluster vs cluster size")
    right.legend()
    return fig


if __name__ == "__main__":
    main()
