"""Experiment 4: SemDeDup at a small epsilon vs random pruning to the fraction it
keeps, the same number of steps (Abbas et al., arXiv 2303.09540).

    .venv/bin/python bench/experiments/semdedup.py [--epsilon 0.05] [--epochs 2] [--seeds 0,1,2,3,4] [--quick]

Corpus: the chosen one after exact dedup only (no fuzzy dedup first, so the
near-duplicates SemDeDup is for are still there); 10% of documents (by a hash
of the id) are held out. The rest is embedded with the static encoder
(semantic, from all-MiniLM-L6-v2) and clustered once (spherical k-means,
k = sqrt(n)); SemDeDup (keep "hard", as the reference) drops every document
whose cosine to an earlier one of its cluster exceeds 1 - epsilon. To fit the
time budget the training pool is whole clusters (a fixed random draw, about
--pool-tokens tokens): SemDeDup decides inside a cluster, so its decisions
there are those it makes on that pool alone. Scored on the held-out documents
nearest to those clusters, less any with a near-copy in the pool (cosine above
1 - epsilon), so that no arm is scored on copies of what it trained on. The
random arm keeps as many documents of the pool as SemDeDup, drawn with the
run's seed. Both arms train --epochs passes over SemDeDup's sequences, in
steps of 16, cosine schedule.
"""

from __future__ import annotations

import common
import embedded
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq
import torch

from curation.embeddings import EmbeddingStore, read_clusters
from curation.selectors.dedup import DedupConfig
from curation.selectors.semdedup import SemDeDupConfig
from curation.stages import semdedup_stage
from curation.storage import Dataset
from curation.storage.tokenizer import estimated_tokens

SEMDEDUP, RANDOM = "SemDeDup", "random, same count"
ARMS = (SEMDEDUP, RANDOM)
COLORS = {SEMDEDUP: "tab:blue", RANDOM: "tab:orange"}
EXACT_ONLY = DedupConfig(fuzzy=False)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], seeds="0,1,2,3,4")
    p.add_argument("--epsilon", type=float, default=0.05, help="duplicate when cosine > 1 - epsilon")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over SemDeDup's pool: sets the steps")
    p.add_argument("--pool-tokens", type=int, default=1_200_000, help="whole clusters to ~this many tokens")
    p.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    embedded.add_flags(p)
    common.run_experiment(p, "semdedup", "4. SemDeDup vs random pruning to the same fraction", run)


def run(args, work) -> dict:
    corpus = embedded.prepare(args, work, dedup=EXACT_ONLY)
    semdedup_stage(
        corpus.pool, corpus.embeddings, corpus.clusters, str(work / "semdedup"),
        SemDeDupConfig(epsilon=args.epsilon),
    )  # fmt: skip
    decisions = pq.read_table(work / "semdedup" / "decisions.parquet", columns=["id", "source", "kept"])
    chosen, in_pool = _whole_clusters(corpus, 30_000 if args.quick else args.pool_tokens)
    kept = decisions.column("kept").to_numpy(zero_copy_only=False) & in_pool
    common.log(f"SemDeDup kept {kept.sum()} of {in_pool.sum()} at epsilon {args.epsilon}")
    validation, held = _novel_heldout(args, corpus, work, chosen, 1.0 - args.epsilon)
    ids = decisions.column("id").to_pylist()
    table = common.selection_table(ids, kept, work / "semdedup-kept.parquet")
    pruned = common.shards(corpus.pool, work / "shards-semdedup", corpus.tokenizer, [table])
    sequences = embedded.sequences_in(work / "shards-semdedup")
    steps = 10 if args.quick else round(args.epochs * sequences / 16)
    eval_every = 5 if args.quick else max(10, steps // 12)
    common.log(f"{sequences} SemDeDup sequences: {steps} steps per arm")

    tasks, tokens = [], {SEMDEDUP: [pruned.tokens], RANDOM: []}
    for seed in common.seeds_of(args):
        mask = np.zeros(len(ids), dtype=bool)
        rows = np.flatnonzero(in_pool)
        mask[rows[embedded.random_selection(len(rows), int(kept.sum()), seed)]] = True
        table = common.selection_table(ids, mask, work / f"random-{seed}.parquet")
        made = common.shards(corpus.pool, work / f"shards-random-{seed}", corpus.tokenizer, [table])
        tokens[RANDOM].append(made.tokens)
        config = common.train_config(steps, seed, eval_every, model=embedded.MODELS[args.model])
        tasks.append((SEMDEDUP, work / "shards-semdedup", config, work / f"run-{seed}-sem", validation))
        tasks.append((RANDOM, work / f"shards-random-{seed}", config, work / f"run-{seed}-rnd", validation))
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in ARMS}
    for arm, records in common.parallel_map(embedded.train_task, tasks, 1 if args.quick else args.jobs):
        runs[arm].append(records)
    sources = np.array(decisions.column("source").to_pylist())
    facts = {
        "steps": steps,
        "epsilon": args.epsilon,
        "clusters_used": len(chosen),
        "pool": int(in_pool.sum()),
        "kept": int(kept.sum()),
        "heldout": held,
        "tokens": {a: int(np.mean(t)) for a, t in tokens.items()},
        "dropped_by_source": {
            s: round(1 - kept[in_pool & (sources == s)].mean(), 4) for s in np.unique(sources[in_pool])
        },
    }
    return _report(runs, facts, corpus, args)


