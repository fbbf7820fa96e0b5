"""Encoders on real documents: the static encoder (model2vec, distilled from MiniLM),
all-MiniLM-L6-v2 on the CPU, and hashed n-grams; same documents, one run each.

    .venv/bin/python bench/build_corpus.py          # once: bench/data/corpus (~530 MB of real text)
    .venv/bin/python bench/embed.py [--docs 2000]   # sections 1 and 2
    .venv/bin/python bench/embed.py --rss           # section 3
    .venv/bin/python bench/embed.py --st            # section 4

1. Throughput: a seeded sample of `--docs` deduplicated documents (changelogs,
   man pages, READMEs, Python sources: short and long mixed), each encoder's
   `encode` in batches of 1,024 as `curation embed` sends them; the median of
   three passes after a warm-up pass (MiniLM: one pass). docs/s and MB/s (MB
   of the documents' full UTF-8 text, though each encoder reads only its
   window: static and MiniLM 256 tokens, hashed 4,096 characters; the static
   encoder also with 512 tokens, the hashed one with 2,048 characters).
2. Quality against MiniLM, on the same sample: recall@10 of MiniLM's ten
   nearest neighbours (cosine, self excluded), and SemDeDup at a kept fraction
   of 0.8 (k-means with about sqrt(n) clusters on each encoder's own vectors):
   the share of MiniLM's kept set each encoder also keeps, and of MiniLM's
   removed set each also removes. Random choice would score 10/(n-1), 0.8 and
   0.2.
3. `--rss`: peak RSS (GNU time's maximum resident set) and time of the
   `curation embed` command on (a) the whole deduplicated corpus (static,
   hashed; MiniLM on its 2,000 longest documents, as it takes ~45 minutes on
   the whole corpus) and (b) 60 documents of 1 to 5 MB made by joining the
   corpus's texts in order (all three encoders).
4. `--st`: our MiniLMEncoder against sentence-transformers' `encode` (same
   model, texts and truncation), the comparison in bench/results/embeddings.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.device import CPU, resolve  # noqa: E402
from curation.embeddings import (  # noqa: E402
    HashedEncoder,
    KMeansConfig,
    MiniLMEncoder,
    StaticEncoder,
    assign,
    fit_kmeans,
)
from curation.selectors.dedup import DedupConfig  # noqa: E402
from curation.selectors.semdedup import SemDeDup, SemDeDupConfig  # noqa: E402
from curation.stages import dedup_stage, default_k  # noqa: E402
from curation.storage import (  # noqa: E402
    DOCUMENTS_SCHEMA,
    Dataset,
    IngestConfig,
    InputSpec,
    ingest,
    write_dataset,
)

WORK = ROOT / "bench" / "data" / "embed"
CLI = str(Path(sys.executable).with_name("curation"))


def deduplicated(corpus: Path) -> Path:
    """The corpus ingested and deduplicated once (SlimPajama defaults), as a user would."""
    out = WORK / "dedup" / "documents"
    if not (out / "manifest.json").exists():
        spec = InputSpec(str(corpus), format="parquet")
        ingest([spec], str(WORK / "documents"), IngestConfig(source_field="source"))
        dedup_stage(str(WORK / "documents"), str(WORK / "dedup"), DedupConfig())
    return out


def sample(documents: Path, n: int, seed: int = 0) -> list[str]:
    table = Dataset.open(documents).read_table(["text"])
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, n, replace=False))
    return table.column("text").take(pa.array(rows)).to_pylist()


def timed_pass(encoder, texts: list[str], batch: int = 1024) -> tuple[np.ndarray, float, float]:
    """Vectors, wall seconds and CPU seconds (this process, all threads) of one pass."""
    start, cpu = time.perf_counter(), time.process_time()
    vectors = np.concatenate([encoder.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)])
    return vectors, time.perf_counter() - start, time.process_time() - cpu


def encode_all(encoder, texts: list[str], repeats: int) -> tuple[np.ndarray, float, float]:
    """Vectors and the median wall and CPU seconds of `repeats` passes. With repeats > 1
    an untimed pass goes first: a fresh static encoder's first pass runs at about half
    speed (page faults, allocator, tokenizer caches). MiniLM gets one pass (3 minutes)."""
    if repeats > 1:
        timed_pass(encoder, texts)
    else:
        encoder.encode(texts[:8])
    runs = [timed_pass(encoder, texts) for _ in range(repeats)]
    return runs[-1][0], statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)


def neighbours(x: np.ndarray, k: int = 10) -> np.ndarray:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def recall_at(reference: np.ndarray, x: np.ndarray, k: int = 10) -> float:
    ref, got = neighbours(reference, k), neighbours(x, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, got, strict=True)]))


def semdedup_kept(x: np.ndarray, fraction: float = 0.8) -> np.ndarray:
    model = fit_kmeans(x, default_k(len(x)), KMeansConfig(seed=0))
    labels, distance = assign(x, model)
    ids = pa.array([f"d{i:06d}" for i in range(len(x))])
    table = SemDeDup(SemDeDupConfig(target_fraction=fraction)).fit(x, labels, distance).select(ids, ids)
    return np.array(table.column("kept").to_pylist())


def throughput_and_quality(texts: list[str]) -> None:
    lengths = np.array([len(t) for t in texts])
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90]).astype(int)
    print(
        f"{len(texts)} documents, {mb:.1f} MB; characters p10/p50/p90/max {p10}/{p50}/{p90}/{lengths.max()}"
    )
    minilm = "minilm (cpu)"
    encoders = {
        "static": StaticEncoder(),
        minilm: MiniLMEncoder(device=CPU),
        "hashed": HashedEncoder(),
        "static, 512 tokens": StaticEncoder(max_tokens=512),
        "hashed, 2,048 characters": HashedEncoder(max_chars=2048),  # about MiniLM's window
    }
    for name, encoder in encoders.items():
        print(f"  {name}: {encoder.config()}")
    vectors, wall, cpu = {}, {}, {}
    for name, encoder in encoders.items():
        repeats = 1 if name == minilm else 3
        vectors[name], wall[name], cpu[name] = encode_all(encoder, texts, repeats)
    print("\n| encoder | wall s | docs/s | MB/s | CPU s | docs per CPU-s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in encoders:
        n = len(texts)
        print(
            f"| {name} | {wall[name]:.2f} | {n / wall[name]:,.0f} | {mb / wall[name]:.2f} "
            f"| {cpu[name]:.2f} | {n / cpu[name]:,.0f} |"
        )
    print()
    for name in ("static", "static, 512 tokens"):
        print(
            f"{name} / MiniLM speed: {wall[minilm] / wall[name]:.0f}x wall, "
            f"{cpu[minilm] / cpu[name]:.0f}x CPU; {name} / hashed: {wall['hashed'] / wall[name]:.1f}x wall"
        )
    kept = {name: semdedup_kept(v) for name, v in vectors.items()}
    print("\n| encoder | recall@10 of MiniLM's neighbours | SemDeDup 80%: MiniLM's kept also kept "
          "| MiniLM's removed also removed |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for name in (n for n in encoders if n != minilm):
        recall = recall_at(vectors[minilm], vectors[name])
        both_kept = (kept[name] & kept[minilm]).sum() / kept[minilm].sum()
        both_removed = (~kept[name] & ~kept[minilm]).sum() / (~kept[minilm]).sum()
        print(f"| {name} | {recall:.3f} | {both_kept:.3f} | {both_removed:.3f} |")
    print(f"| random | {10 / (len(texts) - 1):.3f} | 0.800 | 0.200 |")


# ---------------------------------------------------------------- peak memory of `curation embed`


def embed_rss(documents: Path, encoder: str, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `curation embed`, measured by GNU time: a child
    forked from this (large) process would report this process's RSS as its own peak."""
    shutil.rmtree(out, ignore_errors=True)  # a finished store would make the run a no-op
    log, usage = out.with_name(out.name + ".log"), out.with_name(out.name + ".time")
    log.parent.mkdir(parents=True, exist_ok=True)
    timed = ["/usr/bin/time", "-f", "%M %e", "-o", str(usage)]
    command = [CLI, "embed", str(documents), "--out", str(out), "--encoder", encoder, "--device", "cpu"]
    with open(log, "wb") as sink:  # a file, not a pipe: a full pipe would stall the child
        done = subprocess.run([*timed, *command], stdout=sink, stderr=sink)
    if done.returncode != 0:
        raise SystemExit(f"curation embed --encoder {encoder} failed: {log.read_text()[-2000:]}")
    kilobytes, seconds = usage.read_text().split()[-2:]
    return float(seconds), int(kilobytes) / 1024


