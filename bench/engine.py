"""Engine benchmark: every heavy stage on the local engine and on Ray with 1 and 2 workers.

    .venv/bin/python bench/build_corpus.py      # once, optional: bench/data/corpus (529 MB)
    .venv/bin/python bench/engine.py [--corpus bench/data/corpus] [--subset-docs 3000] [--repeats 1]

Input: the real-text corpus `bench/build_corpus.py` writes (Python sources,
docs and man pages, with real exact and near duplicates), turned into a
documents dataset under bench/data/engine/ (git ignores bench/data). Without
that corpus, the bundled default corpus is used, repeated four times under
new ids (so a quarter of it is exact duplicates).

Stages, in pipeline order, each on the same input for every engine: dedup
(whole corpus, SlimPajama defaults), then on the subset: embeddings (hashed
encoder), clusters (k-means fit + assignment), semantic dedup, quality
scoring (the heuristic rules), kMQ selection (runs on the driver by design:
listed for completeness) and shards (BPE tokenisation + packing). Every
Ray output is compared with the local one (decisions, manifests with every
part's sha256, the shard index): "identical" or "DIFFERENT".

Traffic: a `Metered` engine wraps each engine and counts the pickled bytes
of what `map` sends and gets back: the function and the worker state
(`setup`: an encoder, a model), which travel once per worker, then every
part and every result, per document. That is what crosses the network
between the driver and the workers on a cluster (the local engine pickles
nothing; the bytes are what it would send).
Dedup's shuffles run inside Ray Data (`Engine.frame`) and are not metered;
its model is checked against the signature table it collects. Each line
prints the measured bytes per document beside the scaling model's.

Ray runs on this machine: `num_cpus=2`, started once (its start-up is
reported, not counted); a warm-up job starts the worker processes. Seconds
are wall time; the load average is printed (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation import default_corpus  # noqa: E402
from curation.embeddings import HashedEncoder, KMeansConfig, cluster_embeddings, embed_dataset  # noqa: E402
from curation.engine import Engine, LocalEngine, get_engine  # noqa: E402
from curation.selectors.dedup import DedupConfig, dedup_documents  # noqa: E402
from curation.selectors.diversity import KMQConfig  # noqa: E402
from curation.selectors.quality import QualityConfig  # noqa: E402
from curation.selectors.semdedup import SemDeDupConfig  # noqa: E402
from curation.stages import quality_stage, select_stage, semdedup_stage  # noqa: E402
from curation.storage import DOCUMENTS_SCHEMA, Dataset, ingest, write_dataset  # noqa: E402
from curation.storage.shards import ShardConfig, write_shards  # noqa: E402
from curation.storage.tokenizer import TokenizerConfig, train_tokenizer  # noqa: E402

DATA = ROOT / "bench" / "data"

# What crosses between the driver and the workers, per document, by the
# scaling model in bench/results/engine.md (bytes; "part" terms are per part).
MODEL = {
    "dedup": "signatures back: ~110 B + id + source per document (collected on the driver)",
    "embed": "the encoder once per worker; row ranges out (~100 B per part), part descriptions "
    "back (~200 B per part); vectors stay on storage",
    "cluster": "sample rows out (8 B per sampled row), sample vectors back (dim x 4 B per sampled row); "
    "centroids once per worker; assignments stay on storage",
    "semdedup": "each row's part (4 B) and row lists (8 B per document) out, row + max similarity + "
    "nearest row back (20 B per document); vectors regrouped through storage, the store read once",
    "quality": "row ranges out; ids, sources and 25 signals x 4 B back (~160 B per document)",
    "select": "nothing: runs on the driver (16 B per document in memory)",
    "shards": "row ranges out; each document's columns (its text) and token ids (~3 B per token "
    "pickled) back to the driver, which packs",
}


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


class Metered(Engine):
    """An engine that counts the pickled bytes `map` sends and receives."""

    def __init__(self, inner: Engine):
        self.inner, self.name, self.distributed = inner, inner.name, inner.distributed
        self.fixed = self.sent = self.received = self.parts = 0

    @property
    def gpus(self) -> int:
        return self.inner.gpus

    @property
    def slots(self) -> int:
        return self.inner.slots

    def describe(self) -> str:
        return self.inner.describe()

    def map(self, fn, items, *, setup=None, cpus=1, gpus=0):
        items = list(items)
        self.fixed += len(pickle.dumps(fn)) + len(pickle.dumps(setup))  # once per worker at most
        self.sent += sum(len(pickle.dumps(i)) for i in items)
        self.parts += len(items)
        for result in self.inner.map(fn, items, setup=setup, cpus=cpus, gpus=gpus):
            self.received += len(pickle.dumps(result))
            yield result

    def frame(self, fn, items, *, cpus=1):
        return self.inner.frame(fn, items, cpus=cpus)


def same_files(a: Path, b: Path, names: list[str]) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def stages(documents: str, subset: str, scratch: Path) -> dict[str, Callable[[Engine, Path], list[str]]]:
    """Each stage: a function of (engine, output folder) that returns the files to compare."""
    encoder = HashedEncoder()
    prepared = scratch / "prepared"
    embed_dataset(subset, prepared / "embeddings", encoder, rows_per_part=1000)
    k = max(2, round(Dataset.open(subset).rows ** 0.5))
    cluster_embeddings(prepared / "embeddings", prepared / "clusters", k, KMeansConfig(niter=20))
    tokenizer = train_tokenizer(subset, config=TokenizerConfig(vocab_size=4096, sample_documents=1000))
    emb, clu = str(prepared / "embeddings"), str(prepared / "clusters")

    def dedup(engine, out):
        decisions = dedup_documents(documents, DedupConfig(), str(out), None, engine)
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(decisions, out / "decisions.parquet")
        return ["decisions.parquet"]

    def embed(engine, out):
        embed_dataset(subset, out, encoder, rows_per_part=1000, engine=engine)
        return ["manifest.json"]

    def cluster(engine, out):
        cluster_embeddings(emb, out, k, KMeansConfig(niter=20), engine=engine)
        return ["manifest.json", "centroids.npy"]

    def semdedup(engine, out):
        semdedup_stage(subset, emb, clu, str(out), SemDeDupConfig(), engine=engine)
        return ["decisions.parquet"]

    def quality(engine, out):
        quality_stage(subset, str(out), QualityConfig(), engine=engine)
        return ["scores.parquet"]

    def select(engine, out):
        select_stage(subset, clu, str(out), KMQConfig(budget=Dataset.open(subset).rows // 2, rounds=1),
                     engine=engine)  # fmt: skip
        return ["decisions.parquet"]

    def shards(engine, out):
        write_shards(subset, out, tokenizer, ShardConfig(seq_len=1024, batch_documents=256), engine=engine)
        return ["index.json"]

    return {"dedup": dedup, "embed": embed, "cluster": cluster, "semdedup": semdedup, "quality": quality,
            "select": select, "shards": shards}  # fmt: skip


def row(name, seconds, base, docs, load, metered: Metered, note) -> str:
    ratio = base / seconds if seconds else 0.0
    traffic = f"{metered.sent / docs:,.1f} / {metered.received / docs:,.1f}" if metered.parts else "-"
    fixed = f"{metered.fixed / 1e6:,.2f}" if metered.parts else "-"
    return (
        f"| {name} | {seconds:.1f} | {ratio:.2f}x | {docs / seconds:,.0f} | {metered.parts} | {fixed} "
        f"| {traffic} | {load:.1f} | {note} |"
    )


def run_stage(name, fn, engines, docs, scratch, repeats) -> list[str]:
    lines = [
        "",
        f"### {name} ({docs:,} documents)",
        "",
        f"Model: {MODEL[name]}.",
        "",
        "| engine | seconds | local / this | docs/s | parts | MB once per worker | bytes out / back per doc "
        "| load avg | output |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for repeat in range(repeats):
        reference, base = None, None
        for label, engine in engines:
            out = scratch / f"{name}-{label.replace(' ', '-')}-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            metered = Metered(engine)
            files, seconds, load = timed(lambda m=metered, o=out: fn(m, o))
            reference = reference or out
            base = base or seconds
            note = "reference" if out == reference else ("identical" if same_files(out, reference, files)
                                                          else "DIFFERENT")  # fmt: skip
            lines.append(row(label, seconds, base, docs, load, metered, note))
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DATA / "corpus")
    parser.add_argument("--subset-docs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated stages (default: all)")
    args = parser.parse_args()

    documents, subset, label = prepare(args.corpus, args.subset_docs)
    docs, mb = text_mb(documents)
    sub_docs, sub_mb = text_mb(subset)
    print(
        f"input: {label}: {docs:,} documents, {mb:.1f} MB of text; subset {sub_docs:,} docs, {sub_mb:.1f} MB"
    )
    print(f"machine: {os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.1f}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    start = time.perf_counter()
    ray_engine = get_engine("ray", num_cpus=2, temp_dir=tempfile.mkdtemp(prefix="ray-"))
    print(f"ray start (num_cpus=2): {time.perf_counter() - start:.1f} s")
    one = get_engine("ray", workers=1)  # the same Ray, at most one part at a time
    try:
        warm = timed(lambda: list(ray_engine.map(abs, range(8))))[1]
        print(f"ray warm-up (starts the workers): {warm:.1f} s")
        engines = [("local", LocalEngine()), ("ray, 1 worker", one), ("ray, 2 workers", ray_engine)]
        chosen = set(filter(None, args.only.split(",")))
        lines = []
        for name, fn in stages(documents, subset, scratch).items():
            if not chosen or name in chosen:
                lines += run_stage(
                    name, fn, engines, docs if name == "dedup" else sub_docs, scratch, args.repeats
                )
        print("\n".join(lines))
    finally:
        one.close()
        ray_engine.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