def _whole_clusters(corpus, tokens_wanted: int) -> tuple[np.ndarray, np.ndarray]:
    """(clusters, pool rows in them): whole k-means clusters in a fixed random
    order until about `tokens_wanted` tokens (ceil(chars / 4)). SemDeDup works
    inside a cluster, so on these rows it decides exactly as on a pool of
    only them, and their near-duplicates stay together (a random share of
    documents would split most pairs)."""
    clusters = read_clusters(corpus.clusters).cluster
    chars = Dataset.open(corpus.pool).read_table(["n_chars"]).column(0).to_numpy()
    tokens = np.bincount(clusters, weights=estimated_tokens(chars), minlength=corpus.k)
    order = np.random.default_rng(0).permutation(corpus.k)
    count = int(np.searchsorted(np.cumsum(tokens[order]), tokens_wanted)) + 1
    chosen = np.sort(order[:count])
    return chosen, np.isin(clusters, chosen)


def _novel_heldout(args, corpus, work, chosen, threshold: float) -> tuple[dict[str, torch.Tensor], dict]:
    """The held-out sequences of documents nearest to a chosen cluster's centroid
    and with no pool document above `threshold` cosine (a near-copy would reward
    whichever arm kept its twin)."""
    held_ids, held = EmbeddingStore.open(work / "held-embeddings").read()
    vectors = torch.from_numpy(held)
    pool = torch.from_numpy(np.ascontiguousarray(corpus.pool_vectors()))
    centroids = torch.from_numpy(read_clusters(corpus.clusters).centroids)
    nearest = torch.cat([(b @ pool.T).max(dim=1).values for b in vectors.split(1024)]).numpy()
    near_chosen = np.isin((vectors @ centroids.T).argmax(dim=1).numpy(), chosen)
    scored = near_chosen & (nearest <= threshold)
    table = common.selection_table(held_ids.to_pylist(), scored, work / "heldout-scored.parquet")
    common.shards(corpus.held, work / "heldout-scored", corpus.tokenizer, [table])
    common.log(f"{int(scored.sum())} held-out documents scored ({int(near_chosen.sum())} near the pool)")
    validation = common.sequences_of(work / "heldout-scored", per_source=8 if args.quick else 64)
    facts = {"documents": len(held), "in_clusters": int(near_chosen.sum()), "scored": int(scored.sum())}
    return validation, facts