def subset_by_length(documents: Path, out: Path, n: int) -> Path:
    """The `n` longest documents, as their own dataset."""
    if not (out / "manifest.json").exists():
        table = Dataset.open(documents).read_table()
        longest = np.sort(np.argsort(-np.array(table.column("n_chars").to_pylist()), kind="stable")[:n])
        write_dataset(out, [table.take(pa.array(longest))], DOCUMENTS_SCHEMA, "documents", rows_per_file=512)
    return out


def huge_documents(documents: Path, out: Path, count: int = 60) -> Path:
    """`count` documents of 1 to 5 MB (180 MB): the corpus's texts joined in order."""
    if (out / "manifest.json").exists():
        return out
    sizes = [(1 + i % 5) << 20 for i in range(count)]
    batches = Dataset.open(documents).iter_batches(["text"], batch_size=256)
    texts = iter(t for batch in batches for t in batch.column(0).to_pylist())

    def tables():
        for i, size in enumerate(sizes):
            parts, held = [], 0
            while held < size:
                parts.append(next(texts))
                held += len(parts[-1])
            text = "\n\n".join(parts)[:size]
            row = {"id": f"huge:{i:04d}", "source": "huge", "text": text, "n_chars": len(text)}
            yield pa.Table.from_pylist([{**row, "meta": None, "origin": f"joined:{i}"}], DOCUMENTS_SCHEMA)

    write_dataset(out, tables(), DOCUMENTS_SCHEMA, "documents")
    return out


