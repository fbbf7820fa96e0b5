"""Fuzzy dedup benchmark: ours against datasketch, rensa and datatrove on the same documents.

    .venv/bin/python bench/build_corpus.py              # once: bench/data/corpus
    .venv/bin/python bench/dedup.py [--datasketch-docs 3000] [--corpus bench/data/prose]

What runs (each tool in its own child process, so its peak RSS is its own;
this script starts them one after another and compares their output):

1. `pipeline`: our whole `run_dedup` (short filter, exact, MinHash LSH,
   components, decisions) on the full corpus, streamed from Parquet.
   Its decisions define the fuzzy-dedup set: documents that pass the short
   filter and are not exact duplicates. Every tool below gets that set.
2. The SlimPajama recipe, from raw text to candidate pairs, by each tool:
   NFC + lowercase + no ASCII punctuation + collapsed whitespace, character
   13-grams, MinHash with 128 permutations, LSH with 9 bands x 13 rows; a
   pair is predicted when it shares a bucket in any band (no verification).
   - datasketch: `MinHash.update_batch` on the shingles (bytes) and
     `MinHashLSH(num_perm=128, params=(9, 13))`, one query per document. It
     is slow, so it gets a subset (`--datasketch-docs`), picked by a hash of
     the file path inside its source, so cross-version duplicates stay together.
   - rensa: R-MinHash (`RMinHash.from_token_sets`, 117 slots: the 9 x 13 used
     by the LSH) and `RMinHashLSH(threshold, 117, num_bands=9)`, i.e. 9 bands
     of 13 rows; rensa has no character n-gram tokenizer, so the shingles are
     built in Python (timed separately as "python prep").
   - ours: the compiled cleaning + MinHash kernels and the sort-based LSH,
     with 1 thread and with all cores.
3. datatrove's MinHash pipeline end to end (signatures, buckets, clusters,
   filter writing the kept documents as Parquet; LocalPipelineExecutor with
   one worker per core), on the datasketch subset written as one Parquet file
   per worker, twice: with its defaults (word 5-grams, 14 bands x 8, 64-bit
   xxhash) and as close to the recipe as it allows (9 bands x 13 rows; it
   has word n-grams only, so 3 words stand for 13 characters). Beside it,
   ours end to end on the same files: `run_dedup` (all cores) and the kept
   documents written as Parquet. Its candidate pairs are the pairs it writes
   per bucket (neighbours in sorted order, not every pair of a bucket), so
   its pair recall is low by construction: read its component recall.
4. Ground truth: exact Jaccard similarity of the shingle sets. All pairs are
   too many, so the truth is computed on the union of every tool's candidate
   pairs plus two high-recall candidate generators: our MinHash with another
   seed banded 32 x 4, and rensa's signatures banded 29 x 4 (a pair with
   Jaccard 0.8 escapes each with probability below 1e-6). Every candidate's
   Jaccard is computed from 64-bit shingle fingerprints and a random sample
   is re-checked against Python sets of the 13-gram strings.

Throughput is wall-clock MB/s of raw text from the start of cleaning to the
candidate pairs (the corpus is loaded before the clock starts). Peak RSS is
the child's high-water mark after loading, reset just before the tool runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.selectors.dedup import DedupConfig, run_dedup, shingle_set  # noqa: E402
from curation.selectors.dedup.clean import Cleaner, clean_batch, clean_text  # noqa: E402
from curation.selectors.dedup.lsh import bucket_pairs, unique_pairs  # noqa: E402
from curation.selectors.dedup.minhash import HashFamily, band_hashes, signatures  # noqa: E402
from curation.selectors.dedup.summary import summarize_decisions  # noqa: E402
from curation.selectors.dedup.verify import FingerprintStore  # noqa: E402

BANDS, ROWS, PERM, NGRAM, THRESHOLD = 9, 13, 128, 13, 0.8
DATATROVE = {
    "datatrove": {},
    "datatrove-9x13": {"num_buckets": BANDS, "hashes_per_bucket": ROWS, "n_grams": 3},
}
SUBSET_TOOLS = ("datasketch", *DATATROVE)  # tools run on the subset only
PIECE_BYTES = 32_000_000


# ---------------------------------------------------------------- helpers


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of this process, in MB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                name, amount = line.split(":")
                values[name] = int(amount.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS


def load_eval(work: Path, corpus: Path, subset: bool) -> pa.Table:
    table = pq.read_table(corpus, columns=["id", "source", "text"])
    rows = np.load(work / ("subset.npy" if subset else "eval.npy"))
    return table.take(rows).combine_chunks()


def ngrams(text: str) -> list[str]:
    cleaned = clean_text(text)
    if len(cleaned) < NGRAM:
        return [cleaned]
    return [cleaned[i : i + NGRAM] for i in range(len(cleaned) - NGRAM + 1)]


def pieces(table: pa.Table) -> list[tuple[int, pa.Array]]:
    """(first row, text) slices of about PIECE_BYTES."""
    text = table.column("text").combine_chunks()
    sizes = np.cumsum(pc.binary_length(text).to_numpy())
    out, start = [], 0
    while start < len(text):
        base = sizes[start - 1] if start else 0
        stop = max(int(np.searchsorted(sizes, base + PIECE_BYTES, side="right")), start + 1)
        out.append((start, text.slice(start, stop - start)))
        start = stop
    return out


def our_band_hashes(table: pa.Table, family: HashFamily, bands: int, rows: int) -> np.ndarray:
    out = np.empty((table.num_rows, bands), dtype=np.uint64)
    clean = Cleaner()
    for first, text in pieces(table):
        batch = clean(text)
        docs = np.arange(len(text))
        out[first : first + len(text)] = band_hashes(signatures(batch, docs, family), bands, rows, family)
    return out


def pairs_from_bands(hashes: np.ndarray, max_bucket: int = 1 << 30) -> tuple[np.ndarray, np.ndarray]:
    nodes = np.arange(hashes.shape[0], dtype=np.int64)
    scope = np.zeros(hashes.shape[0], dtype=np.int32)
    us, vs = [], []
    for t in range(hashes.shape[1]):
        order = np.argsort(hashes[:, t], kind="stable")
        u, v = bucket_pairs(hashes[order, t], nodes[order], scope, max_bucket)
        us.append(u)
        vs.append(v)
    return unique_pairs(us, vs)


def bands_of_matrix(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Hash each band of a signature matrix (for peers' signatures)."""
    out = np.empty((sigs.shape[0], bands), dtype=np.uint64)
    for t in range(bands):
        block = np.ascontiguousarray(sigs[:, t * rows : (t + 1) * rows]).astype(np.uint64)
        h = np.full(sigs.shape[0], np.uint64(0xCBF29CE484222325))
        for r in range(rows):
            h = (h ^ block[:, r]) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
        out[:, t] = h
    return out


