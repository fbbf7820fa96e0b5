"""Experiment 6: CoLM mini-batch coresets, b = B/2 chosen from a big batch B (trained
unweighted, the reference's default, and CRAIG-weighted) vs a random batch of b vs the
full big batch B, the same number of steps (arXiv 2407.19580).

    .venv/bin/python bench/experiments/colm.py [--steps 300] [--seeds 0,1,2] [--quick]

Corpus: the bundled one after exact + fuzzy dedup, six sources mixed in
proportion to their tokens (as drawing uniformly from the pooled data does, the
paper's setting); 10% of documents (by a hash of the id) are held out. Arms:
full B = 16 rows a step; CoLM draws 16 and trains on its coreset of about 8,
each row with weight 1 (the reference scripts' SELECTION_METHOD=submodlib) or
with CRAIG weights, sum(w*l)/B (weightedsubmodlib); random b = 8. Training loss
is logged as the mean over the rows drawn before the step in every arm.
Besides held-out loss, on the unweighted CoLM run's model at a few steps: the
cosine between the full-model gradient of a fresh big batch and that of (i)
its coreset with CRAIG weights, (ii) the same rows unweighted, (iii) a coreset
picked from zeroth-order gradient estimates (the paper's estimator, one fixed
probe direction, its Adam moments kept from a fresh big batch every step),
(iv) a random subset of the same size. Memory: peak bytes of live tensors
during one training step (torch.cuda.max_memory_allocated on a GPU).
"""

from __future__ import annotations

import tempfile
import time
import weakref
from pathlib import Path

import common
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from curation.device import resolve
from curation.train.colm import CoLMConfig, CoLMSelector, select_coreset
from curation.train.data import ShardSource

BIG = 16
SMALL = 8
ARMS = {
    f"full B={BIG}": {"batch_size": BIG},
    f"CoLM b=B/2 (from B={BIG}), unweighted": {"batch_size": BIG, "colm": CoLMConfig()},
    f"CoLM b=B/2 (from B={BIG}), CRAIG-weighted": {"batch_size": BIG, "colm": CoLMConfig(weighted=True)},
    f"random b={SMALL}": {"batch_size": SMALL},
}
FULL, COLM, WEIGHTED, RANDOM = ARMS
ZEROTH = "CoLM b=B/2, zeroth-order selection"
# memory and time only (weighting changes neither)
MEMORY = {arm: ARMS[arm] for arm in (FULL, COLM, RANDOM)}
MEMORY[ZEROTH] = {"batch_size": BIG, "colm": CoLMConfig(gradient="zeroth")}
PER_SOURCE = 64  # held-out sequences per source
SUBSETS = [
    "CoLM coreset, weighted",
    "CoLM coreset, unweighted",
    "CoLM coreset, zeroth-order, unweighted",
    "random subset",
]


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps of every arm")
    p.add_argument("--probes", type=int, default=3, help="big batches per gradient-cosine point")
    common.run_experiment(p, "colm", "6. CoLM coresets: b = B/2 vs random b vs full B", run)


