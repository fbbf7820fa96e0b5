"""Experiment 3: no dedup vs exact vs fuzzy (local) vs fuzzy (global) dedup, the
same number of training tokens (SlimPajama-DC, arXiv 2309.10818).

    .venv/bin/python bench/experiments/dedup.py [--fraction 0.08] [--seeds 0,1,2] [--quick]

Corpus: the standard library .py files (no site-packages, no test folders) of
every Python under pyenv, one source per version (cpython-2.7 ... cpython-3.13):
the same module in nine versions is an exact or near duplicate across sources,
like a page re-crawled nine times, which per-source (local) dedup cannot see.
Modules are sampled by a hash of their path inside the lib (bench/build_corpus.py),
so a module is in every version or in none. 10% of all module paths (sampled or
not) are held out with every version; the newest copy of each is the validation
set. All arms dedup the same pool (min_chars=0, so every removal is a duplicate;
duplicate groups keep their newest-version member), pack it with one tokenizer
trained on the pool, and train the same steps x batch x context: about one epoch
of the globally deduplicated pool.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path

import common
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.storage import DOCUMENTS_SCHEMA, write_dataset
from curation.storage.shards import ShardReader

_spec = importlib.util.spec_from_file_location("build_corpus", common.HERE.parent / "build_corpus.py")
build_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_corpus)

HELD_OUT = 0.1  # fraction of module paths held out (every version of them)
TEST_DIRS = {"test", "tests", "idle_test"}  # mostly fixtures; they would dwarf the library code
BATCH, CONTEXT = 16, common.SEQ_LEN - 1
ARMS = ("no dedup", "exact (global)", "fuzzy (local)", "fuzzy (global)")


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.08, help="share of module paths sampled")
    common.run_experiment(p, "dedup", "3. No dedup vs exact vs fuzzy (local) vs fuzzy (global)", run)


def run(args, work: Path) -> dict:
    fraction = 0.008 if args.quick else args.fraction
    pool, heldout, corpus = build_documents(work, fraction)
    tokenizer = common.shared_tokenizer(pool, work / "tokenizer.json")
    common.shards(heldout, work / "heldout", tokenizer)
    validation = spread(common.sequences_of(work / "heldout"), 32 if args.quick else 256)
    arms = {arm: prepare_arm(arm, pool, tokenizer, work, corpus["sources"]) for arm in ARMS}
    epoch = arms["fuzzy (global)"]["sequences"]
    steps = 20 if args.quick else max(50, round(epoch / BATCH))
    eval_every = 10 if args.quick else max(10, steps // 12)
    common.log(f"{steps} steps x {BATCH} x {CONTEXT} tokens for every arm")
    runs: dict[str, list[list[dict]]] = {arm: [] for arm in ARMS}
    for seed in common.seeds_of(args):
        for arm in ARMS:
            common.log(f"seed {seed}: {arm}")
            config = common.train_config(steps, seed, eval_every)
            out = work / f"run-{seed}-{slug(arm)}"
            runs[arm].append(common.train(work / f"train-{slug(arm)}", config, out, validation))
    return _report(runs, arms, steps, corpus, validation, common.seeds_of(args))


# -- corpus -------------------------------------------------------------------


def stdlib_folders() -> tuple[list[tuple[str, Path]], bool]:
    """(version, lib folder) of every pyenv Python, else this interpreter's stdlib alone."""
    libs = build_corpus.python_libs() if build_corpus.PYENV.exists() else []
    if libs:
        return libs, True
    return [
        (f"{sys.version_info.major}.{sys.version_info.minor}", Path(sysconfig.get_paths()["stdlib"]))
    ], False