# ---------------------------------------------------------------- workers


def worker(tool: str, work: Path, corpus: Path, threads: int) -> dict:
    """Run one tool; return its measurements (pairs go to work/pairs-<tool>.npz)."""
    if threads:
        numba.set_num_threads(threads)
    if tool.startswith("pipeline"):
        return work_pipeline(work, corpus, threads, verify=tool == "pipeline-verify")
    if tool in DATATROVE:
        return work_datatrove(tool, work, corpus, threads)
    table = load_eval(work, corpus, subset=tool == "datasketch")
    texts = table.column("text").to_pylist() if tool in ("rensa", "datasketch") else None
    mb = pc.sum(pc.binary_length(table.column("text"))).as_py() / 1e6
    warm = table.slice(0, 20)  # compile / load caches before the clock starts
    run_tool(tool, warm, warm.column("text").to_pylist(), work)
    rss_loaded, _ = memory_mb()
    reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    u, v, extra = run_tool(tool, table, texts, work)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    _, peak = memory_mb()
    np.savez(work / f"pairs-{tool}.npz", u=u, v=v)
    return {
        "tool": tool, "docs": table.num_rows, "mb": mb, "seconds": seconds, "tool_cpu_s": cpu,
        "pairs": int(u.size),
        "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak, **extra,
    }  # fmt: skip


def run_tool(tool: str, table: pa.Table, texts: list[str] | None, work: Path):
    if tool.startswith("ours"):
        family = HashFamily.from_seed(42, PERM, NGRAM)
        return (*pairs_from_bands(our_band_hashes(table, family, BANDS, ROWS)), {})
    if tool == "rensa":
        return run_rensa(texts, work)
    if tool == "datasketch":
        return (*run_datasketch(texts), {})
    raise SystemExit(f"unknown tool {tool}")


