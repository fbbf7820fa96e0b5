"""Engine benchmark: the local engine against Ray Data with 1 and 2 workers, same input.

    .venv/bin/python bench/build_corpus.py      # once, optional: bench/data/corpus (529 MB)
    .venv/bin/python bench/engine.py [--corpus bench/data/corpus] [--subset-docs 6000] [--repeats 1]

Input: the real-text corpus `bench/build_corpus.py` writes (Python sources,
docs and man pages, with real exact and near duplicates), turned into a
documents dataset under bench/data/engine/ (git ignores bench/data). Without
that corpus, the bundled default corpus is used, repeated four times under
new ids (so a quarter of it is exact duplicates).

What runs, each on the same documents:

1. dedup (SlimPajama defaults, global mode) on the whole corpus:
   `dedup_documents` on the local engine (numba kernels on all cores) and
   `dedup_distributed` on the Ray engine with workers=1 and workers=2 (map tasks of 1 CPU each, kernels on one
   thread per task). The Ray decisions are compared with the local ones.
2. embeddings with the hashed encoder on a subset: local (one process),
   local with a 2-process pool, Ray with 1 and 2 actors.
3. shards (BPE tokenisation + packing) on the same subset: local, Ray 1 and 2.

Ray runs on this machine: `ray.init(num_cpus=2, include_dashboard=False)`,
started once (its start-up is reported, not counted), then one small warm-up
job starts the worker processes. Throughput is MB of document text per
second of wall time. The machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation import default_corpus  # noqa: E402
from curation.embeddings import EmbeddingStore, HashedEncoder  # noqa: E402
from curation.engine import LocalEngine  # noqa: E402
from curation.engine.ray_engine import RayEngine  # noqa: E402
from curation.selectors.dedup import DedupConfig, dedup_distributed, dedup_documents  # noqa: E402
from curation.storage import DOCUMENTS_SCHEMA, Dataset, ingest, write_dataset  # noqa: E402
from curation.storage.shards import ShardConfig  # noqa: E402
from curation.storage.tokenizer import TokenizerConfig, train_tokenizer  # noqa: E402

DATA = ROOT / "bench" / "data"


def documents_table(corpus: Path | None) -> tuple[pa.Table, str]:
    if corpus is not None and any(corpus.glob("*.parquet")):
        table = pa.concat_tables(
            pq.read_table(p, columns=["id", "source", "text"]) for p in sorted(corpus.glob("*.parquet"))
        )
        label = f"{corpus.relative_to(ROOT) if corpus.is_relative_to(ROOT) else corpus} (build_corpus.py)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ingest(default_corpus.build(Path(tmp) / "raw"), str(Path(tmp) / "docs"))
            base = Dataset.open(Path(tmp) / "docs").read_table(["id", "source", "text"])
        copies = []
        for copy in range(4):
            ids = pc.binary_join_element_wise(base.column("id"), pa.scalar(f"#{copy}"), "")
            copies.append(base.set_column(0, "id", ids))
        table = pa.concat_tables(copies)
        label = "bundled default corpus x4"
    n = table.num_rows
    full = pa.table(
        {
            "id": table.column("id"),
            "source": table.column("source"),
            "text": table.column("text"),
            "n_chars": pc.utf8_length(table.column("text")).cast(pa.int64()),
            "meta": pa.nulls(n, pa.string()),
            "origin": pa.array([f"bench:{i + 1}" for i in range(n)]),
        },
        schema=DOCUMENTS_SCHEMA,
    )
    return full, label


def prepare(corpus: Path | None, subset_docs: int) -> tuple[str, str, str]:
    folder = DATA / "engine"
    table, label = documents_table(corpus)
    marker = folder / "source.txt"
    if not (marker.exists() and marker.read_text() == f"{label} {table.num_rows} {subset_docs}"):
        shutil.rmtree(folder, ignore_errors=True)
        write_dataset(folder / "documents", table.to_batches(8192), DOCUMENTS_SCHEMA, "documents")
        step = max(1, table.num_rows // subset_docs)
        subset = table.take(pa.array(range(0, table.num_rows, step)[:subset_docs]))
        write_dataset(folder / "subset", subset.to_batches(8192), DOCUMENTS_SCHEMA, "documents")
        marker.write_text(f"{label} {table.num_rows} {subset_docs}")
    return str(folder / "documents"), str(folder / "subset"), label


def text_mb(path: str) -> tuple[int, float]:
    table = Dataset.open(path).read_table(["text"])
    return table.num_rows, pc.sum(pc.binary_length(table.column("text"))).as_py() / 1e6


def timed(fn):
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, load


def row(name: str, seconds: float, mb: float, docs: int, load: float, note: str = "") -> str:
    return f"| {name} | {seconds:.1f} | {mb / seconds:.2f} | {docs / seconds:,.0f} | {load:.1f} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DATA / "corpus")
    parser.add_argument("--subset-docs", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma-separated: dedup,embed,shards")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    documents, subset, label = prepare(args.corpus, args.subset_docs)
    docs, mb = text_mb(documents)
    sub_docs, sub_mb = text_mb(subset)
    print(
        f"input: {label}: {docs:,} documents, {mb:.1f} MB of text; subset {sub_docs:,} docs, {sub_mb:.1f} MB"
    )
    print(f"machine: {os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.1f}")

    scratch = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    local = LocalEngine()
    start = time.perf_counter()
    ray_engine = RayEngine(num_cpus=2, temp_dir=tempfile.mkdtemp(prefix="ray-"))
    ray_start = time.perf_counter() - start
    print(f"ray.init(num_cpus=2): {ray_start:.1f} s")
    try:
        _, warm, _ = timed(lambda: dedup_distributed(subset, DedupConfig(), ray_engine))
        print(f"ray warm-up (dedup of the subset, starts the workers): {warm:.1f} s")
        header = "| engine | seconds | MB/s | docs/s | load avg | note |\n|---|---|---|---|---|---|"
        lines: list[str] = []

        if "dedup" not in skip:
            lines += [
                "",
                f"### dedup, {docs:,} documents, {mb:.0f} MB (global mode, recipe defaults)",
                "",
                header,
            ]
            for _ in range(args.repeats):
                reference, seconds, load = timed(
                    lambda: dedup_documents(documents, DedupConfig(), str(scratch), None, local)
                )
                kept = int(pc.sum(reference.column("kept")).as_py())
                lines.append(row("local", seconds, mb, docs, load, f"kept {kept:,}"))
                print(lines[-1], flush=True)
                for workers in (1, 2):
                    ray_engine.workers = workers
                    run, seconds, load = timed(
                        lambda: dedup_distributed(documents, DedupConfig(), ray_engine)
                    )
                    same = "identical" if run.decisions.equals(reference) else "DIFFERENT"
                    steps = ", ".join(f"{k} {v:.1f}" for k, v in run.seconds.items())
                    lines.append(
                        row(f"ray, {workers} worker(s)", seconds, mb, docs, load, f"{same}; {steps}")
                    )
                    print(lines[-1], flush=True)
                # components as star rounds on Ray, not union-find on the driver
                run, seconds, load = timed(
                    lambda: dedup_distributed(documents, DedupConfig(), ray_engine, local_edges=0)
                )
                same = "identical" if run.decisions.equals(reference) else "DIFFERENT"
                steps = ", ".join(f"{k} {v:.1f}" for k, v in run.seconds.items())
                note = f"{same}; {run.rounds} star rounds; {steps}"
                lines.append(row("ray, 2 workers, distributed components", seconds, mb, docs, load, note))
                print(lines[-1], flush=True)

        if "embed" not in skip:
            encoder = HashedEncoder()
            title = f"### embeddings (hashed encoder, 256 dims), {sub_docs:,} documents, {sub_mb:.0f} MB"
            lines += ["", title, "", header]
            runs = [("local, 1 process", local), ("local, 2-process pool", LocalEngine(workers=2)),
                    ("ray, 1 actor", ray_engine), ("ray, 2 actors", ray_engine)]  # fmt: skip
            for _ in range(args.repeats):
                reference = None
                for i, (name, engine) in enumerate(runs):
                    if engine is ray_engine:
                        ray_engine.workers = 1 if "1" in name else 2
                    out = scratch / f"emb-{i}"
                    shutil.rmtree(out, ignore_errors=True)
                    _, seconds, load = timed(
                        lambda e=engine, o=out: e.embed(subset, o, encoder, rows_per_part=1000)
                    )
                    vectors = EmbeddingStore.open(out).read()[1]
                    reference = vectors if reference is None else reference
                    same = "identical" if (vectors == reference).all() else "DIFFERENT"
                    lines.append(row(name, seconds, sub_mb, sub_docs, load, same))
                    print(lines[-1], flush=True)

        if "shards" not in skip:
            tokenizer = train_tokenizer(
                subset, config=TokenizerConfig(vocab_size=4096, sample_documents=1000)
            )
            config = ShardConfig(seq_len=1024, batch_documents=256)
            lines += [
                "",
                f"### shards (BPE 4096, seq_len 1024), {sub_docs:,} documents, {sub_mb:.0f} MB",
                "",
                header,
            ]
            for _ in range(args.repeats):
                out = scratch / "shards-local"
                reference, seconds, load = timed(lambda o=out: local.tokenize(subset, o, tokenizer, config))
                lines.append(row("local", seconds, sub_mb, sub_docs, load))
                print(lines[-1], flush=True)
                for workers in (1, 2):
                    ray_engine.workers = workers
                    out = scratch / f"shards-ray-{workers}"
                    index, seconds, load = timed(
                        lambda o=out: ray_engine.tokenize(subset, o, tokenizer, config)
                    )
                    same = "identical" if index == reference else "DIFFERENT"
                    lines.append(row(f"ray, {workers} worker(s)", seconds, sub_mb, sub_docs, load, same))
                    print(lines[-1], flush=True)
        print("\n".join(lines))
    finally:
        ray_engine.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
