"""Experiment 5: kMQ (proportional and even splits) and iterative kMQ, all with
a quality score, vs uniform random at the same budget and the same number of
steps (Diversify and Conquer, arXiv 2409.11378).

    .venv/bin/python bench/experiments/kmq.py [--budget-share 0.1] [--epochs 3] [--rounds 3] [--quick]

Corpus: the chosen one after exact + fuzzy dedup; 10% of documents (by a hash
of the id) are held out; the pool is a hash-chosen share of the rest, about
--pool-tokens tokens (ceil(chars / 4)), embedded with the static encoder and
clustered once (k = sqrt(n)). Quality: the reference-model perplexity of the
quality stage (`curation quality --perplexity`), lower loss = higher quality
(`select --quality PATH:-perplexity`); inside a cluster kMQ draws with weights
exp(quality). Each arm selects the same number of pool documents b: uniform
random; kMQ with b split in proportion to cluster size (the paper); kMQ with b
split evenly (the reference code); iterative kMQ (b/N a round, proportional; a
probe run on the selection so far scores each cluster by its loss on the
documents held out of the pool for scoring, the next b/N is drawn with
softmax(score) cluster weights; N = 3 as in the paper). Every arm then trains
from scratch for --epochs passes over kMQ's (proportional) selection, in
steps of 16, and is scored on the held-out documents, pooled (by source) and
per k-means cluster (each held-out document in its nearest centroid's cluster;
the macro average weighs every cluster equally).
"""

from __future__ import annotations

import common
import embedded
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from perplexity import reference_scores

from curation.embeddings import EmbeddingStore, read_clusters
from curation.selectors.diversity import KMQConfig
from curation.stages import select_stage
from curation.storage import DOCUMENTS_SCHEMA, Dataset, write_dataset
from curation.train.clusters import SCORES_FILE, ClusterScoring, read_scores
from curation.train.run import train_on_shards

RANDOM, PROPORTIONAL, EVEN = "uniform random", "kMQ, proportional", "kMQ, even"
COLORS = ("tab:orange", "tab:blue", "tab:purple", "tab:green")
PER_CLUSTER = 8  # held-out sequences per cluster (the macro average's rows)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], seeds="0,1,2,3,4")
    p.add_argument("--budget-share", type=float, default=0.1, help="budget b as a share of the pool")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the selection: sets the steps")
    p.add_argument("--rounds", type=int, default=3, help="N, rounds of iterative kMQ (paper: 3)")
    p.add_argument("--pool-tokens", type=int, default=2_400_000, help="pool size, about this many tokens")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    embedded.add_flags(p)
    common.run_experiment(p, "kmq", "5. kMQ with a quality score vs uniform random at equal budget", run)


def arms_of(args) -> tuple[str, ...]:
    return (RANDOM, PROPORTIONAL, EVEN, f"iterative kMQ (N={args.rounds})")


def run(args, work) -> dict:
    corpus = embedded.prepare(args, work, pool_share=embedded.share_for_tokens(args, work, args.pool_tokens))
    reference_scores(args, corpus.pool, work)
    quality = f"{work / 'quality' / 'scores.parquet'}:-perplexity"
    ids = corpus.pool_ids()
    budget = round(args.budget_share * len(ids))
    by_cluster = _cluster_validation(args, corpus, work)
    arms = arms_of(args)
    first = _select(corpus, quality, KMQConfig(budget=budget, rounds=1, seed=0), work / "probe-steps")
    common.shards(corpus.pool, work / "probe-steps" / "shards", corpus.tokenizer, [first])
    sequences = embedded.sequences_in(work / "probe-steps" / "shards")
    steps = 10 if args.quick else round(args.epochs * sequences / 16)
    common.log(f"budget {budget} of {len(ids)} documents, {sequences} sequences: {steps} steps per arm")
    seeds = common.seeds_of(args)
    jobs = 1 if args.quick else args.jobs
    plan = [(args, corpus, quality, ids, budget, steps, seed, work) for seed in seeds]
    selections = dict(common.parallel_map(_selections, plan, jobs))
    tasks = []
    for seed in seeds:
        config = common.train_config(
            steps, seed, 5 if args.quick else max(10, steps // 6), model=embedded.MODELS[args.model]
        )
        for i, arm in enumerate(arms):
            shard_set = work / f"shards-{seed}-{i}"
            tasks.append((arm, shard_set, config, work / f"run-{seed}-{i}", corpus.validation, by_cluster))
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in arms}
    for arm, records in common.parallel_map(_train, tasks, jobs):
        runs[arm].append(records)
    selected = {arm: [selections[s][arm] for s in seeds] for arm in arms}
    return _report(args, corpus, arms, runs, selected, steps, budget)