def module_files(lib: Path):
    for path in sorted(lib.rglob("*.py")):
        parts = path.relative_to(lib).parts
        if "site-packages" not in parts and not TEST_DIRS.intersection(parts):
            yield str(path.relative_to(lib)), path


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def held_out(module: str) -> bool:
    # Salted: build_corpus.sampled() thresholds the same unsalted hash, so an
    # unsalted split would hold out every sampled module when fraction < 0.1.
    # Held-out modules are drawn from all modules, sampled or not.
    return common.stable_fraction(f"heldout:{module}") < HELD_OUT


def build_documents(work: Path, fraction: float) -> tuple[str, str, dict]:
    """Documents datasets of the training pool (every version of the kept modules)
    and of the held-out set (the newest copy of each held-out module)."""
    libs, pyenv = stdlib_folders()
    rows = {"id": [], "source": [], "text": []}
    newest: dict[str, tuple[tuple[int, ...], str, str]] = {}
    for version, lib in sorted(libs, key=lambda v: version_key(v[0])):
        source = f"cpython-{version}"
        for module, path in module_files(lib):
            held = held_out(module)
            if not held and not build_corpus.sampled(module, fraction):
                continue
            text = build_corpus.read_text(path)
            if text is None:
                continue
            if held:  # drawn from every module, so validation spans many of them
                newest[module] = (version_key(version), f"{source}/{module}", text)
                continue
            rows["id"].append(f"{source}/{module}")
            rows["source"].append(source)
            rows["text"].append(text)
    held = {"id": [], "source": [], "text": []}
    for _, doc_id, text in sorted(newest.values(), key=lambda v: v[1]):
        held["id"].append(doc_id)
        held["source"].append(doc_id.split("/", 1)[0])
        held["text"].append(text)
    pool = write_documents(rows, work / "corpus" / "pool.parquet", work / "pool")
    test = write_documents(held, work / "corpus" / "heldout.parquet", work / "heldout-documents")
    sources = sorted({s for s in rows["source"]}, key=lambda s: version_key(s.split("-")[1]))
    corpus = {
        "pyenv": pyenv,
        "sources": sources,
        "fraction": fraction,
        "pool_documents": len(rows["id"]),
        "pool_modules": len({i.split("/", 1)[1] for i in rows["id"]}),
        "pool_mb": sum(len(t.encode()) for t in rows["text"]) / 1e6,
        "heldout_documents": len(held["id"]),
    }
    common.log(
        f"pool: {corpus['pool_documents']} documents, {corpus['pool_mb']:.1f} MB; held out {len(newest)}"
    )
    return pool, test, corpus


def write_documents(rows: dict[str, list[str]], raw: Path, out: Path) -> str:
    """The corpus as Parquet (id, source, text), then as a documents dataset with those ids."""
    table = pa.table(rows, schema=build_corpus.SCHEMA)
    raw.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, raw)
    n = table.num_rows
    full = pa.table(
        {
            **{name: table.column(name) for name in ("id", "source", "text")},
            "n_chars": pc.utf8_length(table.column("text")).cast(pa.int64()),
            "meta": pa.nulls(n, pa.string()),
            "origin": pa.array([f"{raw.name}:{i + 1}" for i in range(n)], pa.string()),
        },
        schema=DOCUMENTS_SCHEMA,
    )
    write_dataset(out, full.to_batches(8192), DOCUMENTS_SCHEMA, "documents")
    return str(out)


# -- arms ---------------------------------------------------------------------


def slug(arm: str) -> str:
    return arm.replace(" ", "-").replace("(", "").replace(")", "")


def dedup_config(arm: str, sources: list[str]) -> DedupConfig | None:
    """min_chars=0 everywhere: removals are duplicates only. A duplicate group keeps
    its newest-version member (the freshest crawl), as the held-out copy is the newest."""
    newest_first = tuple(reversed(sources))
    return {
        "no dedup": None,
        "exact (global)": DedupConfig(mode="global", fuzzy=False, min_chars=0, source_priority=newest_first),
        "fuzzy (local)": DedupConfig(mode="local", min_chars=0),
        "fuzzy (global)": DedupConfig(mode="global", min_chars=0, source_priority=newest_first),
    }[arm]


