"""Experiment 7: perplexity pruning (keep 50% by reference-model perplexity) vs
a random 50%, the same number of steps (Ankner et al., arXiv 2405.20541).

    .venv/bin/python bench/experiments/perplexity.py [--epochs 2] [--pool-tokens 1280000] [--quick]

Corpus: the chosen one after exact + fuzzy dedup; 10% of documents (by a hash
of the id) are held out; the training pool is a hash-chosen share of the rest,
about --pool-tokens tokens (ceil(chars / 4)). The quality stage (`curation
quality --perplexity`, its defaults) trains the reference model on a seeded
slice of the pool and scores every pool document by its mean next-token loss.
Each pruned arm keeps 50% of every source: the low, middle or high band of the
perplexity ranking (`band_mask`, as `--band`), or a random 50% per source (a
new draw per seed), so every arm has the same source mix. Every arm trains
from scratch for --epochs passes over the random arm's sequences, in steps of
16, cosine schedule, and is scored on the held-out documents.
"""

from __future__ import annotations

import common
import embedded
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from curation.selectors.quality import QualityConfig
from curation.selectors.quality.perplexity import PerplexityConfig, band_mask
from curation.stages import quality_stage

RANDOM = "random 50%"
BANDS = {"low": "low perplexity 50%", "middle": "middle perplexity 50%", "high": "high perplexity 50%"}
ARMS = (RANDOM, *BANDS.values())
HEADLINE = BANDS["high"]  # the paper's best band on the Pile, the mixed code and prose corpus
COLORS = dict(zip(ARMS, ("tab:orange", "tab:green", "tab:purple", "tab:blue"), strict=True))
FRACTION = 0.5


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], seeds="0,1,2,3,4")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the random 50%: sets the steps")
    p.add_argument("--pool-tokens", type=int, default=1_280_000, help="pool size, about this many tokens")
    p.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    embedded.add_model_flag(p)
    common.run_experiment(p, "perplexity", "7. Perplexity pruning to 50% vs a random 50%", run)


def run(args, work) -> dict:
    pool, held = embedded.split_pool(args, work, embedded.share_for_tokens(args, work, args.pool_tokens))
    scores, sources, ids, reference = reference_scores(args, pool, work)
    tokenizer = common.shared_tokenizer(pool, work / "tokenizer.json")
    common.shards(held, work / "heldout", tokenizer)
    validation = common.sequences_of(work / "heldout", per_source=8 if args.quick else 64)
    selections = {
        BANDS[band]: common.selection_table(
            ids, band_mask(scores, sources, band, FRACTION), work / f"band-{band}.parquet"
        )
        for band in BANDS
    }
    sets = {arm: work / f"shards-{band}" for band, arm in BANDS.items()}
    tokens = {
        arm: [common.shards(pool, sets[arm], tokenizer, [selections[arm]]).tokens] for arm in BANDS.values()
    }
    tokens[RANDOM] = []
    seeds = common.seeds_of(args)
    for seed in seeds:
        draw = np.random.default_rng(seed).random(len(ids))
        table = common.selection_table(
            ids, band_mask(draw, sources, "low", FRACTION), work / f"random-{seed}.parquet"
        )
        tokens[RANDOM].append(common.shards(pool, work / f"shards-random-{seed}", tokenizer, [table]).tokens)
    sequences = embedded.sequences_in(work / f"shards-random-{seeds[0]}")
    steps = 10 if args.quick else round(args.epochs * sequences / 16)
    eval_every = 5 if args.quick else max(10, steps // 12)
    common.log(f"{len(ids)} pool documents, {sequences} sequences in a random half: {steps} steps per arm")
    tasks = []
    for seed in seeds:
        config = common.train_config(steps, seed, eval_every, model=embedded.MODELS[args.model])
        for arm in ARMS:
            shard_set = work / f"shards-random-{seed}" if arm == RANDOM else sets[arm]
            tasks.append((arm, shard_set, config, work / f"run-{seed}-{ARMS.index(arm)}", validation))
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in ARMS}
    for arm, records in common.parallel_map(embedded.train_task, tasks, 1 if args.quick else args.jobs):
        runs[arm].append(records)
    facts = {
        "steps": steps,
        "pool": len(ids),
        "tokens": {arm: int(np.mean(t)) for arm, t in tokens.items()},
        "reference": reference,
        "perplexity_by_band": {
            arm: float(np.mean(scores[pq.read_table(selections[arm]).column("kept").to_numpy()]))
            for arm in BANDS.values()
        },
    }
    return _report(runs, facts, args)


def reference_scores(args, pool: str, work):
    """Reference-model perplexity of every pool document, from the quality stage
    (score only: no rules applied, no band kept)."""
    perplexity = (
        PerplexityConfig(steps=20, slice_documents=200, max_tokens=64) if args.quick else PerplexityConfig()
    )
    report = quality_stage(pool, str(work / "quality"), QualityConfig(filter=False, perplexity=perplexity))
    table = pq.read_table(work / "quality" / "scores.parquet", columns=["id", "source", "perplexity"])
    scores = table.column("perplexity").to_numpy(zero_copy_only=False).astype(float)
    if np.isnan(scores).any():
        raise RuntimeError(f"{int(np.isnan(scores).sum())} pool documents have no perplexity score")
    sources = np.array(table.column("source").to_pylist())
    reference = {
        "steps": perplexity.steps,
        "slice_documents": min(perplexity.slice_documents, len(scores)),
        "width": perplexity.width,
        "layers": perplexity.layers,
        "seconds": report.seconds,
    }
    return scores, sources, table.column("id").to_pylist(), reference