def _cluster_validation(args, corpus, work) -> dict[str, torch.Tensor]:
    """Held-out sequences per k-means cluster (nearest centroid), at most PER_CLUSTER each."""
    held_ids, vectors = EmbeddingStore.open(work / "held-embeddings").read()
    centroids = read_clusters(corpus.clusters).centroids
    label = dict(zip(held_ids.to_pylist(), np.argmax(vectors @ centroids.T, axis=1).tolist(), strict=True))
    table = Dataset.open(corpus.held).read_table()
    names = pa.array([f"{label[i]:04d}" for i in table.column("id").to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index("source"), "source", names)
    out = work / "held-by-cluster"
    write_dataset(out, iter(table.to_batches()), DOCUMENTS_SCHEMA, "documents")
    common.shards(str(out), work / "heldout-by-cluster", corpus.tokenizer)
    rows = common.sequences_of(work / "heldout-by-cluster", PER_CLUSTER)
    return {int(name): tensor for name, tensor in rows.items()}


def _selections(task) -> tuple[int, dict[str, np.ndarray]]:
    """Every arm's selection for one seed, packed as shards-<seed>-<arm>."""
    args, corpus, quality, ids, budget, steps, seed, work = task
    arms = arms_of(args)
    tables = {
        arms[0]: common.selection_table(
            ids, embedded.random_selection(len(ids), budget, seed), work / f"random-{seed}.parquet"
        ),
        arms[1]: _select(
            corpus, quality, KMQConfig(budget=budget, rounds=1, seed=seed), work / f"kmq-{seed}"
        ),
        arms[2]: _select(
            corpus,
            quality,
            KMQConfig(budget=budget, rounds=1, split="even", seed=seed),
            work / f"even-{seed}",
        ),
        arms[3]: _iterative(corpus, quality, budget, args, seed, steps, work / f"iter-{seed}"),
    }
    kept = {}
    for i, arm in enumerate(arms):
        common.shards(corpus.pool, work / f"shards-{seed}-{i}", corpus.tokenizer, [tables[arm]])
        kept[arm] = pq.read_table(tables[arm]).column("kept").to_numpy(zero_copy_only=False)
    common.log(f"seed {seed}: selections done")
    return seed, kept


def _select(corpus, quality, config: KMQConfig, out, refine_from=None, scores=None):
    select_stage(corpus.pool, corpus.clusters, str(out), config, refine_from, scores, quality)
    return out / "decisions.parquet"


def _iterative(corpus, quality, budget: int, args, seed: int, steps: int, work):
    """N rounds of b/N (select_stage draws each round's share): after each but
    the last, a probe run on everything selected so far (steps in proportion to
    its size) scores the clusters on their held-out scoring documents."""
    rounds, model = args.rounds, embedded.MODELS[args.model]
    config = KMQConfig(budget=budget, rounds=rounds, seed=seed)
    out = work / "round-1"
    _select(corpus, quality, config, out)
    for r in range(1, rounds):
        probe = max(10, steps * r // rounds)
        scores = _probe(corpus, out, probe, seed, model, work / f"probe-{r}")
        nxt = work / f"round-{r + 1}"
        _select(corpus, quality, config, nxt, refine_from=str(out), scores=scores)
        out = nxt
    return out / "decisions.parquet"


def _probe(corpus, selection, steps: int, seed: int, model, work) -> np.ndarray:
    """Train on the selection so far; per-cluster loss on held-out documents = what is left to learn."""
    common.shards(corpus.pool, work / "shards", corpus.tokenizer, [selection / "decisions.parquet"])
    config = common.train_config(steps, seed, steps, holdout=4, model=model)
    scoring = ClusterScoring(str(selection))
    train_on_shards(str(work / "shards"), config, work / "run", "cpu", False, clusters=scoring)
    return read_scores(work / "run" / SCORES_FILE, corpus.k)


def _train(task) -> tuple[str, list[dict]]:
    arm, shard_set, config, out, validation, by_cluster = task
    records = common.train(shard_set, config, out, validation, by_cluster=by_cluster)
    common.log(f"seed {config.seed}: {arm} done")
    return arm, records


def _macro(records: list[dict]) -> float:
    return float(np.mean(list(common.final_eval(records)["by_cluster"].values())))


def _report(args, corpus, arms, runs, selected, steps, budget) -> dict:
    clusters = read_clusters(corpus.clusters).cluster  # pool order, like the selections
    sizes = np.bincount(clusters, minlength=corpus.k)
    vectors = corpus.pool_vectors()
    numbers: dict = {"steps": steps, "budget": budget, "clusters": corpus.k, "pool": len(clusters)}
    rows = []
    for arm in arms:
        pooled = [common.final_eval(r)["overall"] for r in runs[arm]]
        macro = [_macro(r) for r in runs[arm]]
        hit = [len(np.unique(clusters[m])) / corpus.k for m in selected[arm]]
        distance = [embedded.coverage(m, vectors, corpus.held_vectors) for m in selected[arm]]
        numbers[arm] = {"final": pooled, "macro": macro, "clusters_hit": hit, "coverage_distance": distance}
        if arm != RANDOM:
            numbers[arm]["vs_random"] = {
                "pooled": common.compare(pooled, numbers[RANDOM]["final"]),
                "macro": common.compare(macro, numbers[RANDOM]["macro"]),
            }
        rows.append(
            [arm, common.mean_std(pooled), _versus(numbers, arm, "pooled"), common.mean_std(macro),
             _versus(numbers, arm, "macro"), f"{np.mean(hit):.1%}", f"{np.mean(distance):.4f}"]
        )  # fmt: skip
    table = common.markdown_table(
        ["arm", "final val loss (pooled)", "random minus arm (2 SE)", "macro avg over clusters",
         "random minus arm (2 SE)", "clusters hit", "held-out → nearest selected (cosine distance)"],
        rows,
    )  # fmt: skip
    head = numbers[PROPORTIONAL]["vs_random"]["pooled"]
    return {
        "tables": [table],
        "verdict": _verdict(numbers, arms),
        "numbers": numbers,
        "setup": _setup(args, corpus, arms, runs, steps, budget, len(clusters)),
        "figure": _figure(arms, runs, selected, clusters, sizes, numbers),
        "summary": {
            "claim": "kMQ with a quality score (proportional split) beats uniform random at equal budget",
            "outcome": head[2],
            "figures": f"{head[0]:+.3f} ± {head[1]:.3f} nats pooled (random - kMQ)",
        },
    }


def _versus(numbers: dict, arm: str, key: str) -> str:
    if arm == RANDOM:
        return "-"
    gap, noise, outcome = numbers[arm]["vs_random"][key]
    return f"{gap:+.3f} ± {noise:.3f} ({outcome})"


def _verdict(numbers: dict, arms) -> str:
    parts = []
    for arm in arms[1:]:
        pooled, macro = numbers[arm]["vs_random"]["pooled"], numbers[arm]["vs_random"]["macro"]
        parts.append(
            f"{arm}: pooled {pooled[0]:+.3f} ± {pooled[1]:.3f} ({pooled[2]}), macro over clusters "
            f"{macro[0]:+.3f} ± {macro[1]:.3f} ({macro[2]})"
        )
    means = ", ".join(f"{a} {np.mean(numbers[a]['final']):.3f}" for a in arms)
    return (
        f"Final held-out loss, pooled: {means}. Random minus each arm (paired by seed, two standard errors; "
        "held = the arm is better beyond them): " + "; ".join(parts) + "." + common.spread_note(numbers, arms)
    )


def _setup(args, corpus, arms, runs, steps, budget, pool) -> str:
    seeds = len(runs[arms[0]])
    probes = ", ".join(str(max(10, steps * r // args.rounds)) for r in range(1, args.rounds))
    return (
        f"{seeds} seeds; pool {pool:,} documents (about {args.pool_tokens:,} tokens by ceil(chars / 4)), "
        f"{corpus.k} k-means clusters; budget b = {budget:,} documents ({args.budget_share:.0%}, the "
        "reference's KMeansIter fraction) for every arm. Quality: reference-model perplexity from the "
        "quality stage, lower = better, drawn with weights exp(quality) inside a cluster (the reference's "
        "kmeansrandom.py). Equal steps: every arm trains "
        f"{steps} steps of 16 x 128 tokens of {embedded.model_words(args)} from scratch "
        f"({args.epochs:g} passes over kMQ's selection); "
        f"iterative kMQ also spends probe runs of {probes} steps to score clusters on the documents held out "
        "of its pool (per-cluster validation loss, softmax T = 1). Macro average: the mean over clusters of "
        f"the final loss on up to {PER_CLUSTER} held-out sequences per cluster. Changed since the first "
        "round: a quality score (before: none, so kMQ was stratified random sampling), the even split beside "
        "the proportional one, clusters scored on held-out documents, five seeds, and the macro average "
        f"over clusters beside the pooled loss. Encoder: {embedded.encoder_note(corpus)}"
    )


def _figure(arms, runs, selected, clusters, sizes, numbers):
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = dict(zip(arms, COLORS, strict=True))
    embedded.loss_panel(left, runs, colors, numbers["steps"])
    x = np.arange(len(arms) - 1)
    for offset, key in ((-0.2, "pooled"), (0.2, "macro")):
        gaps = [numbers[a]["vs_random"][key] for a in arms[1:]]
        middle.bar(
            x + offset, [g[0] for g in gaps], width=0.4, yerr=[g[1] for g in gaps], capsize=4, label=key
        )
    middle.axhline(0, color="black", linewidth=0.8)
    middle.set_xticks(x, arms[1:], rotation=15)
    middle.set(ylabel="random minus arm (nats; > 0 = arm better)", title="paired gap, ± two standard errors")
    middle.legend()
    share = sum(selected[arms[0]][0]) / len(clusters)
    right.plot([0, sizes.max()], [0, share * sizes.max()], "k--", linewidth=0.8, label="size-proportional")
    for arm in arms:
        chosen = np.bincount(clusters[selected[arm][0]], minlength=len(sizes))
        right.plot(sizes, chosen, ".", color=colors[arm], label=arm, markersize=6, alpha=0.7)
    right.set(xlabel="cluster size (pool documents)", ylabel="documents selected (first seed)")
    right.set_title("selected per cluster vs cluster size")
    right.legend()
    return fig


if __name__ == "__main__":
    main()