def prepare_arm(arm: str, pool: str, tokenizer: Path, work: Path, sources: list[str]) -> dict:
    config = dedup_config(arm, sources)
    removed = {"exact": 0, "near": 0}
    selections = []
    if config is not None:
        folder = work / f"dedup-{slug(arm)}"
        if not (folder / "documents" / "_manifest.json").exists():
            dedup_stage(pool, str(folder), config)
        decisions = pq.read_table(folder / "decisions.parquet", columns=["kept", "reason"])
        reasons = decisions.column("reason").to_pylist()
        removed = {"exact": reasons.count("exact_duplicate"), "near": reasons.count("near_duplicate")}
        selections = [folder]
    report = common.shards(pool, work / f"train-{slug(arm)}", tokenizer, selections)
    reader = ShardReader(str(work / f"train-{slug(arm)}"))
    sequences = sum(reader.num_sequences(name) for name in reader.sources)
    common.log(f"{arm}: {report.selected} documents kept, removed {removed}, {sequences} sequences")
    oldest = report.per_source_tokens.get(sources[0], 0) / max(1, report.tokens)
    return {"kept": report.selected, "removed": removed, "tokens": report.tokens, "sequences": sequences,
            "oldest_share": oldest}  # fmt: skip


def spread(by_source: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """At most `count` held-out sequences, evenly spaced over all of them (one
    set: the trainer's overall loss is a token mean, so sources need no balance)."""
    rows = torch.cat([by_source[name] for name in sorted(by_source)])
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    return {"heldout": rows[torch.from_numpy(picks)]}


# -- report -------------------------------------------------------------------


def _report(runs, arms, steps, corpus, validation, seeds) -> dict:
    budget = steps * BATCH * CONTEXT
    rows, numbers = [], {}
    finals = {arm: [common.final_eval(r)["overall"] for r in runs[arm]] for arm in ARMS}
    for arm in ARMS:
        info = arms[arm]
        epochs = steps * BATCH / info["sequences"]
        rows.append(
            [
                arm,
                f"{info['kept']:,}",
                f"{info['removed']['exact']:,}",
                f"{info['removed']['near']:,}",
                f"{info['tokens']:,}",
                f"{epochs:.2f}",
                f"{info['oldest_share']:.0%}",
                common.mean_std(finals[arm]),
            ]
        )
        numbers[arm] = {**info, "epochs": epochs, "final": finals[arm]}
    header = ["arm", "documents kept", "removed: exact", "removed: near", "training tokens", "epochs",
              f"{corpus['sources'][0]} share of tokens", "final held-out loss"]  # fmt: skip
    table = common.markdown_table(header, rows)
    fig = _figure(runs, arms, steps)
    mean = {arm: float(np.mean(finals[arm])) for arm in ARMS}
    verdict = _verdict(mean, finals, arms, corpus["sources"][0])
    setup = _setup(corpus, steps, numbers["fuzzy (global)"]["epochs"], validation, seeds)
    return {"tables": [table], "verdict": verdict, "setup": setup, "figure": fig,
            "numbers": {"steps": steps, "tokens_per_arm": budget, "pyenv": corpus, **numbers}}  # fmt: skip


def _setup(corpus: dict, steps: int, epochs: float, validation: dict, seeds: list[int]) -> str:
    where = (
        f"the standard library of {len(corpus['sources'])} Pythons under pyenv "
        f"({corpus['sources'][0]} .. {corpus['sources'][-1]}), one source per version"
        if corpus["pyenv"]
        else f"no pyenv here, so only this interpreter's standard library ({corpus['sources'][0]}): "
        "one source, so local and global dedup are the same and few duplicates exist"
    )
    held = sum(len(v) for v in validation.values())
    return (
        f"Corpus: {where}, test folders left out, {corpus['fraction']:.1%} of module paths sampled: "
        f"{corpus['pool_documents']:,} training-pool documents ({corpus['pool_modules']} modules, "
        f"{corpus['pool_mb']:.1f} MB); {corpus['heldout_documents']} held-out modules ({HELD_OUT:.0%} of "
        f"all module paths, every version kept out of the pool), scored on {held} sequences of {CONTEXT} "
        "tokens spread over their newest copies. Dedup: SlimPajama recipe (character 13-grams, 128 "
        "permutations, 9 x 13 LSH, no verification), min_chars=0 in every arm so every removal is a "
        "duplicate, a duplicate group keeps its newest-version member (source_priority newest first). "
        f"Equal tokens: every arm trains {steps} steps x {BATCH} x {CONTEXT} = {steps * BATCH * CONTEXT:,} "
        f"tokens ({epochs:.2f} epochs of the globally deduplicated pool), one tokenizer trained on the "
        f"pool, seeds {', '.join(map(str, seeds))}."
    )


def _figure(runs, arms, steps):
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for arm, style in zip(ARMS, ("-", "-", "--", "-"), strict=True):
        common.curves(ax, arm, [common.eval_curve(r) for r in runs[arm]])
        ax.lines[-1].set_linestyle(style)  # dashed: local often equals no dedup exactly
    ax.set(xlabel="step", ylabel="held-out loss (nats/token)", title=f"{steps} steps each, batch 16 x 128")
    ax.legend()
    x = np.arange(len(ARMS))
    exact = [arms[a]["removed"]["exact"] for a in ARMS]
    near = [arms[a]["removed"]["near"] for a in ARMS]
    bars.bar(x, exact, label="exact duplicates")
    bars.bar(x, near, bottom=exact, label="near duplicates")
    bars.set_xticks(x, [a.replace(" (", "\n(") for a in ARMS])
    bars.set(ylabel="documents removed", title="documents removed")
    bars.legend()
    return fig


def _verdict(mean: dict[str, float], finals: dict[str, list[float]], arms: dict, oldest: str) -> str:
    def gap(a: str, b: str) -> str:
        """b - a, with whether it exceeds the seeds' spread (2 x the larger sd)."""
        diff = mean[b] - mean[a]
        sd = max(np.std(finals[a], ddof=1), np.std(finals[b], ddof=1)) if len(finals[a]) > 1 else 0.0
        return f"{diff:+.3f}" + ("" if abs(diff) > 2 * sd else ", within seed noise")

    removed = {arm: sum(arms[arm]["removed"].values()) for arm in ARMS}
    glob, local, none = mean["fuzzy (global)"], mean["fuzzy (local)"], mean["no dedup"]
    best = min([a for a in ARMS[1:] if removed[a]] or ARMS[1:], key=mean.get)  # arms that removed any
    direction = "held" if glob < local else "did not hold"
    versus_none = "beat" if mean[best] < none else "did not beat"
    return (
        f"Local dedup removed {removed['fuzzy (local)']:,} documents, global {removed['fuzzy (global)']:,} "
        f"(exact-only global {removed['exact (global)']:,}). At equal tokens fuzzy global dedup ended at "
        f"{glob:.3f} vs {local:.3f} for local (local - global = {gap('fuzzy (global)', 'fuzzy (local)')}): "
        f"the paper's direction (global beats local) {direction} here. Against no dedup ({none:.3f}), "
        f"exact-only global ended at {mean['exact (global)']:.3f} and fuzzy global at {glob:.3f}; the best "
        f"dedup arm ({best}) {versus_none} no dedup (none - best = {gap(best, 'no dedup')}). Dedup also "
        f"changes the mix: {oldest} is {arms['fuzzy (global)']['oldest_share']:.0%} of the globally "
        f"deduplicated tokens vs {arms['no dedup']['oldest_share']:.0%} without dedup, while the held-out "
        "copies are the newest versions."
    )


if __name__ == "__main__":
    main()
