"""Experiment 1: RS2 at r = 10% for 20 rounds, with and without replacement, vs a
static random 10% subset at equal steps, and full data at 10x the steps (Okanovic
et al., ICLR 2024).

    .venv/bin/python bench/experiments/rs2.py [--corpus bundled|docs] [--rounds 20]
        [--sequences 1440] [--jobs 2] [--seeds 0,1,2,3,4] [--quick]

Corpus: the chosen one after exact + fuzzy dedup; 10% of documents (by a hash of
the id) are held out and packed with the same tokenizer for validation. From the
rest a random subsample of about `--sequences` packed sequences (a token budget,
proportional per source) is the training set N: small enough that 20 rounds of
r = 10% go through it twice, so the static subset sees its 10% twenty times.
Every arm is a TrainConfig with `[rs2] rounds`; the trainer derives its steps
(`curation.train.run.with_rs2_steps`: rounds * r*N / batch, the schedule over
those steps, as PatrikOkanovic/RS2 src/DeepCore/main.py schedules over the
epochs it runs). Full data is RS2 at r = 100% for the same rounds: ten times
the steps, the paper's headline baseline.
"""

from __future__ import annotations

import common
import matplotlib.pyplot as plt
import numpy as np

from curation.selectors.budget import Budget
from curation.selectors.rs2 import RS2Config
from curation.storage.shards import ShardReader
from curation.train.data import ShardSource
from curation.train.run import with_rs2_steps

FRACTION = 0.1
ARMS = {
    "RS2 without replacement": ("without_replacement", FRACTION),
    "RS2 with replacement": ("with_replacement", FRACTION),
    "static 10% subset": ("static", FRACTION),
    "full data, 10x the steps": ("without_replacement", 1.0),
}
RS2, WITH, STATIC, FULL = ARMS
BATCH = 16


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], seeds="0,1,2,3,4")
    p.add_argument("--rounds", type=int, default=20, help="RS2 rounds (epochs for full data)")
    p.add_argument("--sequences", type=int, default=1440, help="training sequences N in the subsample")
    p.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    common.run_experiment(p, "rs2", "1. RS2 vs a static subset vs full data", run)