def work_pipeline(work: Path, corpus: Path, threads: int, verify: bool) -> dict:
    files = sorted(corpus.glob("*.parquet"))

    def batches():
        for f in files:
            yield from pq.ParquetFile(f).iter_batches(batch_size=4096, columns=["id", "source", "text"])

    stages: dict[str, float] = {}

    def progress(stage: str, done: int) -> None:
        stages[stage] = time.perf_counter() - start  # when the stage last reported

    config = DedupConfig(num_threads=threads, verify=verify)
    warm = next(pq.ParquetFile(files[0]).iter_batches(batch_size=50))  # compile before the clock
    run_dedup(lambda: iter([warm]), config, work / "pipeline-tmp")
    rss_loaded, _ = memory_mb()
    reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    decisions = run_dedup(batches, config, work / "pipeline-tmp", progress)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    _, peak = memory_mb()
    pq.write_table(decisions, work / ("decisions-verify.parquet" if verify else "decisions.parquet"))
    summary = summarize_decisions(decisions, top=5)
    text_bytes = sum(pc.sum(pc.binary_length(b.column("text"))).as_py() or 0 for b in batches())
    return {
        "tool": "pipeline-verify" if verify else "pipeline",
        "docs": decisions.num_rows,
        "mb": text_bytes / 1e6,
        "seconds": seconds,
        "tool_cpu_s": cpu,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak,
        "summary": summary,
        "stage_end_s": stages,
    }


def work_datatrove(tool: str, work: Path, corpus: Path, threads: int) -> dict:
    """datatrove's four MinHash steps on the subset, then ours end to end on the same files."""
    import shutil

    table = load_eval(work, corpus, subset=True)
    folder = work / tool
    shutil.rmtree(folder, ignore_errors=True)
    cores = threads or os.cpu_count() or 1
    offsets = write_parts(table, folder / "in", cores)
    mb = pc.sum(pc.binary_length(table.column("text"))).as_py() / 1e6
    start = time.perf_counter()  # its workers are not this process's children: no CPU time
    steps = run_datatrove_steps(folder, DATATROVE[tool], cores)
    seconds = time.perf_counter() - start
    u, v = datatrove_pairs(folder / "buckets", offsets)
    np.savez(work / f"pairs-{tool}.npz", u=u, v=v)
    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in (folder / "out").glob("*.parquet"))
    ours = ours_end_to_end(folder, threads)
    return {
        "tool": tool, "docs": table.num_rows, "mb": mb, "seconds": seconds,
        "tool_cpu_s": float("nan"), "pairs": int(u.size), "kept": kept, "steps_s": steps,
        "rss_loaded_mb": 0.0, "peak_rss_mb": 0.0, "ours_end_to_end": ours,
    }  # fmt: skip


def write_parts(table: pa.Table, folder: Path, parts: int) -> np.ndarray:
    """One Parquet file per datatrove task (task r reads file r); first row of each."""
    folder.mkdir(parents=True)
    offsets = np.linspace(0, table.num_rows, parts + 1).astype(np.int64)
    for r in range(parts):
        piece = table.slice(offsets[r], offsets[r + 1] - offsets[r])
        pq.write_table(piece, folder / f"{r:05d}.parquet")
    return offsets[:-1]


def run_datatrove_steps(folder: Path, settings: dict, cores: int) -> dict[str, float]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    config = MinhashConfig(**settings)
    f = {name: str(folder / name) for name in ("in", "sigs", "buckets", "remove", "out")}
    plan = [
        (
            "signatures",
            [ParquetReader(f["in"], id_key="id"), MinhashDedupSignature(f["sigs"], config=config)],
            cores,
        ),
        ("buckets", [MinhashDedupBuckets(f["sigs"], f["buckets"], config=config)], config.num_buckets),
        ("clusters", [MinhashDedupCluster(f["buckets"], f["remove"], config=config)], 1),
        (
            "filter",
            [ParquetReader(f["in"], id_key="id"), MinhashDedupFilter(f["remove"]), ParquetWriter(f["out"])],
            cores,
        ),
    ]
    seconds = {}
    for name, pipeline, tasks in plan:
        start = time.perf_counter()
        logs = str(folder / f"logs-{name}")
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=cores, logging_dir=logs).run()
        seconds[name] = time.perf_counter() - start
    return seconds


