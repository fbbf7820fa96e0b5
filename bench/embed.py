"""Encoder throughput: our MiniLMEncoder vs a plain SentenceTransformer.encode call.

Same model files (the bundled all-MiniLM-L6-v2), same texts (mixed-length
stdlib docstrings and function sources), same batch size and truncation.

    .venv/bin/python bench/embed.py [--docs 400] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from stdlib_docs import mixed_sample

from curation.device import resolve
from curation.embeddings.encoders import MiniLMEncoder, bundled_minilm_path


def timed(encoders, texts, repeats):
    """Median wall and CPU seconds per encoder. Runs alternate, so load from
    other processes hits both; CPU time (this process, all threads) is the
    steadier number on a shared machine."""
    for encode in encoders.values():
        encode(texts[:16])  # warm-up
    wall = {name: [] for name in encoders}
    cpu = {name: [] for name in encoders}
    outputs = {}
    for _ in range(repeats):
        for name, encode in encoders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = encode(texts)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    median = statistics.median
    return outputs, {n: median(s) for n, s in wall.items()}, {n: median(s) for n, s in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = resolve(args.device)
    texts = mixed_sample(args.docs)
    lengths = np.array([len(t) for t in texts])
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90]).astype(int)
    print(f"{len(texts)} texts, characters p10/p50/p90/max: {p10}/{p50}/{p90}/{lengths.max()}")
    print(f"device {device.describe()}, torch threads {torch.get_num_threads()}")

    ours = MiniLMEncoder(device=device, max_length=256, micro_batch=args.batch)
    peer = SentenceTransformer(
        str(bundled_minilm_path()), device=str(device.torch_device), local_files_only=True
    )
    peer.max_seq_length = 256

    def peer_encode(batch):
        return peer.encode(batch, batch_size=args.batch, normalize_embeddings=True, convert_to_numpy=True)

    encoders = {"sentence-transformers encode": peer_encode, "curation MiniLMEncoder": ours.encode}
    outputs, wall, cpu = timed(encoders, texts, args.repeats)
    print("| encoder | median wall s | docs/s (wall) | median CPU s | docs per CPU-s |")
    print("|---|---|---|---|---|")
    for name in encoders:
        n = len(texts)
        print(f"| {name} | {wall[name]:.2f} | {n / wall[name]:.1f} | {cpu[name]:.2f} | {n / cpu[name]:.1f} |")
    peer_name, ours_name = list(encoders)
    cosine = (outputs[peer_name] * outputs[ours_name]).sum(axis=1)
    speed_wall, speed_cpu = wall[peer_name] / wall[ours_name], cpu[peer_name] / cpu[ours_name]
    print(f"\nours / peer speed: wall {speed_wall:.2f}x, CPU {speed_cpu:.2f}x")
    print(f"cosine between ours and peer vectors: min {cosine.min():.6f}")


if __name__ == "__main__":
    main()