def run(args, work) -> dict:
    rounds = 4 if args.quick else args.rounds
    target = 320 if args.quick else args.sequences
    documents = common.deduplicated(common.corpus_documents(args, work), work)
    pool, held = common.split_table(documents, work / "split", lambda i: common.stable_fraction(i) < 0.1)
    tokenizer = common.shared_tokenizer(documents, work / "tokenizer.json", keep=pool)
    budget = Budget(tokens=target * (common.SEQ_LEN - 1))
    train_set = common.shards(documents, work / "train", tokenizer, [pool], budget=budget)
    common.shards(documents, work / "heldout", tokenizer, [held])
    validation = common.sequences_of(work / "heldout", 8 if args.quick else 64)
    sequences = sum(_train_rows(work / "train").values())
    steps = _equal_steps(work / "train", rounds)
    tasks = []
    for seed in common.seeds_of(args):
        for arm, (mode, fraction) in ARMS.items():
            rs2 = RS2Config(fraction=fraction, mode=mode, rounds=rounds)
            config = common.train_config(steps[arm], seed, max(1, steps[arm] // 10),
                                         model=common.SMALL_MODEL, rs2=rs2)  # fmt: skip
            tasks.append((arm, seed, config, work, validation))
    tasks.sort(key=lambda t: -t[2].steps)  # longest first: the two workers finish together
    common.log(f"{sequences} training sequences; steps per arm {_steps(tasks)}")
    runs: dict[str, dict[int, list[dict]]] = {arm: {} for arm in ARMS}
    for arm, seed, records in common.parallel_map(_train_one, tasks, 1 if args.quick else args.jobs):
        runs[arm][seed] = records
    runs = {arm: [by_seed[s] for s in sorted(by_seed)] for arm, by_seed in runs.items()}
    first = common.seeds_of(args)[0]
    seen = {arm: _distinct(work / "train", config) for arm, seed, config, *_ in tasks if seed == first}
    return _report(runs, _steps(tasks), seen, sequences, train_set.tokens, rounds, common.seeds_of(args))


def _equal_steps(shard_set, rounds: int) -> dict[str, int]:
    """Steps per arm: `rounds` rounds of RS2 without replacement as the trainer derives
    them (a round's last partial batch dropped, as the reference's loader does) for
    every 10% arm, so they compare at equal steps; ten times that for full data."""
    rs2 = RS2Config(fraction=FRACTION, mode="without_replacement", rounds=rounds)
    steps = with_rs2_steps(common.train_config(1, 0, 1, rs2=rs2), str(shard_set)).steps
    return {arm: steps * (10 if arm == FULL else 1) for arm in ARMS}


def _steps(tasks) -> dict[str, int]:
    return {arm: config.steps for arm, _, config, *_ in tasks}


def _train_one(task) -> tuple[str, int, list[dict]]:
    arm, seed, config, work, validation = task
    out = work / f"run-{seed}-{config.rs2.mode}-{config.rs2.fraction}"
    records = common.train(work / "train", config, out, validation)
    common.log(f"seed {seed}: {arm} done ({config.steps} steps)")
    return arm, seed, records


def _train_rows(shard_set) -> dict[str, int]:
    reader = ShardReader(str(shard_set))
    return {name: reader.num_sequences(name) for name in reader.sources}


def _distinct(shard_set, config) -> int:
    """Distinct training sequences an arm draws: the trainer's own sampler, replayed."""
    source = ShardSource(str(shard_set), config.batch_size, config.steps, config.mixture, config.rs2,
                         config.seed, config.holdout)  # fmt: skip
    block = source.loader.sampler.next_block(config.steps)
    return len(np.unique(block.source_ids.astype(np.int64) * 2**40 + block.indices))


# -- report ---------------------------------------------------------------------


def _report(runs, steps, seen, sequences, tokens, rounds, seeds) -> dict:
    numbers = {}
    for arm in ARMS:
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        best = [min(common.eval_curve(r)[1]) for r in runs[arm]]
        tail = [float(np.mean([x["loss"] for x in r[-max(5, len(r) // 20) :]])) for r in runs[arm]]
        numbers[arm] = {"final": finals, "best": best, "train_tail": tail, "steps": steps[arm],
                        "distinct_sequences": seen[arm]}  # fmt: skip
    rows = []
    for arm in ARMS:
        gap = "" if arm == STATIC else _gap(numbers, arm)
        n = numbers[arm]
        epochs = n["steps"] * BATCH / sequences
        rows.append([arm, f"{n['steps']:,}", f"{epochs:.1f}", f"{n['distinct_sequences']:,}",
                     common.mean_std(n["final"]), common.mean_std(n["best"]),
                     common.mean_std(n["train_tail"]), gap])  # fmt: skip
    header = ["arm", "steps", "epochs of N", "distinct sequences drawn (first seed)",
              "final held-out loss", "best held-out loss", "train loss (last 5% of steps)",
              "static - arm (paired, ± 2 SE)"]  # fmt: skip
    table = common.markdown_table(header, rows)
    verdict, summary = _verdict(numbers, rounds)
    setup = (
        f"What changed since the first round: the first round trained 4 rounds on 19,289 sequences, so no "
        f"arm repeated data and RS2 without replacement was shuffled full data. Now N = {sequences:,} "
        f"sequences ({tokens:,} tokens, a random subsample of the training pool, proportional per source), "
        f"r = 10%, {rounds} rounds: RS2 without replacement goes through N {rounds * FRACTION:g} times and "
        f"the static subset sees its r*N sequences {rounds} times. The trainer derives each arm's steps from "
        f"`[rs2] rounds` for RS2 without replacement (a round's last partial batch is dropped, as the "
        f"reference's loader does) and every 10% arm trains those steps; full data (r = 100%) trains ten "
        f"times as many (about {rounds} epochs of N). Model: the one-layer GPT (common.SMALL_MODEL, "
        f"width 64), batch {BATCH} x 128 tokens, AdamW lr 2e-3, cosine over the steps run; seeds "
        f"{', '.join(map(str, seeds))} (a seed fixes the initialisation and the sampler in every arm). "
        "Held-out: 10% of documents by a hash of the id, at most 64 sequences per source. The last column "
        "is the paired difference from the static subset, mean over seeds ± two standard errors "
        "(positive: the arm is better)."
    )
    return {"tables": [table], "verdict": verdict, "setup": setup, "figure": _figure(runs, steps),
            "summary": summary, "numbers": {"sequences": sequences, "rounds": rounds, **numbers}}  # fmt: skip


def _gap(numbers, arm) -> str:
    gap, noise, _ = common.compare(numbers[arm]["final"], numbers[STATIC]["final"])
    return f"{gap:+.3f} ± {noise:.3f}"


def _verdict(numbers, rounds) -> tuple[str, dict]:
    final = {arm: float(np.mean(numbers[arm]["final"])) for arm in ARMS}
    gap, noise, outcome = common.compare(numbers[RS2]["final"], numbers[STATIC]["final"])
    w_gap, w_noise, w_outcome = common.compare(numbers[WITH]["final"], numbers[STATIC]["final"])
    f_gap, f_noise, _ = common.compare(numbers[FULL]["final"], numbers[RS2]["final"])
    r_gap, r_noise, r_outcome = common.compare(numbers[RS2]["final"], numbers[WITH]["final"])
    text = (
        f"At equal steps RS2 without replacement ended at {final[RS2]:.3f} vs {final[STATIC]:.3f} for the "
        f"static 10% subset (static - RS2 = {gap:+.3f} ± {noise:.3f}): the paper's claim {outcome} here. "
        f"With replacement RS2 ended at {final[WITH]:.3f} ({w_gap:+.3f} ± {w_noise:.3f} vs static: "
        f"{w_outcome}); without vs with replacement: {r_gap:+.3f} ± {r_noise:.3f} ({r_outcome} that "
        f"without is better). Full data for {rounds} epochs, ten times the steps, ended at "
        f"{final[FULL]:.3f}, {f_gap:+.3f} ± {f_noise:.3f} below RS2: what the other 90% of the compute "
        "bought."
    )
    static, rs2 = (np.mean(numbers[a]["train_tail"]) for a in (STATIC, RS2))
    if static < rs2 and final[STATIC] > final[RS2]:
        text += (
            f" The static subset's training loss ({static:.3f}) is below RS2's ({rs2:.3f}) while its "
            "held-out loss is higher: it memorised its 10%."
        )
    elif static < rs2:
        text += (
            f" The static subset's training loss ({static:.3f}, RS2 {rs2:.3f}) is well below its held-out "
            f"loss, so it is memorising its 10%, yet at {numbers[RS2]['steps']} steps that has not cost it "
            f"held-out loss: every 10% arm is still high on the loss curve (full data reaches "
            f"{final[FULL]:.3f} with ten times the steps), where repeats still teach what fresh data would."
        )
    best_full, final_full = np.mean(numbers[FULL]["best"]), final[FULL]
    if final_full - best_full > 0.01:
        text += f" Full data overfits by its end (best {best_full:.3f}, final {final_full:.3f})."
    summary = {
        "claim": f"RS2 at r = 10% for {rounds} rounds beats a static 10% subset at equal steps "
        "(Okanovic et al.)",
        "outcome": outcome,
        "figures": f"RS2 {final[RS2]:.3f} vs static {final[STATIC]:.3f} ({gap:+.3f} ± {noise:.3f}); "
        f"full data at 10x the steps {final[FULL]:.3f}",
    }
    return text, summary


def _figure(runs, steps):
    """Held-out loss (log steps: full data runs ten times longer), training loss, and
    each 10% arm minus the static subset, paired by seed."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.4))
    for arm in ARMS:
        common.curves(left, arm, [common.eval_curve(r) for r in runs[arm]])
        smooth = [_smoothed(r) for r in runs[arm]]
        common.curves(middle, arm, smooth)
        if arm in (RS2, WITH):
            gaps = [_minus(common.eval_curve(r), common.eval_curve(s))
                    for r, s in zip(runs[arm], runs[STATIC], strict=True)]  # fmt: skip
            common.curves(right, arm, gaps)
    for ax in (left, middle):
        ax.axvline(steps[RS2], color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
    left.set(xlabel="step (log)", ylabel="held-out loss (nats/token)",
             title="held-out loss (dotted: end of the 10% arms)")  # fmt: skip
    middle.set(xlabel="step (log)", ylabel="training loss", title="training loss (moving mean)")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set(xlabel="step", ylabel="minus the static subset's loss",
              title="paired by seed (below 0: better)")  # fmt: skip
    left.legend(fontsize=8)
    return fig


def _minus(curve, baseline) -> tuple[list[int], list[float]]:
    """`curve` minus `baseline`, read at `curve`'s steps (the arms' step counts differ by a few)."""
    steps, values = curve
    return steps, list(np.subtract(values, np.interp(steps, *baseline)))


def _smoothed(records, width: int = 25) -> tuple[list[int], list[float]]:
    losses = np.array([r["loss"] for r in records])
    width = max(1, min(width, len(losses) // 4))
    mean = np.convolve(losses, np.ones(width) / width, mode="valid")
    return [r["step"] for r in records[width - 1 :]], mean.tolist()


if __name__ == "__main__":
    main()