def datatrove_pairs(buckets: Path, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subset indices of the pairs datatrove's bucket step wrote: (file, doc, file, doc) records."""
    records = [np.fromfile(path, dtype="<u4").reshape(-1, 4) for path in sorted(buckets.glob("*.dups"))]
    found = np.concatenate(records) if records else np.zeros((0, 4), dtype=np.uint32)
    a = offsets[found[:, 0]] + found[:, 1]
    b = offsets[found[:, 2]] + found[:, 3]
    return unique_pairs([np.minimum(a, b)], [np.maximum(a, b)])


def ours_end_to_end(folder: Path, threads: int) -> dict:
    """run_dedup on datatrove's input files, the kept documents written as Parquet."""
    files = sorted((folder / "in").glob("*.parquet"))

    def batches():
        for f in files:
            yield from pq.ParquetFile(f).iter_batches(batch_size=4096, columns=["id", "source", "text"])

    config = DedupConfig(num_threads=threads)
    run_dedup(lambda: iter([next(batches())]), config, folder / "ours-tmp")  # load the kernels first
    start = time.perf_counter()
    decisions = run_dedup(batches, config, folder / "ours-tmp")
    table = pq.read_table(files)
    kept = pc.is_in(table.column("id"), decisions.filter(decisions["kept"]).column("id"))
    pq.write_table(table.filter(kept), folder / "ours-kept.parquet")
    return {"seconds": time.perf_counter() - start, "kept": int(pc.sum(kept).as_py())}


def run_rensa(texts: list[str], work: Path):
    import rensa

    perm = BANDS * ROWS  # 117 slots, so rensa's 9 bands have exactly 13 rows
    lsh = rensa.RMinHashLSH(THRESHOLD, perm, BANDS)
    sketches, prep, core, step = [], 0.0, 0.0, 256
    for first in range(0, len(texts), step):
        t0 = time.perf_counter()
        shingles = [ngrams(t) for t in texts[first : first + step]]
        t1 = time.perf_counter()
        batch = rensa.RMinHash.from_token_sets(shingles, perm, 42)
        lsh.insert_many(batch, first)
        sketches.extend(batch)
        prep, core = prep + t1 - t0, core + time.perf_counter() - t1
    t0 = time.perf_counter()
    us, vs = [], []
    for i, candidates in enumerate(lsh.query_all(sketches)):
        for j in candidates:
            if j != i:
                us.append(min(i, j))
                vs.append(max(i, j))
    u, v = unique_pairs([np.array(us, dtype=np.int64)], [np.array(vs, dtype=np.int64)])
    core += time.perf_counter() - t0
    # Outside the timed part: rensa's signatures, for the ground-truth candidates.
    np.save(work / "rensa-digests.npy", np.array([s.digest() for s in sketches], dtype=np.uint32))
    return u, v, {"python_prep_s": prep, "library_s": core}


def run_datasketch(texts: list[str]):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=PERM, params=(BANDS, ROWS))
    sketches = []
    for i, text in enumerate(texts):
        sketch = MinHash(num_perm=PERM, seed=42)
        sketch.update_batch([s.encode("utf-8") for s in set(ngrams(text))])
        lsh.insert(i, sketch)
        sketches.append(sketch)
    us, vs = [], []
    for i, sketch in enumerate(sketches):
        for j in lsh.query(sketch):
            if j != i:
                us.append(min(i, j))
                vs.append(max(i, j))
    return unique_pairs([np.array(us, dtype=np.int64)], [np.array(vs, dtype=np.int64)])


