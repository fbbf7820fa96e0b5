"""Experiment 3: no dedup vs exact vs fuzzy (local) vs fuzzy (global) dedup, equal
training tokens, on a corpus with duplicates inside sources and across them
(SlimPajama-DC, arXiv 2309.10818).

    .venv/bin/python bench/experiments/dedup.py [--corpus bundled|docs] [--sequences 2400]
        [--epochs 2] [--seeds 0,1,2,3,4] [--jobs 2] [--quick]

Corpus. docs: the installed documentation as ingested, with its real duplicates
(license texts across copyright files, changelogs shared by the binary packages
of one source package, templated man pages), nearly all inside one source; so
edited copies of some documents are planted into other sources. bundled: the
standard library corpus after the usual exact + fuzzy dedup has almost no
duplicates, so edited copies are planted both inside and across sources. The
rates are stated in the report (PLANTS below). Copies are word-level edits of
their original at a rate of 0%, 1%, 3% or 8% of the words (exact, easy, borderline
and hard for 13-gram MinHash at the recipe's 9 x 13 bands).

Held-out: duplicate groups (global exact + fuzzy dedup of the whole corpus,
joined with the planted copy links) are held out whole, by a hash of the
group's smallest id, so no held-out document has a copy in any training pool.
Scored on two sets: one document per held-out group (the primary number: new
documents) and every member of the held-out groups.

Arms: each dedups the same training pool (min_chars=0, so every removal is a
duplicate), packs it with one tokenizer trained on the pool, and trains the same
steps: `--epochs` passes over the smallest arm (fuzzy global). The pool is a
random set of whole groups sized so that arm has about `--sequences` sequences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import common
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from curation.selectors.dedup import DedupConfig
from curation.stages import dedup_stage
from curation.storage import DOCUMENTS_SCHEMA, Dataset, write_dataset
from curation.storage.shards import ShardReader
from curation.storage.tokenizer import load_tokenizer

ARMS = ("no dedup", "exact (global)", "fuzzy (local)", "fuzzy (global)")
NONE, EXACT, LOCAL, GLOBAL = ARMS
CONFIGS = {
    NONE: None,
    EXACT: DedupConfig(mode="global", fuzzy=False, min_chars=0),
    LOCAL: DedupConfig(mode="local", min_chars=0),
    GLOBAL: DedupConfig(mode="global", min_chars=0),
}
EDIT_RATES = (0.0, 0.01, 0.03, 0.08)  # share of words replaced in a copy, one drawn per copy
HELD_OUT = 0.1  # share of duplicate groups held out
UNIQUE, COPIES = "held-out, one per group", "held-out, every copy"


@dataclass(frozen=True)
class Plant:
    """Edited copies planted into a corpus: `share` of the documents (by a hash of
    the id) get 1 + Geometric(1/2) - 1 copies (mean 2); each copy stays in its
    source with probability `inside`, else goes to another source drawn uniformly."""

    share: float
    inside: float


PLANTS = {"bundled": Plant(share=0.2, inside=0.5), "docs": Plant(share=0.1, inside=0.0)}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], seeds="0,1,2,3,4")
    p.add_argument("--sequences", type=int, default=2400, help="sequences of the smallest arm (about)")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the smallest arm")
    p.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    common.run_experiment(p, "dedup", "3. No dedup vs exact vs fuzzy (local) vs fuzzy (global)", run)


def run(args, work: Path) -> dict:
    plant = PLANTS[args.corpus]
    base = common.corpus_documents(args, work)
    if args.corpus == "bundled":
        base = common.deduplicated(base, work)  # the standard corpus: few duplicates left
    documents, planted = plant_copies(base, work / "corpus", plant)
    groups = duplicate_groups(documents, work / "groups", planted)
    not_held = common.selection_table(groups["ids"], ~groups["held"], work / "split" / "pool-all.parquet")
    tokenizer = common.shared_tokenizer(documents, work / "tokenizer.json", keep=not_held)
    target = 300 if args.quick else args.sequences
    pool = training_pool(documents, groups, tokenizer, target, work / "pool")
    validation = heldout_sets(documents, groups, tokenizer, work, 16 if args.quick else 128)
    arms = {arm: prepare_arm(arm, pool, tokenizer, work, planted) for arm in ARMS}
    smallest = min(info["sequences"] for info in arms.values())
    steps = int(np.ceil(args.epochs * smallest / 16))
    eval_every = max(1, steps // (3 if args.quick else 10))
    common.log(f"{steps} steps x 16 x 128 tokens per arm ({args.epochs:g} epochs of {smallest} sequences)")
    tasks = [
        (arm, seed, common.train_config(steps, seed, eval_every, model=common.SMALL_MODEL), work, validation)
        for seed in common.seeds_of(args)
        for arm in ARMS
    ]
    runs: dict[str, dict[int, list[dict]]] = {arm: {} for arm in ARMS}
    for arm, seed, records in common.parallel_map(_train_one, tasks, 1 if args.quick else args.jobs):
        runs[arm][seed] = records
    runs = {arm: [by_seed[s] for s in sorted(by_seed)] for arm, by_seed in runs.items()}
    corpus = {"plant": plant, "documents": len(groups["ids"]), "planted": len(planted),
              "groups": groups["count"], "held_groups": groups["held_count"],
              "held_documents": int(groups["held"].sum()),
              "pool_documents": Dataset.open(pool).rows}  # fmt: skip
    return _report(runs, arms, steps, corpus, validation, args)


def _train_one(task) -> tuple[str, int, list[dict]]:
    arm, seed, config, work, validation = task
    records = common.train(work / f"train-{slug(arm)}", config, work / f"run-{seed}-{slug(arm)}", validation)
    common.log(f"seed {seed}: {arm} done")
    return arm, seed, records


def slug(arm: str) -> str:
    return arm.replace(" ", "-").replace("(", "").replace(")", "")


# -- corpus -------------------------------------------------------------------


def plant_copies(documents: str, out: Path, plant: Plant) -> tuple[str, dict[str, str]]:
    """`documents` plus edited copies (a new documents dataset), and {copy id: original id}."""
    table = Dataset.open(documents).read_table(["id", "source", "text", "meta", "origin"])
    ids, sources, texts = (table.column(c).to_pylist() for c in ("id", "source", "text"))
    names = sorted(set(sources))
    rows = {"id": [], "source": [], "text": [], "origin": []}
    planted = {}
    for doc_id, source, text in zip(ids, sources, texts, strict=True):
        if common.stable_fraction("plant:" + doc_id) >= plant.share:
            continue
        rng = np.random.default_rng(int(common.stable_fraction("copies:" + doc_id) * 2**63))
        others = [s for s in names if s != source]
        for k in range(int(rng.geometric(0.5))):
            inside = not others or rng.random() < plant.inside
            target = source if inside else others[rng.integers(len(others))]
            copy_id = f"{target}:{doc_id.split(':', 1)[-1]}~copy{k}"
            rows["id"].append(copy_id)
            rows["source"].append(target)
            rows["text"].append(edited(text, EDIT_RATES[rng.integers(len(EDIT_RATES))], rng))
            rows["origin"].append(f"copy of {doc_id}")
            planted[copy_id] = doc_id
    copies = pa.table(
        {
            "id": pa.array(rows["id"], pa.string()),
            "source": pa.array(rows["source"], pa.string()),
            "text": pa.array(rows["text"], pa.string()),
            "n_chars": pa.array([len(t) for t in rows["text"]], pa.int64()),
            "meta": pa.nulls(len(rows["id"]), pa.string()),
            "origin": pa.array(rows["origin"], pa.string()),
        },
        schema=DOCUMENTS_SCHEMA,
    )
    folder = out / "planted"
    if not (folder / "manifest.json").exists():
        batches = [*Dataset.open(documents).iter_batches(), *copies.to_batches(4096)]
        write_dataset(folder, batches, DOCUMENTS_SCHEMA, "documents")
    return str(folder), planted


def edited(text: str, rate: float, rng: np.random.Generator) -> str:
    """`text` with `rate` of its words replaced by other words of it (whitespace kept)."""
    if rate == 0:
        return text
    parts = re.split(r"(\s+)", text)
    words = [i for i in range(0, len(parts), 2) if parts[i]]
    if len(words) < 2:
        return text
    for i in rng.choice(words, size=rng.binomial(len(words), rate), replace=False):
        parts[i] = parts[words[rng.integers(len(words))]]
    return "".join(parts)


def duplicate_groups(documents: str, out: Path, planted: dict[str, str]) -> dict:
    """Duplicate groups of the whole corpus: global exact + fuzzy dedup clusters joined
    with the planted copy links; a group is held out by a hash of its smallest id."""
    if not (out / "decisions.parquet").exists():
        dedup_stage(documents, str(out), DedupConfig(mode="global", min_chars=0))
    decisions = pq.read_table(out / "decisions.parquet", columns=["id", "kept", "cluster"])
    ids = decisions.column("id").to_pylist()
    parent = {i: i for i in ids}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    links = [*zip(ids, decisions.column("cluster").to_pylist(), strict=True), *planted.items()]
    for a, b in links:
        if b is not None and b in parent:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # the smallest id is the root
    roots = [root(i) for i in ids]
    held = np.array([common.stable_fraction("group:" + r) < HELD_OUT for r in roots])
    kept = decisions.column("kept").to_numpy(zero_copy_only=False)
    # One per held-out group: the smallest id among the members global dedup keeps.
    first = {}
    for position in sorted(range(len(ids)), key=lambda p: ids[p]):
        if held[position] and kept[position]:
            first.setdefault(roots[position], position)
    unique = np.zeros(len(ids), dtype=bool)
    unique[list(first.values())] = True
    return {"ids": ids, "roots": roots, "held": held, "unique": unique, "count": len(set(roots)),
            "held_count": len({r for r, h in zip(roots, held, strict=True) if h})}  # fmt: skip


def training_pool(documents: str, groups: dict, tokenizer: Path, target: int, out: Path) -> str:
    """Whole training groups in a hash order until their deduplicated tokens (one
    member per group) reach `target` sequences (the smallest arm's size), as a
    documents dataset of its own (the arms dedup it)."""
    ids, roots = groups["ids"], groups["roots"]
    text_column = Dataset.open(documents).read_table(["text"]).column("text")
    texts = dict(zip(ids, text_column.to_pylist(), strict=True))
    members: dict[str, list[int]] = {}
    for position, r in enumerate(roots):
        if not groups["held"][position]:
            members.setdefault(r, []).append(position)
    encoder = load_tokenizer(str(tokenizer))
    chosen = np.zeros(len(ids), dtype=bool)
    tokens = 0
    for r in sorted(members, key=lambda r: common.stable_fraction("pool:" + r)):
        if tokens >= target * (common.SEQ_LEN - 1):
            break
        chosen[members[r]] = True
        tokens += len(encoder.encode(texts[r]).ids) + 1
    if not (out / "manifest.json").exists():
        data = Dataset.open(documents)
        keep = set(np.asarray(ids)[chosen].tolist())
        batches = (
            b.filter(pa.array([i in keep for i in b.column("id").to_pylist()])) for b in data.iter_batches()
        )
        write_dataset(out, batches, DOCUMENTS_SCHEMA, "documents")
    return str(out)


def heldout_sets(
    documents: str, groups: dict, tokenizer: Path, work: Path, count: int
) -> dict[str, torch.Tensor]:
    """The two held-out sets, packed with the shared tokenizer."""
    out = {}
    for name, mask in ((UNIQUE, groups["unique"]), (COPIES, groups["held"])):
        table = common.selection_table(groups["ids"], mask, work / "split" / f"{slug(name)}.parquet")
        common.shards(documents, work / f"heldout-{slug(name)}", tokenizer, [table])
        out[name] = spread(common.sequences_of(work / f"heldout-{slug(name)}"), count)
    return out


def spread(by_source: dict[str, torch.Tensor], count: int) -> torch.Tensor:
    """At most `count` sequences, evenly spaced over all of them."""
    rows = torch.cat([by_source[name] for name in sorted(by_source)])
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
    return rows[torch.from_numpy(picks)]


# -- arms ---------------------------------------------------------------------


def prepare_arm(arm: str, pool: str, tokenizer: Path, work: Path, planted: dict) -> dict:
    """Dedup the pool the arm's way, pack what it keeps; count what it removed."""
    config = CONFIGS[arm]
    removed = {"exact": 0, "near": 0, "inside": 0, "across": 0, "planted": 0}
    selections = []
    if config is not None:
        folder = work / f"dedup-{slug(arm)}"
        if not (folder / "decisions.parquet").exists():
            dedup_stage(pool, str(folder), config)
        decisions = pq.read_table(folder / "decisions.parquet", columns=["id", "source", "reason", "cluster"])
        removed = _removals(decisions.to_pylist(), planted)
        selections.append(folder)
    report = common.shards(pool, work / f"train-{slug(arm)}", tokenizer, selections)
    reader = ShardReader(str(work / f"train-{slug(arm)}"))
    sequences = sum(reader.num_sequences(name) for name in reader.sources)
    copies = sum(1 for i in _ids(pool) if i in planted)
    common.log(f"{arm}: {report.selected} documents kept, removed {removed}, {sequences} sequences")
    return {"kept": report.selected, "removed": removed, "tokens": report.tokens, "sequences": sequences,
            "planted_in_pool": copies}  # fmt: skip


def _ids(documents: str) -> list[str]:
    return Dataset.open(documents).read_table(["id"]).column("id").to_pylist()


def _removals(decisions: list[dict], planted: dict) -> dict[str, int]:
    """Removed documents by kind, and whether the kept copy is in the same source."""
    source = {d["id"]: d["source"] for d in decisions}
    out = {"exact": 0, "near": 0, "inside": 0, "across": 0, "planted": 0}
    for d in decisions:
        if d["reason"] not in ("exact_duplicate", "near_duplicate"):
            continue
        out["exact" if d["reason"] == "exact_duplicate" else "near"] += 1
        out["inside" if source.get(d["cluster"]) == d["source"] else "across"] += 1
        out["planted"] += d["id"] in planted
    return out


# -- report -------------------------------------------------------------------


def _report(runs, arms, steps, corpus, validation, args) -> dict:
    finals = {arm: {name: [common.final_eval(r)["by_source"][name] for r in runs[arm]] for name in validation}
              for arm in ARMS}  # fmt: skip
    rows = []
    for arm in ARMS:
        info, removed = arms[arm], arms[arm]["removed"]
        gap, noise, _ = common.compare(finals[arm][UNIQUE], finals[NONE][UNIQUE])
        rows.append([
            arm, f"{info['kept']:,}", f"{removed['exact']:,} / {removed['near']:,}",
            f"{removed['inside']:,} / {removed['across']:,}",
            f"{removed['planted']:,} of {info['planted_in_pool']:,}", f"{info['tokens']:,}",
            f"{steps * 16 / info['sequences']:.2f}", common.mean_std(finals[arm][UNIQUE]),
            common.mean_std(finals[arm][COPIES]), "" if arm == NONE else f"{gap:+.3f} ± {noise:.3f}",
        ])  # fmt: skip
    header = ["arm", "documents kept", "removed: exact / near", "removed: inside / across sources",
              "planted copies removed", "training tokens", "epochs", f"loss: {UNIQUE}", f"loss: {COPIES}",
              "no dedup - arm (one per group, ± 2 SE)"]  # fmt: skip
    table = common.markdown_table(header, rows)
    verdict, summary = _verdict(finals, arms)
    numbers = {"steps": steps, "corpus": {**corpus, "plant": vars(corpus["plant"])}, "final": finals,
               "arms": arms}  # fmt: skip
    return {"tables": [table], "verdict": verdict, "setup": _setup(corpus, steps, arms, validation, args),
            "figure": _figure(runs, arms, steps), "summary": summary, "numbers": numbers}  # fmt: skip


def _setup(corpus, steps, arms, validation, args) -> str:
    plant = corpus["plant"]
    where = (
        "the installed documentation as ingested (real duplicates, nearly all inside one source)"
        if args.corpus == "docs"
        else "the bundled corpus after the standard exact + fuzzy dedup (few duplicates left)"
    )
    placed = "all into another source"
    if plant.inside > 0:
        placed = f"{plant.inside:.0%} in their own source, the rest in another"
    seeds = args.seeds if not args.quick else common.seeds_of(args)[0]
    return (
        "What changed since the first round: the first round's corpus (nine Python versions, one source "
        "each) had no duplicates inside a source, so local dedup removed nothing, and it trained one epoch "
        "of the smallest arm with held-out modules whose older versions could differ from the trained ones. "
        f"Now: {where}, plus {corpus['planted']:,} planted copies of {plant.share:.0%} of the documents "
        f"({placed}; word edits at {', '.join(f'{r:.0%}' for r in EDIT_RATES)} of the words, one rate per "
        f"copy); {corpus['documents']:,} documents in {corpus['groups']:,} duplicate groups (global exact + "
        f"fuzzy dedup joined with the planted links); {corpus['held_groups']:,} groups "
        f"({corpus['held_documents']:,} documents, {HELD_OUT:.0%} by a hash of the group's smallest id) held "
        f"out whole. Training pool: {corpus['pool_documents']:,} documents, whole groups in a hash order. "
        "Every arm dedups that pool (SlimPajama recipe: character 13-grams, 128 permutations, 9 x 13 bands, "
        "min_chars=0 so every removal is a duplicate; local = one index per source) and trains "
        f"{steps} steps x 16 x 128 tokens ({args.epochs:g} epochs of the smallest arm), the one-layer GPT "
        f"(common.SMALL_MODEL), AdamW lr 2e-3, cosine; seeds {seeds}. Held-out scores: "
        f"{len(validation[UNIQUE])} sequences of one document per held-out group (new documents, the "
        f"primary number) and {len(validation[COPIES])} of every member of those groups. 'Inside / across': "
        "whether the copy a removed document was matched to is in its own source."
    )


def _verdict(finals, arms) -> tuple[str, dict]:
    def mean(arm, name=UNIQUE):
        return float(np.mean(finals[arm][name]))

    versus_none = {arm: common.compare(finals[arm][UNIQUE], finals[NONE][UNIQUE]) for arm in ARMS[1:]}
    glob = common.compare(finals[GLOBAL][UNIQUE], finals[LOCAL][UNIQUE])
    fuzzy = common.compare(finals[GLOBAL][UNIQUE], finals[EXACT][UNIQUE])
    removed = {arm: sum(arms[arm]["removed"][k] for k in ("exact", "near")) for arm in ARMS}
    best = versus_none[GLOBAL]
    text = (
        f"Removed: exact {removed[EXACT]:,}, fuzzy local {removed[LOCAL]:,}, fuzzy global "
        f"{removed[GLOBAL]:,} documents ({arms[GLOBAL]['removed']['across']:,} of global's across "
        f"sources). On new held-out documents (one per group) no dedup ended at {mean(NONE):.3f}, exact "
        f"{mean(EXACT):.3f}, fuzzy local {mean(LOCAL):.3f}, fuzzy global {mean(GLOBAL):.3f}. Fuzzy global "
        f"vs no dedup: {best[0]:+.3f} ± {best[1]:.3f} ({best[2]}); global vs local: {glob[0]:+.3f} ± "
        f"{glob[1]:.3f} (the paper's direction, global better, {glob[2]}); fuzzy vs exact-only (both "
        f"global): {fuzzy[0]:+.3f} ± {fuzzy[1]:.3f} ({fuzzy[2]})."
    )
    copies = common.compare(finals[GLOBAL][COPIES], finals[NONE][COPIES])
    text += (
        f" Scored on every member of the held-out groups (copies included) fuzzy global vs no dedup is "
        f"{copies[0]:+.3f} ± {copies[1]:.3f} ({copies[2]})."
    )
    summary = {
        "claim": "Dedup trains better at equal tokens, and global dedup better than local (SlimPajama-DC)",
        "outcome": versus_none[GLOBAL][2] + f"; global vs local: {glob[2]}",
        "figures": f"new documents: none {mean(NONE):.3f}, exact {mean(EXACT):.3f}, local {mean(LOCAL):.3f}, "
        f"global {mean(GLOBAL):.3f}; removed {removed[EXACT]:,} / {removed[LOCAL]:,} / {removed[GLOBAL]:,}",
    }
    return text, summary


def _figure(runs, arms, steps):
    fig, (ax, copies, bars) = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [2, 2, 1.4]})
    for arm, style in zip(ARMS, ("-", "-", "--", "-"), strict=True):
        for axis, name in ((ax, UNIQUE), (copies, COPIES)):
            common.curves(axis, arm, [common.eval_curve(r, source=name) for r in runs[arm]])
            axis.lines[-1].set_linestyle(style)
    for axis, name in ((ax, UNIQUE), (copies, COPIES)):
        axis.set(xlabel="step", ylabel="held-out loss (nats/token)", title=name)
        common.zoom(axis, 1 / 3)
    ax.legend()
    x = np.arange(len(ARMS))
    inside = [arms[a]["removed"]["inside"] for a in ARMS]
    across = [arms[a]["removed"]["across"] for a in ARMS]
    bars.bar(x, inside, label="inside a source")
    bars.bar(x, across, bottom=inside, label="across sources")
    bars.set_xticks(x, [a.replace(" (", "\n(") for a in ARMS])
    bars.set(ylabel="documents removed", title="documents removed")
    bars.legend()
    fig.suptitle(f"{steps} steps each, batch 16 x 128, mean and min-max over seeds")
    return fig


if __name__ == "__main__":
    main()