def _report(runs, facts, args) -> dict:
    numbers: dict = dict(facts)
    rows = []
    for arm in ARMS:
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        best = [min(common.eval_curve(r)[1]) for r in runs[arm]]
        numbers[arm] = {"final": finals, "best": best}
        gap, noise, outcome = (
            common.compare(finals, numbers[RANDOM]["final"]) if arm != RANDOM else (0, 0, "")
        )
        numbers[arm]["vs_random"] = {"gap": gap, "two_se": noise, "outcome": outcome}
        mean_ppl = facts["perplexity_by_band"].get(arm)
        rows.append(
            [arm, f"{mean_ppl:.3f}" if mean_ppl is not None else "-", f"{facts['tokens'][arm]:,}",
             common.mean_std(finals), common.mean_std(best),
             f"{gap:+.3f} ± {noise:.3f} ({outcome})" if arm != RANDOM else "-"]
        )  # fmt: skip
    table = common.markdown_table(
        ["arm", "mean reference loss of kept docs", "tokens kept", "final val loss", "best val loss",
         "random minus arm (paired, 2 SE)"],
        rows,
    )  # fmt: skip
    sources = sorted(common.final_eval(runs[RANDOM][0])["by_source"])
    by_source = common.markdown_table(
        ["source", *(f"final val loss: {a}" for a in ARMS)],
        [[s, *(embedded.mean_by_source(runs[a], s) for a in ARMS)] for s in sources],
    )
    head = numbers[HEADLINE]["vs_random"]
    return {
        "tables": [table, by_source],
        "verdict": _verdict(numbers),
        "numbers": numbers,
        "setup": _setup(runs, facts, args),
        "figure": _figure(runs, facts, sources),
        "summary": {
            "claim": "keeping the high-perplexity 50% (the paper's Pile band) beats a random 50%",
            "outcome": head["outcome"],
            "figures": f"{head['gap']:+.3f} ± {head['two_se']:.3f} nats (random - high band)",
        },
    }


def _verdict(numbers: dict) -> str:
    rnd = np.mean(numbers[RANDOM]["final"])
    parts = []
    for arm in BANDS.values():
        paired = numbers[arm]["vs_random"]
        parts.append(
            f"{arm} {np.mean(numbers[arm]['final']):.3f} ({paired['gap']:+.3f} ± {paired['two_se']:.3f}: "
            f"{paired['outcome']})"
        )
    head = numbers[HEADLINE]["vs_random"]["outcome"]
    meaning = {
        "held": "held: the high-perplexity half beat a random half by more than two standard errors",
        "not seen": "was not seen: within two standard errors of a random half",
        "did not hold": "did not hold: a random half beat the high-perplexity half beyond two SE",
        "one seed": "has one seed only, no noise estimate",
    }[head]
    return (
        f"Final held-out loss: random 50% {rnd:.3f}; " + "; ".join(parts) + " (random minus arm, paired, "
        f"two standard errors). The headline claim (the paper's Pile band, high perplexity) {meaning}."
        + common.spread_note(numbers, ARMS)
    )


def _setup(runs, facts, args) -> str:
    ref = facts["reference"]
    return (
        f"{len(runs[RANDOM])} seeds; pool {facts['pool']:,} documents (about {args.pool_tokens:,} tokens "
        "by ceil(chars / 4), a hash-chosen share of the non-held-out documents after exact + fuzzy "
        "dedup). Reference model: "
        f"the quality stage's defaults ({ref['layers']}-layer GPT, width {ref['width']}, {ref['steps']} "
        f"steps on a seeded slice of {ref['slice_documents']:,} pool documents; training and scoring took "
        f"{ref['seconds']:.0f} s). Every pruned arm keeps {FRACTION:.0%} of each source; the random arm "
        f"draws anew per seed. Equal steps: {facts['steps']} steps of 16 x 128 tokens of "
        f"{embedded.model_words(args)} for every arm "
        f"({args.epochs:g} passes over the random half). New in the second round. Reference settings "
        "followed: one small reference model trained on a random slice of the data to be pruned, mean "
        "token loss as the score, 50% kept, low / middle / high bands (the paper's selection criteria); "
        "the paper's reference model has 125M parameters and its pruned models 1B-3B, so this is the "
        "method at toy scale."
    )


def _figure(runs, facts, sources):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    embedded.loss_panel(left, runs, COLORS, facts["steps"])
    x = np.arange(len(sources))
    base = [[common.final_eval(r)["by_source"][s] for r in runs[RANDOM]] for s in sources]
    for i, arm in enumerate(BANDS.values()):
        gaps = [
            np.mean(np.subtract([common.final_eval(r)["by_source"][s] for r in runs[arm]], base[j]))
            for j, s in enumerate(sources)
        ]
        right.bar(x + (i - 1) * 0.27, gaps, width=0.27, label=arm, color=COLORS[arm])
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xticks(x, sources, rotation=30)
    right.set(
        ylabel="arm minus random 50%, same seed (lower = better)", title="final loss by held-out source"
    )
    right.legend()
    return fig


if __name__ == "__main__":
    main()