def run(args, work) -> dict:
    train_set, validation = common.corpus_with_heldout(args, work, per_source=8 if args.quick else PER_SOURCE)
    steps = 8 if args.quick else args.steps
    eval_every = 4 if args.quick else max(10, steps // 12)
    probes = 1 if args.quick else args.probes
    quarters = (2, 4) if args.quick else (1, 2, 3, 4)
    probe_at = sorted({max(1, q * steps // 4) for q in quarters})
    common.log(f"{steps} steps per arm; gradient cosine at steps {probe_at}, {probes} big batches each")

    runs: dict[str, list[list[dict]]] = {arm: [] for arm in ARMS}
    cosines: list[dict] = []
    for seed in common.seeds_of(args):
        for arm, changes in ARMS.items():
            config = common.train_config(steps, seed, eval_every, **changes)
            common.log(f"seed {seed}: {arm}")
            on_step = None
            if arm == COLM:
                on_step = _cosine_probe(work / "train", seed, probe_at, probes, cosines)
            out = work / f"run-{seed}-{list(ARMS).index(arm)}"
            runs[arm].append(common.train(work / "train", config, out, validation, on_step))
    measured = 2 if args.quick else 4  # the first step creates the Adam state and is not counted
    memory = {arm: _peak_memory(work / "train", common.train_config(measured, 0, 10**6, **c))
              for arm, c in MEMORY.items()}  # fmt: skip
    timing = _interleaved_timing(work / "train", 3 if args.quick else 20)
    for arm, seconds in timing.items():
        memory[arm]["seconds_per_step"] = seconds
    return _report(runs, cosines, memory, steps, probes, train_set.tokens)


# -- (b) gradient cosine to the big batch ---------------------------------------------


def _cosine_probe(shard_set, seed, probe_at, probes, sink):
    """At the chosen steps, draw `probes` fresh big batches (their own sampler, so
    training is untouched) and compare each subset's full-model gradient with
    the big batch's."""
    draws = ShardSource(str(shard_set), BIG, 10**6, common.PROPORTIONAL, None, 1000 + seed, 0)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    zeroth = CoLMSelector(CoLMConfig(gradient="zeroth"), seed=seed)

    def probe(trainer, step):
        model, optimizer = trainer.model, trainer.optimizer
        if step not in probe_at:
            # the zeroth-order selector's own moments follow training, one big batch a step
            batch = draws.next_batch(0, BIG)
            zeroth.select(model, optimizer, batch.sequences, batch.sources, generator)
            return
        for _ in range(probes):
            batch = draws.next_batch(0, BIG)
            sequences, sources = batch.sequences, batch.sources
            full, full_value = _gradient(model, sequences, torch.ones(BIG))
            core = select_coreset(model, optimizer, sequences, sources, CoLMConfig(), generator)
            picked = zeroth.select(model, optimizer, sequences, sources, generator)
            size = len(core.indices)
            rows = torch.from_numpy(rng.choice(BIG, size=size, replace=False))
            subsets = {
                SUBSETS[0]: (core.indices, core.weights),
                SUBSETS[1]: (core.indices, torch.ones(size)),
                SUBSETS[2]: (picked.indices, torch.ones(len(picked.indices))),
                SUBSETS[3]: (rows, torch.ones(size)),
            }
            record = {"seed": seed, "step": step, "rows": size, "small_sources": core.small_sources}
            for name, (picked, weights) in subsets.items():
                grad, value = _gradient(model, sequences[picked], weights)
                record[name] = float(torch.cosine_similarity(full, grad, dim=0))
                record[f"{name} (value projection)"] = float(
                    torch.cosine_similarity(full_value, value, dim=0)
                )
            sink.append(record)
        model.zero_grad(set_to_none=True)

    return probe


def _gradient(model, sequences, weights) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted batch's gradient: of the whole model, and of the last value
    projection alone (the layer CoLM's selection looks at)."""
    model.zero_grad(set_to_none=True)
    losses = model.example_losses(sequences)
    ((losses * weights).sum() / weights.sum()).backward()
    whole = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return whole, model.value_projection().weight.grad.flatten().clone()


# -- (c) peak memory of a step ---------------------------------------------------------


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage alive at once, counting every storage a torch op
    creates while the mode is on (views and in-place results share one), freed
    when its storage is collected. On CPU this is the step's own working set:
    activations, what selection computes, gradients, temporaries."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._add(value.untyped_storage())
        return out

    def _add(self, storage) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if key in self.seen or size == 0:
            return
        self.seen.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key, size) -> None:
        self.seen.discard(key)
        self.live -= size


def _peak_memory(shard_set, config) -> dict:
    """Peak bytes during each of a few steps after the first (which creates the
    Adam state), with a fresh trainer; the largest is reported."""
    device = resolve("auto")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = common.trainer(shard_set, config, Path(tmp), device=device)
        trainer._train_step()
        peaks = []
        for _ in range(config.steps - 1):
            if device.is_cuda:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                trainer._train_step()
                peaks.append(torch.cuda.max_memory_allocated() - before)
            else:
                with LiveTensorBytes() as tracker:
                    trainer._train_step()
                peaks.append(tracker.peak)
        state = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
        adam = sum(t.numel() * t.element_size() for s in trainer.optimizer.state.values() for t in s.values())
    what = "torch.cuda.max_memory_allocated" if device.is_cuda else "live tensor bytes (dispatch tracker)"
    return {
        "step_peak_bytes": max(peaks),
        "peaks": peaks,
        "weights_and_adam_bytes": state + adam,
        "what": what,
    }


def _interleaved_timing(shard_set, rounds: int) -> dict[str, float]:
    """Median seconds per step of each configuration, one step of each in turn,
    so that other load on the machine falls on all of them alike."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            arm: common.trainer(shard_set, common.train_config(rounds + 1, 0, 10**6, **c), Path(tmp) / str(i))
            for i, (arm, c) in enumerate(MEMORY.items())
        }
        times: dict[str, list[float]] = {arm: [] for arm in trainers}
        for trainer in trainers.values():
            trainer._train_step()  # creates the Adam state
        for _ in range(rounds):
            for arm, trainer in trainers.items():
                start = time.perf_counter()
                trainer._train_step()
                times[arm].append(time.perf_counter() - start)
    return {arm: float(np.median(t)) for arm, t in times.items()}


# -- report ------------------------------------------------------------------------------


def _macro(record_eval) -> float:
    return float(np.mean(list(record_eval["by_source"].values())))


def _report(runs, cosines, memory, steps, probes, tokens) -> dict:
    numbers: dict = {"steps": steps, "cosine_records": cosines, "memory": memory}
    keys = [*SUBSETS, *(f"{name} (value projection)" for name in SUBSETS)]
    by_subset = {key: [c[key] for c in cosines] for key in keys}
    rows = []
    # which subset of the cosine probe each arm trains on; the memory/time entry it shares
    cosine_of = {COLM: SUBSETS[1], WEIGHTED: SUBSETS[0], RANDOM: SUBSETS[3]}
    measured = {**{arm: arm for arm in MEMORY}, WEIGHTED: COLM}
    for arm, changes in ARMS.items():
        finals = [common.final_eval(r)["overall"] for r in runs[arm]]
        macro = [_macro(common.final_eval(r)) for r in runs[arm]]
        train = [float(np.mean([x["loss"] for x in r[-20:]])) for r in runs[arm]]
        in_run = [float(np.median([x["step_seconds"] for x in r])) for r in runs[arm]]
        trained = [np.mean([x.get("kept", changes["batch_size"]) for x in r]) for r in runs[arm]]
        selection = [np.mean([x.get("selection_seconds", 0.0) for x in r]) for r in runs[arm]]
        cosine = common.mean_std(by_subset[cosine_of[arm]]) if arm in cosine_of else "1"
        cost = memory[measured[arm]]
        rows.append([
            arm, f"{np.mean(trained):.1f}", common.mean_std(finals), common.mean_std(macro),
            common.mean_std(train), cosine, f"{cost['step_peak_bytes'] / 2**20:.1f}",
            f"{cost['seconds_per_step']:.3f}", f"{np.mean(selection):.3f}" if "colm" in changes else "-",
        ])  # fmt: skip
        numbers[arm] = {"final": finals, "macro": macro, "train_loss_last_20": train, "rows": trained,
                        "s_per_step_in_run": in_run, "selection_seconds": selection}  # fmt: skip
    table = common.markdown_table(
        ["arm", "rows trained / step", "final held-out loss", "mean over sources",
         "train loss (drawn rows, last 20 steps)", "grad cosine to B", "peak step MiB", "s / step",
         "of which selection"],
        rows,
    )  # fmt: skip
    cosine_rows = [
        [
            name,
            common.mean_std(by_subset[name]),
            common.mean_std([c[f"{name} (value projection)"] for c in cosines]),
        ]
        for name in SUBSETS
    ]
    wins = np.mean([c[SUBSETS[1]] > c[SUBSETS[3]] for c in cosines])  # the coreset as trained, unweighted
    cosine_table = common.markdown_table(
        [
            "subset of the same big batch",
            f"cosine to its gradient, whole model ({len(cosines)} batches)",
            "cosine, last value projection only",
        ],
        cosine_rows,
    )
    figure = _figure(runs, cosines, steps)
    verdict = _verdict(numbers, by_subset, wins, memory)
    kept = np.mean([c["rows"] for c in cosines])
    setup = (
        f"{len(runs[FULL])} seeds; equal steps: {steps} steps per arm of 128-token sequences, cosine lr "
        f"(2e-3) over the steps; {tokens:,} training tokens, sources mixed in proportion to their tokens. "
        f"Held-out loss is pooled over up to {PER_SOURCE} held-out sequences per source; train loss is the "
        f"mean over the rows each step drew (CoLM: its big batch B, before the step), comparable across "
        f"arms. Gradient cosine: full-model gradients on the unweighted CoLM run's model at steps "
        f"{sorted({c['step'] for c in cosines})}, "
        f"{probes} fresh big batches each (mean ± sd over all); the coreset kept {kept:.1f} rows on average "
        f"(small sources "
        f"are kept whole, so it can exceed B/2) and the random subset matches its size. Peak step memory: "
        f"{memory[FULL]['what']} during one training step (selection included), weights and Adam state "
        f"({memory[FULL]['weights_and_adam_bytes'] / 2**20:.1f} MiB, the same in every arm) excluded. "
        f"s/step: median of steps (selection included) run in turn across the configurations, on a shared "
        f"2-core CPU."
    )
    numbers["cosine_summary"] = {name: [float(np.mean(v)), float(np.std(v))] for name, v in by_subset.items()}
    tables = [table, cosine_table, _memory_table(memory)]
    return {"tables": tables, "verdict": verdict, "numbers": numbers, "setup": setup, "figure": figure}


def _figure(runs, cosines, steps):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, arm in enumerate(ARMS):
        common.curves(left, arm, [common.eval_curve(r) for r in runs[arm]], color=f"C{i}")
    left.set(xlabel="step", ylabel="held-out loss (nats/token)", title=f"{steps} steps each")
    left.legend()
    at = sorted({c["step"] for c in cosines})
    # each subset in the colour of the arm that trains on it (zeroth-order: C4)
    for name, color in zip(SUBSETS, ["C2", "C1", "C4", "C3"], strict=True):
        values = [[c[name] for c in cosines if c["step"] == s] for s in at]
        mean, sd = np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values])
        right.plot(at, mean, marker="o", label=name, color=color)
        right.fill_between(at, mean - sd, mean + sd, alpha=0.15, color=color)
    right.set(
        xlabel="step (unweighted CoLM run's model)",
        ylabel="cosine to big-batch gradient",
        title="gradient match",
    )
    right.legend(fontsize=8)
    return fig


def _memory_table(memory) -> str:
    full, seconds = memory[FULL]["step_peak_bytes"], memory[FULL]["seconds_per_step"]
    rows = [
        [
            arm,
            f"{m['step_peak_bytes'] / 2**20:.1f}",
            f"{m['step_peak_bytes'] / full:.2f}x",
            f"{m['seconds_per_step']:.3f}",
            f"{m['seconds_per_step'] / seconds:.2f}x",
        ]
        for arm, m in memory.items()
    ]
    return common.markdown_table(
        ["configuration", "peak step MiB", "vs full B", "s / step", "vs full B"], rows
    )


def _compare(value: float, other: float, noise: float) -> str:
    if abs(value - other) <= noise:
        return "within seed noise of"
    return "below" if value < other else "above"


def _verdict(numbers, by_subset, wins, memory) -> str:
    final = {arm: float(np.mean(numbers[arm]["final"])) for arm in ARMS}
    full, colm, weighted, rand = (final[a] for a in ARMS)
    seeds = len(numbers[FULL]["final"])
    noise = max(np.std(numbers[a]["final"], ddof=1) for a in ARMS) if seeds > 1 else 0.0
    mean = {name: float(np.mean(by_subset[name])) for name in by_subset}
    core, craig, zeroth, random = (mean[name] for name in (SUBSETS[1], SUBSETS[0], SUBSETS[2], SUBSETS[3]))
    core_v, random_v = (mean[f"{name} (value projection)"] for name in (SUBSETS[1], SUBSETS[3]))
    # the same seed gives the same initial model in every arm: compare seed by seed too
    worse_than = {arm: sum(c > o for c, o in zip(numbers[COLM]["final"], numbers[arm]["final"], strict=True))
                  for arm in (RANDOM, FULL)}  # fmt: skip
    cosine_held = "held" if core > random else "did not hold"
    loss_held = "held" if colm < full - noise else "did not hold"
    mem = {arm: memory[arm]["step_peak_bytes"] / memory[FULL]["step_peak_bytes"] for arm in (COLM, ZEROTH)}
    slower = {
        arm: memory[arm]["seconds_per_step"] / memory[FULL]["seconds_per_step"] for arm in (COLM, ZEROTH)
    }
    return (
        f"Gradient match: the coreset as the reference trains it (unweighted) had cosine {core:.3f} to the "
        f"big batch's gradient vs {random:.3f} for a random subset of the same size (higher in {wins:.0%} of "
        f"batches), so the paper's check {cosine_held} here (last value projection alone, the layer the "
        f"selection looks at: {core_v:.3f} vs {random_v:.3f}); with CRAIG weights the same rows gave "
        f"{craig:.3f}, and the zeroth-order selection {zeroth:.3f}. Loss at equal steps: CoLM unweighted "
        f"ended at {colm:.3f} and CRAIG-weighted at {weighted:.3f}, vs random b {rand:.3f} and full B "
        f"{full:.3f} (largest seed sd {noise:.3f}): unweighted CoLM was {_compare(colm, rand, noise)} random "
        f"b and {_compare(colm, full, noise)} full B; seed by seed it was worse than random b in "
        f"{worse_than[RANDOM]} of {seeds} and worse than full B in {worse_than[FULL]} of {seeds}, so the "
        f"paper's result (CoLM at b beats training on B) {loss_held} here. Memory: CoLM's step peaked at "
        f"{mem[COLM]:.2f}x the full batch's with exact per-example gradients and {mem[ZEROTH]:.2f}x with "
        f"the zeroth-order estimate, and its steps took {slower[COLM]:.2f}x / {slower[ZEROTH]:.2f}x the "
        f"full batch's time."
    )


if __name__ == "__main__":
    main()