def rss_runs(documents: Path) -> None:
    data = Dataset.open(documents)
    runs = [
        (documents, "static"),
        (documents, "hashed"),
        (subset_by_length(documents, WORK / "longest-2000", 2000), "minilm"),
    ]
    huge = huge_documents(documents, WORK / "huge")
    runs += [(huge, name) for name in ("static", "hashed", "minilm")]
    print(f"\ncorpus: {data.rows:,} documents, {data.manifest.bytes / 1e6:.0f} MB of Parquet")
    print("| documents | encoder | docs | text MB | seconds | docs/s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path, encoder in runs:
        table = Dataset.open(path).read_table(["n_chars"])
        chars = sum(table.column("n_chars").to_pylist()) / 1e6
        seconds, peak = embed_rss(path, encoder, WORK / f"emb-{path.name}-{encoder}")
        print(
            f"| {path.name} | {encoder} | {table.num_rows:,} | {chars:.0f} | {seconds:.1f} "
            f"| {table.num_rows / seconds:,.0f} | {peak:,.0f} |",
            flush=True,
        )


# ---------------------------------------------------------------- MiniLM: ours vs sentence-transformers


def minilm_vs_sentence_transformers(texts: list[str], repeats: int = 3, batch: int = 32) -> None:
    from sentence_transformers import SentenceTransformer

    from curation.embeddings.encoders import bundled_minilm_path

    device = resolve("cpu")
    ours = MiniLMEncoder(device=device, max_tokens=256, micro_batch=batch)
    peer = SentenceTransformer(str(bundled_minilm_path()), device="cpu", local_files_only=True)
    peer.max_seq_length = 256
    cut = [t[: ours.max_chars] for t in texts]  # both read the same window

    def peer_encode(chunk):
        return peer.encode(chunk, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

    encoders = {"sentence-transformers encode": peer_encode, "curation MiniLMEncoder": ours.encode}
    wall = {name: [] for name in encoders}
    outputs = {}
    for _ in range(repeats):  # alternate, so other load hits both
        for name, encode in encoders.items():
            start = time.perf_counter()
            outputs[name] = encode(cut)
            wall[name].append(time.perf_counter() - start)
    for name in encoders:
        print(f"{name}: median {statistics.median(wall[name]):.2f}s for {len(texts)} texts")
    names = list(encoders)
    print(f"ours / peer speed: {statistics.median(wall[names[0]]) / statistics.median(wall[names[1]]):.2f}x")
    print(f"lowest cosine ours vs peer: {(outputs[names[0]] * outputs[names[1]]).sum(axis=1).min():.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "bench" / "data" / "corpus")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--rss", action="store_true", help="only: `curation embed`'s time and peak RSS")
    parser.add_argument("--st", action="store_true", help="only: our MiniLM vs sentence-transformers")
    args = parser.parse_args()
    if not args.corpus.exists():
        raise SystemExit(f"{args.corpus}: build it first with bench/build_corpus.py")
    documents = deduplicated(args.corpus)
    print(f"machine: {os.cpu_count()} CPUs, no GPU: MiniLM ran on the CPU")
    if args.rss:
        rss_runs(documents)
    elif args.st:
        minilm_vs_sentence_transformers(sample(documents, 400))
    else:
        throughput_and_quality(sample(documents, args.docs))


if __name__ == "__main__":
    main()