def _report(runs, facts, corpus, args) -> dict:
    numbers: dict = dict(facts)
    rows = []
    for arm in ARMS:
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        best = [min(common.eval_curve(r)[1]) for r in runs[arm]]
        train_loss = [float(np.mean([x["loss"] for x in r[-20:]])) for r in runs[arm]]
        tokens = facts["tokens"][arm]
        epochs = facts["steps"] * 16 * 128 / tokens
        rows.append(
            [arm, common.mean_std(finals), common.mean_std(best), common.mean_std(train_loss),
             f"{tokens:,}", f"{epochs:.2f}"]
        )  # fmt: skip
        numbers[arm] = {"final": finals, "best": best, "train_last20": train_loss}
    table = common.markdown_table(
        ["arm", "final val loss", "best val loss", "train loss (last 20 steps)", "tokens kept", "epochs"],
        rows,
    )
    dropped = facts["dropped_by_source"]
    by_source = common.markdown_table(
        ["source", "share dropped by SemDeDup", *(f"final val loss: {a}" for a in ARMS)],
        [[s, f"{dropped.get(s, 0.0):.1%}", *(embedded.mean_by_source(runs[a], s) for a in ARMS)]
         for s in sorted(common.final_eval(runs[SEMDEDUP][0])["by_source"])],
    )  # fmt: skip
    gap, noise, outcome = common.compare(numbers[SEMDEDUP]["final"], numbers[RANDOM]["final"])
    numbers["paired"] = {"gap": gap, "two_se": noise, "outcome": outcome}
    share = facts["kept"] / facts["pool"]
    return {
        "tables": [table, by_source],
        "verdict": _verdict(numbers, share),
        "numbers": numbers,
        "setup": _setup(runs, facts, corpus, args),
        "figure": _figure(runs, facts),
        "summary": {
            "claim": f"SemDeDup (ε={args.epsilon:g}, keeps {share:.0%}) beats a random {share:.0%}",
            "outcome": outcome,
            "figures": f"{gap:+.3f} ± {noise:.3f} nats (random - SemDeDup)",
        },
    }


def _verdict(numbers: dict, share: float) -> str:
    sem, rnd = (np.mean(numbers[a]["final"]) for a in ARMS)
    paired = numbers["paired"]
    meaning = {
        "held": "SemDeDup beat random pruning to the same size by more than two standard errors",
        "not seen": "no difference beyond two standard errors between SemDeDup and random pruning",
        "did not hold": "random pruning beat SemDeDup by more than two standard errors",
        "one seed": "one seed, no noise estimate",
    }[paired["outcome"]]
    return (
        f"At epsilon {numbers['epsilon']:g} SemDeDup kept {share:.1%} of the pool; after {numbers['steps']} "
        f"steps it ended at {sem:.3f} vs {rnd:.3f} for a random {share:.1%} (paired difference "
        f"{paired['gap']:+.3f}, two standard errors {paired['two_se']:.3f}): {meaning} "
        f"({paired['outcome']})." + common.spread_note(numbers, ARMS)
    )


def _setup(runs, facts, corpus, args) -> str:
    held = facts["heldout"]
    return (
        f"{len(runs[SEMDEDUP])} seeds; exact dedup only (no fuzzy dedup first); {corpus.k} spherical k-means "
        f"clusters over the pool, of which {facts['clusters_used']} whole clusters (a fixed random draw, "
        f"about {args.pool_tokens:,} tokens) are the training pool: {facts['pool']:,} documents. SemDeDup "
        f"at epsilon {args.epsilon:g} (keep hard, the reference's default) kept {facts['kept']:,}; the "
        "random arm keeps the same number of documents of the same pool (a new draw per seed). Scored on "
        f"{held['scored']:,} held-out documents: of {held['documents']:,}, the {held['in_clusters']:,} "
        f"nearest to a cluster used, less those with a pool document above cosine {1 - args.epsilon:g}. "
        "Equal steps: "
        f"{facts['steps']} steps of 16 x 128 tokens of {embedded.model_words(args)} for both arms "
        f"({args.epochs:g} passes over SemDeDup's "
        "pool). Changed since the first round: semantic vectors (the static encoder) instead of hashed "
        "n-grams; no fuzzy dedup first; a small epsilon and the fraction it gives instead of an epsilon "
        "forced to keep 80%; two epochs; five seeds; a pool of whole clusters, so that near-duplicates are "
        "not split up by subsampling; no scoring on near-copies of the pool. Encoder: "
        + embedded.encoder_note(corpus)
    )


def _figure(runs, facts):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    embedded.loss_panel(left, runs, COLORS, facts["steps"])
    sources = sorted(common.final_eval(runs[SEMDEDUP][0])["by_source"])
    x = np.arange(len(sources))
    gaps = [
        [common.final_eval(s)["by_source"][name] - common.final_eval(r)["by_source"][name] for s, r in
         zip(runs[SEMDEDUP], runs[RANDOM], strict=True)]
        for name in sources
    ]  # fmt: skip
    means = np.array([np.mean(g) for g in gaps])
    right.bar(x, means, color=COLORS[SEMDEDUP], width=0.6)
    for i, g in enumerate(gaps):
        right.plot([i] * len(g), g, "k.", markersize=4)
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xticks(x, sources, rotation=30)
    right.set(ylabel="SemDeDup minus random, same seed (lower = better)", title="final loss by source")
    return fig


if __name__ == "__main__":
    main()