def run_child(tool: str, args: argparse.Namespace, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", tool, "--work", str(args.work)]
    command += ["--corpus", str(args.corpus), "--threads", str(threads)]
    print(f"[{tool}] running ...", file=sys.stderr, flush=True)
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{tool} failed with status {status}")
    result = json.loads((args.work / f"result-{tool}.json").read_text())
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["max_rss_mb"] = usage.ru_maxrss / 1024
    return result


# ---------------------------------------------------------------- driver


def choose_sets(work: Path, corpus: Path, datasketch_docs: int) -> None:
    decisions = pq.read_table(work / "decisions.parquet", columns=["id", "reason"])
    reason = decisions.column("reason")
    keep = pc.invert(pc.is_in(reason, pa.array(["too_short", "exact_duplicate"])))
    rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    np.save(work / "eval.npy", rows)
    ids = decisions.column("id").take(rows).to_pylist()
    paths = [i.split("/", 1)[1] for i in ids]  # path inside the source folder
    groups = sorted(set(paths), key=lambda p: hashlib.blake2b(p.encode(), digest_size=8).digest())
    chosen, count = set(), 0
    size = {}
    for p in paths:
        size[p] = size.get(p, 0) + 1
    for p in groups:
        if count >= datasketch_docs:
            break
        chosen.add(p)
        count += size[p]
    subset = np.array([r for r, p in zip(rows, paths, strict=True) if p in chosen], dtype=np.int64)
    np.save(work / "subset.npy", subset)


def truth(work: Path, corpus: Path, tools: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Exact Jaccard of every candidate pair (eval-set indices)."""
    table = load_eval(work, corpus, subset=False)
    subset_rows = np.load(work / "subset.npy")
    eval_rows = np.load(work / "eval.npy")
    to_eval = np.searchsorted(eval_rows, subset_rows)
    us, vs = [], []
    for tool in tools:
        pairs = np.load(work / f"pairs-{tool}.npz")
        u, v = pairs["u"], pairs["v"]
        if tool in SUBSET_TOOLS:
            u, v = to_eval[u], to_eval[v]
        us.append(np.minimum(u, v))
        vs.append(np.maximum(u, v))
    family = HashFamily.from_seed(12345, PERM, NGRAM)
    u, v = pairs_from_bands(our_band_hashes(table, family, 32, 4), max_bucket=4000)
    us.append(u)
    vs.append(v)
    digests = np.load(work / "rensa-digests.npy")
    u, v = pairs_from_bands(bands_of_matrix(digests, 29, 4), max_bucket=4000)
    us.append(u)
    vs.append(v)
    u, v = unique_pairs(us, vs)
    store = FingerprintStore(work / "truth-shingles.bin")
    needed = np.zeros(table.num_rows, dtype=bool)
    needed[u] = needed[v] = True
    for first, text in pieces(table):
        local = np.flatnonzero(needed[first : first + len(text)])
        if local.size:
            store.add(clean_batch(text), local, local + first, HashFamily.from_seed(42, PERM, NGRAM))
    similarity = store.jaccard(u, v)
    store.path.unlink()  # scratch, can be large
    np.savez(work / "truth.npz", u=u, v=v, similarity=similarity)
    # Re-check a sample with Python sets of the 13-gram strings.
    rng = np.random.default_rng(0)
    texts = table.column("text")
    sample = rng.choice(u.size, size=min(300, u.size), replace=False)
    sample = np.concatenate([sample, np.flatnonzero(np.abs(similarity - THRESHOLD) < 0.02)[:100]])
    mismatches = 0
    for k in sample:
        a, b = shingle_set(texts[int(u[k])].as_py()), shingle_set(texts[int(v[k])].as_py())
        mismatches += abs(len(a & b) / len(a | b) - similarity[k]) > 1e-12
    return (
        u,
        v,
        similarity,
        {"candidates": int(u.size), "checked": int(sample.size), "mismatches": int(mismatches)},
    )


def score(pred_u, pred_v, u, v, similarity, restrict: np.ndarray | None = None) -> dict:
    """Recall and precision of predicted pairs against Jaccard >= THRESHOLD."""
    key = u * (1 << 32) + v
    pred = pred_u * (1 << 32) + pred_v
    positive = similarity >= THRESHOLD
    if restrict is not None:
        positive &= np.isin(u, restrict) & np.isin(v, restrict)
        inside = np.isin(pred_u, restrict) & np.isin(pred_v, restrict)
        pred, pred_u, pred_v = pred[inside], pred_u[inside], pred_v[inside]
    where = np.searchsorted(key, pred)
    hit = positive[np.minimum(where, key.size - 1)] & (key[np.minimum(where, key.size - 1)] == pred)
    true_pairs = int(positive.sum())
    found = int(hit.sum())
    # One group of near-copies can hold most true pairs; weigh each group once too.
    group = truth_groups(u, v, positive)
    found_by_group = np.bincount(group[positive], weights=np.isin(key, pred)[positive])
    size_by_group = np.bincount(group[positive])
    present = size_by_group > 0
    macro = (
        float(np.mean(found_by_group[present] / size_by_group[present])) if present.any() else float("nan")
    )
    # Dedup joins pairs transitively: a true pair counts once both ends share a component.
    n = int(max(u.max(initial=0), v.max(initial=0), pred_u.max(initial=0), pred_v.max(initial=0))) + 1
    graph = coo_matrix((np.ones(pred_u.size), (pred_u, pred_v)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    joined = int((positive & (label[u] == label[v])).sum())
    return {
        "pred": int(pred.size),
        "true": true_pairs,
        "found": found,
        "recall": found / true_pairs if true_pairs else float("nan"),
        "precision": found / pred.size if pred.size else float("nan"),
        "component_recall": joined / true_pairs if true_pairs else float("nan"),
        "group_recall": macro,
    }


def truth_groups(u: np.ndarray, v: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Connected component of each candidate pair in the graph of true pairs."""
    n = int(max(u.max(initial=0), v.max(initial=0))) + 1
    graph = coo_matrix((np.ones(int(positive.sum())), (u[positive], v[positive])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    return label[u]


def seed_spread(work: Path, corpus: Path, u, v, similarity, subset) -> dict:
    """Recall and precision of our recipe over several hash seeds: LSH is random,
    so one run's recall on a few hundred true pairs varies by chance."""
    table = load_eval(work, corpus, subset=False)
    out: dict[str, list[float]] = {
        "subset_recall": [], "full_recall": [], "full_precision": [], "subset_group_recall": [],
        "full_group_recall": [],
    }  # fmt: skip
    for seed in range(42, 50):
        family = HashFamily.from_seed(seed, PERM, NGRAM)
        pu, pv = pairs_from_bands(our_band_hashes(table, family, BANDS, ROWS))
        part = score(pu, pv, u, v, similarity, restrict=subset)
        full = score(pu, pv, u, v, similarity)
        out["subset_recall"].append(part["recall"])
        out["subset_group_recall"].append(part["group_recall"])
        out["full_recall"].append(full["recall"])
        out["full_precision"].append(full["precision"])
        out["full_group_recall"].append(full["group_recall"])
    return out


def ideal_minhash(u, v, similarity, subset) -> dict:
    """Recall and precision that ideal MinHash with 9 x 13 bands would get in
    expectation: each pair collides with probability 1 - (1 - s**13)**9."""
    p = 1 - (1 - similarity**ROWS) ** BANDS
    inside = np.isin(u, subset) & np.isin(v, subset)
    out = {}
    for name, mask in (("subset", inside), ("full", np.ones_like(inside))):
        true = mask & (similarity >= THRESHOLD)
        group = truth_groups(u, v, true)
        sizes = np.bincount(group[true])
        present = sizes > 0
        out[name] = {
            "recall": float(p[true].mean()) if true.any() else float("nan"),
            "precision": float(p[true].sum() / p[mask].sum()) if mask.any() else float("nan"),
            "group_recall": float(
                np.mean(np.bincount(group[true], weights=p[true])[present] / sizes[present])
            ),
        }
    return out


def drop_precision(work: Path, u, v, similarity) -> dict:
    """Of the documents the pipeline drops as near duplicates, how many have a
    partner with Jaccard >= 0.8 (plain recipe vs. verify=True)."""
    eval_rows = np.load(work / "eval.npy")
    good = np.zeros(eval_rows.size, dtype=bool)
    good[u[similarity >= THRESHOLD]] = True
    good[v[similarity >= THRESHOLD]] = True
    out = {}
    for name in ("decisions.parquet", "decisions-verify.parquet"):
        reason = pq.read_table(work / name, columns=["reason"]).column("reason")
        dropped = np.flatnonzero(pc.equal(reason, "near_duplicate").to_numpy(zero_copy_only=False))
        justified = good[np.searchsorted(eval_rows, dropped)]
        out[name] = {"near_duplicate": int(dropped.size), "with_partner_ge_0.8": int(justified.sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "bench/data/corpus")
    parser.add_argument("--work", type=Path, default=ROOT / "bench/data/dedup-work")
    parser.add_argument("--datasketch-docs", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=0, help="threads for ours; 0 = all cores")
    parser.add_argument("--rescore", action="store_true", help="re-score the last run's saved outputs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = worker(args.worker, args.work, args.corpus, args.threads)
        (args.work / f"result-{args.worker}.json").write_text(json.dumps(result))
        return 0

    cores = os.cpu_count() or 1
    names = ["pipeline", "pipeline-verify", "ours-1t", f"ours-{cores}t", "rensa", "datasketch", *DATATROVE]
    tools = ["ours-1t", "rensa", "datasketch", *DATATROVE]
    if args.rescore:  # score the outputs of the last run again, without re-timing
        saved = json.loads((args.work / "results.json").read_text())
        results = {name: json.loads((args.work / f"result-{name}.json").read_text()) for name in names}
        for name in names:
            for key in ("cpu_s", "max_rss_mb"):
                results[name][key] = saved["results"][name][key]
        load = saved["truth"]["load"]
        stored = np.load(args.work / "truth.npz")
        u, v, similarity = stored["u"], stored["v"], stored["similarity"]
        check = {k: saved["truth"][k] for k in ("candidates", "checked", "mismatches")}
    else:
        load = [os.getloadavg()]
        results = {"pipeline": run_child("pipeline", args, args.threads)}
        results["pipeline-verify"] = run_child("pipeline-verify", args, args.threads)
        choose_sets(args.work, args.corpus, args.datasketch_docs)
        results["ours-1t"] = run_child("ours-1t", args, 1)
        results[f"ours-{cores}t"] = run_child(f"ours-{cores}t", args, args.threads or cores)
        results["rensa"] = run_child("rensa", args, 1)
        results["datasketch"] = run_child("datasketch", args, 1)
        for name in DATATROVE:
            results[name] = run_child(name, args, args.threads)
        load.append(os.getloadavg())
        print("[truth] exact Jaccard of candidate pairs ...", file=sys.stderr, flush=True)
        u, v, similarity, check = truth(args.work, args.corpus, tools)
    eval_rows, subset_rows = np.load(args.work / "eval.npy"), np.load(args.work / "subset.npy")
    subset = np.searchsorted(eval_rows, subset_rows)
    for tool in [*tools, f"ours-{cores}t"]:
        pairs = np.load(args.work / f"pairs-{tool}.npz")
        pu, pv = pairs["u"], pairs["v"]
        if tool in SUBSET_TOOLS:
            pu, pv = subset[pu], subset[pv]
        results[tool]["subset"] = score(pu, pv, u, v, similarity, restrict=subset)
        if tool not in SUBSET_TOOLS:
            results[tool]["full"] = score(pu, pv, u, v, similarity)
    print("[seeds] our recall with other hash seeds ...", file=sys.stderr, flush=True)
    check["seeds"] = seed_spread(args.work, args.corpus, u, v, similarity, subset)
    check["drops"] = drop_precision(args.work, u, v, similarity)
    check["ideal"] = ideal_minhash(u, v, similarity, subset)
    check["load"] = load
    report(results, check, cores)
    (args.work / "results.json").write_text(json.dumps({"results": results, "truth": check}, indent=1))
    return 0


def report(results: dict, check: dict, cores: int) -> None:
    before, after = check["load"]
    print(
        f"\nload average before {before[0]:.2f}, after the timed runs {after[0]:.2f} (1 min; {cores} cores)"
    )
    pipe = results["pipeline"]
    print(f"\nPipeline (run_dedup, global, exact + fuzzy, {cores} threads) on the whole corpus:")
    print(
        f"  {pipe['docs']} docs, {pipe['mb']:.1f} MB in {pipe['seconds']:.1f} s = "
        f"{pipe['docs'] / pipe['seconds']:.0f} docs/s, {pipe['mb'] / pipe['seconds']:.1f} MB/s "
        f"({pipe['tool_cpu_s']:.1f} CPU-s); "
        f"peak RSS {pipe['max_rss_mb']:.0f} MB (after load {pipe['rss_loaded_mb']:.0f} MB)"
    )
    print(f"  {json.dumps(pipe['summary']['by_stage_reason'])}")
    ends = pipe["stage_end_s"]
    print("  stage ends at (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ends.items()))
    ver = results["pipeline-verify"]
    print(
        f"  with verify=True: {ver['seconds']:.1f} s, peak RSS {ver['max_rss_mb']:.0f} MB; "
        f"{json.dumps(ver['summary']['by_stage_reason'])}"
    )
    for name, d in check["drops"].items():
        print(
            f"  {name}: {d['near_duplicate']} near-duplicate drops, {d['with_partner_ge_0.8']} of them "
            f"have a partner with Jaccard >= 0.8 "
            f"({d['with_partner_ge_0.8'] / max(d['near_duplicate'], 1):.3f})"
        )
    print(
        f"\nRecipe from raw text to candidate pairs; truth on {check['candidates']} candidate pairs "
        f"({check['mismatches']} of {check['checked']} re-checked with Python sets disagree)."
    )
    header = (
        f"{'tool':<12}{'docs':>7}{'MB':>8}{'wall s':>8}{'cpu s':>8}{'docs/s':>9}{'MB/s':>8}{'MB/cpu-s':>9}"
        f"{'peak RSS MB':>12}{'+tool MB':>9}{'recall':>8}{'prec.':>7}{'recall':>8}{'prec.':>7}"
    )
    print(f"{'':<96}{'-- subset --':>15}{'--- full ---':>15}")
    print(header)
    for name, r in results.items():
        if name.startswith("pipeline"):
            continue
        full = r.get("full", {})
        print(
            f"{name:<12}{r['docs']:>7}{r['mb']:>8.1f}{r['seconds']:>8.1f}{r['tool_cpu_s']:>8.1f}"
            f"{r['docs'] / r['seconds']:>9.0f}{r['mb'] / r['seconds']:>8.2f}{r['mb'] / r['tool_cpu_s']:>9.2f}"
            f"{r['peak_rss_mb']:>12.0f}"
            f"{r['peak_rss_mb'] - r['rss_loaded_mb']:>9.0f}"
            f"{r['subset']['recall']:>8.3f}{r['subset']['precision']:>7.3f}"
            f"{full.get('recall', float('nan')):>8.3f}{full.get('precision', float('nan')):>7.3f}"
        )
    print(
        "group recall (mean over groups of true pairs, each group of near-copies weighted once) and\n"
        "component recall (true pairs whose documents end in one connected component):"
    )
    for name, r in results.items():
        if not name.startswith("pipeline"):
            full = r.get("full", {})
            print(
                f"  {name:<12} group: subset {r['subset']['group_recall']:.3f} "
                f"full {full.get('group_recall', float('nan')):.3f}; component: subset "
                f"{r['subset']['component_recall']:.3f} full {full.get('component_recall', float('nan')):.3f}"
            )
    sub = results["datasketch"]["subset"]
    print(f"\nsubset: {results['datasketch']['docs']} docs, {sub['true']} true pairs; full: ", end="")
    print(f"{results['rensa']['docs']} docs, {results['rensa']['full']['true']} true pairs")
    ideal = check["ideal"]
    print(
        f"ideal MinHash, expected: subset recall {ideal['subset']['recall']:.3f} precision "
        f"{ideal['subset']['precision']:.3f}; full recall {ideal['full']['recall']:.3f} "
        f"precision {ideal['full']['precision']:.3f}; group recall subset "
        f"{ideal['subset']['group_recall']:.3f} full {ideal['full']['group_recall']:.3f}"
    )
    seeds = check["seeds"]
    for key, values in seeds.items():
        print(
            f"ours over seeds 42..49, {key}: mean {np.mean(values):.3f}, "
            f"min {min(values):.3f}, max {max(values):.3f}"
        )
    if "python_prep_s" in results["rensa"]:
        r = results["rensa"]
        print(
            f"rensa time split: python shingling {r['python_prep_s']:.1f} s, library {r['library_s']:.1f} s"
        )
    speed = {name: r["mb"] / r["seconds"] for name, r in results.items() if not name.startswith("pipeline")}
    per_cpu = {n: r["mb"] / r["tool_cpu_s"] for n, r in results.items() if not n.startswith("pipeline")}
    for peer in ("datasketch", "rensa"):
        print(f"ours-1t / {peer}: {speed['ours-1t'] / speed[peer]:.1f}x (MB/s, one thread)")
        print(f"ours-1t / {peer}: {per_cpu['ours-1t'] / per_cpu[peer]:.1f}x (MB per CPU-second)")
        print(f"ours-{cores}t / {peer}: {speed[f'ours-{cores}t'] / speed[peer]:.1f}x (MB/s, {cores} threads)")
    for name in DATATROVE:
        r = results[name]
        ours = r["ours_end_to_end"]
        print(
            f"{name} end to end ({r['docs']} docs, {r['mb']:.1f} MB): {r['seconds']:.1f} s "
            f"({r['mb'] / r['seconds']:.2f} MB/s; "
            + ", ".join(f"{k} {v:.1f} s" for k, v in r["steps_s"].items())
            + f"), keeps {r['kept']}; component recall {r['subset']['component_recall']:.3f}, "
            f"pair precision {r['subset']['precision']:.3f}"
        )
        print(
            f"  ours end to end on the same files: {ours['seconds']:.2f} s, keeps {ours['kept']}: "
            f"{r['seconds'] / ours['seconds']:.0f}x faster"
        )
    if "library_s" in results["rensa"]:
        core = results["rensa"]["mb"] / results["rensa"]["library_s"]
        print(f"ours-1t / rensa library time only: {speed['ours-1t'] / core:.1f}x")


if __name__ == "__main__":
    raise SystemExit(main())
