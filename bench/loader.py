"""Loader throughput: sequences/s through the mixture sampler vs a plain memmap loop.

All loops read the same shard set: `batch` random sequences per step, copied
into one (batch, seq_len) array. The plain loop draws uniform indices, sorts
them and copies each shard's run with np.take from np.memmap views of the .bin
files. Ours draws sources by the Cooldown mixture (T=5, then T=1) and indices by
RS2 (r = 10%) inside each source, and reads through ShardReader, one batch at a
time (`next_batch` + `read_batch`) or through ShardLoader, which draws and reads
16 steps at a time.

The bundled corpus makes only ~5 MB of shards, which sit in the CPU cache;
`--tile N` repeats every source's sequences N times so the reads come from RAM,
as they do for a real corpus.

    .venv/bin/python bench/loader.py --tile 200
    .venv/bin/python bench/loader.py --shards DIR    # an existing shard set
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from curation import default_corpus
from curation.selectors.mixture import Mixture, MixtureConfig
from curation.selectors.rs2 import RS2Config
from curation.selectors.sampler import MixtureSampler
from curation.storage import ingest
from curation.storage.shards import INDEX_FILE, ShardConfig, ShardReader, write_shards
from curation.storage.tokenizer import TokenizerConfig, train_tokenizer
from curation.train.loader import ShardLoader

READ_AHEAD = 16


def build_shards(work: Path, seq_len: int) -> Path:
    specs = default_corpus.build(work / "raw")
    ingest(specs, str(work / "documents"))
    tokenizer = train_tokenizer(work / "documents", config=TokenizerConfig(vocab_size=8192))
    out = work / "shards"
    write_shards(work / "documents", out, tokenizer, ShardConfig(seq_len=seq_len, text_copy=False))
    return out


def tile_shards(source: ShardReader, out: Path, times: int) -> Path:
    """A copy of the set with each source's sequences repeated `times` times, one file per source."""
    index = copy.deepcopy(source.index)
    for name in source.sources:
        rows = source.get_many(name, np.arange(source.num_sequences(name)))
        path = out / "shards" / name / f"{name}-00000.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(path, "wb") as handle:
            for _ in range(times):
                data = rows.tobytes()
                handle.write(data)
                digest.update(data)
        entry = dict(index["sources"][name]["shards"][0])
        entry.update(
            path=f"shards/{name}/{name}-00000.bin",
            sequences=len(rows) * times,
            bytes=path.stat().st_size,
            sha256=digest.hexdigest(),
        )
        index["sources"][name]["shards"] = [entry]
    (out / INDEX_FILE).write_bytes(orjson.dumps(index))
    return out


def plain_loop(reader: ShardReader, batch: int, steps: int, seed: int) -> float:
    """Uniform random sequences from np.memmap views of every shard; seconds taken."""
    maps = []
    for source in reader.sources:
        for entry in reader.index["sources"][source]["shards"]:
            path = reader.folder.join(entry["path"]).path
            maps.append(np.memmap(path, dtype=reader.dtype, mode="r").reshape(-1, reader.seq_len))
    starts = np.cumsum([0] + [len(m) for m in maps])
    rng = np.random.default_rng(seed)
    begin = time.perf_counter()
    for _ in range(steps):
        # Sorted, so each shard's rows are one run copied straight into `out`: the
        # same copy our reader does, so the difference is the sampling logic.
        # A fresh `out` per batch, as a loader that hands batches out must have.
        out = np.empty((batch, reader.seq_len), dtype=reader.dtype)
        indices = np.sort(rng.integers(0, starts[-1], size=batch))
        cuts = np.searchsorted(indices, starts)
        for shard in range(len(maps)):
            a, b = cuts[shard], cuts[shard + 1]
            if a < b:
                np.take(maps[shard], indices[a:b] - starts[shard], axis=0, out=out[a:b], mode="clip")
    return time.perf_counter() - begin


def sampler_loop(reader: ShardReader, batch: int, steps: int, seed: int, read_ahead: int) -> float:
    """Cooldown mixture over sources, RS2 (r = 10%) inside each; seconds taken."""
    sizes = {s: reader.num_sequences(s) for s in reader.sources}
    mixture = Mixture(MixtureConfig()).fit(sizes, total_steps=steps)
    sampler = MixtureSampler(mixture, sizes, batch, seed=seed, inner=RS2Config(fraction=0.1))
    begin = time.perf_counter()
    if read_ahead == 1:
        for _ in range(steps):
            drawn = sampler.next_batch()
            reader.read_batch(sampler.sources, drawn.source_ids, drawn.indices)
    else:
        for _ in ShardLoader(reader, sampler, read_ahead):
            pass
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=Path, help="an existing shard set (default: build one)")
    parser.add_argument("--tile", type=int, default=1, help="repeat each source's sequences N times")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        shards = args.shards or build_shards(Path(work), args.seq_len)
        if args.tile > 1:
            shards = tile_shards(ShardReader(shards), Path(work) / "tiled", args.tile)
        reader = ShardReader(shards, verify="open")
        total = sum(reader.num_sequences(s) for s in reader.sources)
        size = total * reader.seq_len * reader.dtype.itemsize / 2**20
        shape = f"{total} sequences of {reader.seq_len} tokens ({reader.dtype}, {size:,.0f} MiB)"
        print(f"shards: {shape}, {len(reader.sources)} sources, batch {args.batch}, {args.steps} steps")
        times: dict[str, list[float]] = {"plain": [], "batch": [], "ahead": []}
        for repeat in range(args.repeats):  # interleaved, so drift hits all alike
            times["plain"].append(plain_loop(reader, args.batch, args.steps, seed=repeat))
            times["batch"].append(sampler_loop(reader, args.batch, args.steps, repeat, 1))
            times["ahead"].append(sampler_loop(reader, args.batch, args.steps, repeat, READ_AHEAD))
    rate = {name: args.batch * args.steps / min(values) for name, values in times.items()}
    labels = {
        "plain": "plain memmap loop",
        "batch": "sampler, next_batch",
        "ahead": f"ShardLoader(read_ahead={READ_AHEAD})",
    }
    for name, label in labels.items():
        overhead = "" if name == "plain" else f"   overhead {(rate['plain'] / rate[name] - 1) * 100:+.1f}%"
        print(f"{label:26s}: {rate[name]:12,.0f} sequences/s (best of {args.repeats}){overhead}")


if __name__ == "__main__":
    main()
