"""What the embedding-based experiments (semdedup.py, kmq.py) share: the
chosen corpus (deduplicated: exact + fuzzy by default, or as `dedup` says)
split by a hash of the id into a training pool and a held-out set, each
written as its own documents dataset; the pool's embeddings and k-means
clusters (computed once); the held-out set's embeddings (for coverage); one
tokenizer; the held-out validation tensors.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import common
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from curation.embeddings import EmbeddingStore, StaticEncoder, cluster_embeddings, embed_dataset
from curation.embeddings.encoders import HashedEncoder, MiniLMEncoder
from curation.selectors.dedup import DedupConfig
from curation.stages import default_k
from curation.storage import Dataset
from curation.storage.decisions import apply_decisions
from curation.storage.tokenizer import estimated_tokens

HELD_OUT = 0.1  # share of documents held out, by a hash of the id
MINILM_TOKENS = 64  # MiniLM truncation: ~30 docs/s here at 64 tokens, ~6 at 256


MODELS = {"base": common.MODEL, "small": common.SMALL_MODEL}


def model_words(args: argparse.Namespace) -> str:
    """The trained model, as the reports say it."""
    model = MODELS[args.model]
    return f"a {model.layers}-layer GPT of width {model.width} (--model {args.model})"


def add_model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        choices=tuple(MODELS),
        default="small",
        help="base: 2 layers of width 128; small: 1 layer of width 64, ~4.5x the steps a second, "
        "for runs long enough that the loss curves flatten",
    )


def add_flags(p: argparse.ArgumentParser) -> None:
    """--encoder, --threads and --model, which the embedding scripts take."""
    add_model_flag(p)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads: 1 is ~4x faster per step than 2 when other jobs share the 2 cores",
    )
    p.add_argument(
        "--encoder",
        choices=("static", "hashed", "minilm"),
        default="static",
        help="the static encoder distilled from all-MiniLM-L6-v2 (default: semantic and fast), hashed "
        f"n-grams (lexical) or all-MiniLM-L6-v2 truncated to {MINILM_TOKENS} tokens (~4 min for the "
        "corpus on 2 cores)",
    )


@dataclass
class Corpus:
    pool: str  # documents dataset: the training pool
    held: str  # documents dataset: the held-out documents
    embeddings: str  # the pool's embedding store
    clusters: str  # k-means over the pool's embeddings
    k: int
    tokenizer: Path
    validation: dict[str, torch.Tensor]  # held-out sequences by source
    held_vectors: np.ndarray  # held-out embeddings, for coverage
    encoder: str
    embed_seconds: float

    def pool_vectors(self) -> np.ndarray:
        return EmbeddingStore.open(self.embeddings).read()[1]

    def pool_ids(self) -> list[str]:
        return Dataset.open(self.pool).read_table(["id"]).column("id").to_pylist()


def prepare(
    args: argparse.Namespace, work: Path, pool_share: float = 1.0, dedup: DedupConfig | None = None
) -> Corpus:
    """The held-out set is always the same 10% (by hash); the pool is the
    hash-chosen `pool_share` of the rest (all of it by default). `dedup`: the
    deduplication run first (default: exact + fuzzy, the cached one)."""
    torch.set_num_threads(args.threads)
    pool, held = split_pool(args, work, pool_share, dedup)
    encoder = {"minilm": lambda: MiniLMEncoder(max_tokens=MINILM_TOKENS), "hashed": HashedEncoder}.get(
        args.encoder, StaticEncoder
    )()
    started = time.perf_counter()
    embed_dataset(pool, str(work / "embeddings"), encoder)
    embed_dataset(held, str(work / "held-embeddings"), encoder)
    embed_seconds = time.perf_counter() - started
    rows = EmbeddingStore.open(work / "embeddings").rows
    k = default_k(rows)
    cluster_embeddings(str(work / "embeddings"), str(work / "clusters"), k)
    common.log(f"{rows} pool documents embedded ({args.encoder}, {embed_seconds:.0f} s), {k} clusters")
    tokenizer = common.shared_tokenizer(pool, work / "tokenizer.json")
    common.shards(held, work / "heldout", tokenizer)
    return Corpus(
        pool=pool,
        held=held,
        embeddings=str(work / "embeddings"),
        clusters=str(work / "clusters"),
        k=k,
        tokenizer=tokenizer,
        validation=common.sequences_of(work / "heldout", per_source=8 if args.quick else 64),
        held_vectors=EmbeddingStore.open(work / "held-embeddings").read()[1],
        encoder=args.encoder,
        embed_seconds=embed_seconds,
    )


def split_pool(
    args: argparse.Namespace, work: Path, pool_share: float = 1.0, dedup: DedupConfig | None = None
) -> tuple[str, str]:
    """(training pool, held-out set) as documents datasets: the corpus after
    `dedup`, split by a hash of the id; the pool cut to a hash-chosen share."""
    documents = common.deduplicated(common.corpus_documents(args, work), work, dedup)
    pool_table, held_table = common.split_table(
        documents, work / "split", lambda i: common.stable_fraction(i) < HELD_OUT
    )
    pool = kept_documents(documents, pool_table, work / "pool")
    if pool_share < 1.0:
        pool = _subset(pool, work / "pool-share", lambda i: common.stable_fraction("p" + i) < pool_share)
    return pool, kept_documents(documents, held_table, work / "held")


def share_for_tokens(args: argparse.Namespace, work: Path, tokens: int) -> float:
    """The pool share (for `split_pool`) that holds about `tokens` tokens by
    ceil(chars / 4) of the deduplicated corpus; all of it with --quick."""
    if args.quick:
        return 1.0
    documents = common.deduplicated(common.corpus_documents(args, work), work)
    chars = Dataset.open(documents).read_table(["n_chars"]).column(0).to_numpy()
    return min(1.0, tokens / float(np.sum(estimated_tokens(chars)) * (1 - HELD_OUT)))


def _subset(documents: str, out: Path, keep) -> str:
    ids = Dataset.open(documents).read_table(["id"]).column("id").to_pylist()
    table = pa.table({"id": pa.array(ids, pa.string()), "kept": pa.array([keep(i) for i in ids])})
    return kept_documents(documents, table, out)


def kept_documents(documents: str, selection, out: Path) -> str:
    """The documents a selection table keeps, as their own dataset."""
    table = selection if isinstance(selection, pa.Table) else pq.read_table(selection)
    if not (out / "_manifest.json").exists():
        apply_decisions(Dataset.open(documents), table, str(out), {"split": str(out.name)})
    return str(out)


def coverage(selected: np.ndarray, pool_vectors: np.ndarray, held_vectors: np.ndarray) -> float:
    """Mean cosine distance from each held-out document to its nearest selected
    pool document (vectors are unit length): lower = the selection covers more."""
    chosen = torch.from_numpy(np.ascontiguousarray(pool_vectors[selected]))
    best = []
    for block in torch.from_numpy(held_vectors).split(1024):
        best.append((block @ chosen.T).max(dim=1).values)
    return float(1.0 - torch.cat(best).mean())


def random_selection(n: int, keep: int, seed: int) -> np.ndarray:
    """A uniformly random `keep` of `n` rows, as a boolean mask."""
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, size=keep, replace=False)] = True
    return mask


def sequences_in(shard_set: Path) -> int:
    from curation.storage.shards import ShardReader

    reader = ShardReader(str(shard_set))
    return sum(reader.num_sequences(name) for name in reader.sources)


def encoder_note(corpus) -> str:
    if corpus.encoder == "static":
        return (
            f"the static encoder (model2vec, distilled from all-MiniLM-L6-v2; {corpus.embed_seconds:.0f} s "
            "for pool and held-out set)."
        )
    if corpus.encoder == "minilm":
        return f"all-MiniLM-L6-v2, first {MINILM_TOKENS} tokens ({corpus.embed_seconds:.0f} s)."
    return (
        f"hashed n-grams ({corpus.embed_seconds:.0f} s); MiniLM embeds ~30 docs/s on this CPU even "
        f"truncated to {MINILM_TOKENS} tokens, minutes of the 10-minute budget "
        "(`--encoder minilm` runs it)."
    )


def train_task(task) -> tuple[str, list[dict]]:
    """One training run for common.parallel_map: (arm, shard set, config, out
    folder, validation) -> (arm, metrics)."""
    arm, shard_set, config, out, validation = task
    records = common.train(shard_set, config, out, validation)
    common.log(f"seed {config.seed}: {arm} done")
    return arm, records


def mean_by_source(runs: list[list[dict]], source: str) -> str:
    """Mean ± std over seeds of one held-out source's final loss."""
    return common.mean_std([common.final_eval(r)["by_source"][source] for r in runs])


def loss_panel(ax, runs: dict, colors: dict, steps: int) -> None:
    """Held-out loss over steps, one line (mean) and band (min..max) per arm."""
    for arm, color in colors.items():
        common.curves(ax, arm, [common.eval_curve(r) for r in runs[arm]], color=color)
    ax.set(xlabel="step", ylabel="held-out loss (nats/token)", title=f"{steps} steps each, batch 16 x 128")
    ax.legend()
