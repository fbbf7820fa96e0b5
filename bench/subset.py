"""`curation subset` against HF tokenizers' own train + encode_batch on the same text.

    .venv/bin/python bench/build_corpus.py --kind prose            # once: bench/data/prose
    .venv/bin/curation ingest bench/data/prose --source-field source -o /tmp/prose-docs
    .venv/bin/python bench/subset.py /tmp/prose-docs [--tokens 2e7]

Ours: `materialize_subset` with the CLI's defaults (a BPE trained on a sample of
the candidates, a tokens budget under the Cooldown mixture, shards and the
text copy), timed as a whole. The peer is the tokenizers library doing the
least the job needs: `train_from_iterator` on the same sample of texts, then
`encode_batch_fast` on the texts of the documents the subset chose (read from
its text copy before the clock starts). The ratio is ours over the peer.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.cli import subset_config  # noqa: E402
from curation.storage import Dataset  # noqa: E402
from curation.storage.shards import TEXT_DIR  # noqa: E402
from curation.storage.tokenizer import sample_texts, tokenizer_from_texts  # noqa: E402
from curation.subset import materialize_subset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("documents", type=Path)
    parser.add_argument("--tokens", type=float, default=2e7)
    parser.add_argument("--work", type=Path, default=ROOT / "bench/data/subset-work")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    config = subset_config(f"tokens={int(args.tokens)}", 5.0, "cooldown", 1024, 8192, 0, "tokens")

    start = time.perf_counter()
    report = materialize_subset(str(args.documents), str(args.work / "ours"), config)
    ours = time.perf_counter() - start

    dataset = Dataset.open(args.documents)
    sample = list(sample_texts(dataset, config.tokenizer))
    chosen = pq.read_table(args.work / "ours" / TEXT_DIR, columns=["text"]).column("text").to_pylist()
    start = time.perf_counter()
    tokenizer = tokenizer_from_texts(sample, config.tokenizer)
    trained = time.perf_counter() - start
    encodings = tokenizer.encode_batch_fast(chosen, add_special_tokens=False)
    peer = time.perf_counter() - start
    tokens = sum(len(e) for e in encodings) + len(encodings)  # ids plus one EOS each, as the shards count

    mb = sum(len(t.encode()) for t in chosen) / 1e6
    print(f"documents: {dataset.rows} in {args.documents}; subset: {report.selected} documents, {mb:.1f} MB")
    print(f"ours (curation subset, tokens={int(args.tokens)}): {ours:.1f} s, {report.tokens} tokens")
    print(
        f"tokenizers train_from_iterator + encode_batch_fast: {peer:.1f} s "
        f"(train {trained:.1f} s, encode {peer - trained:.1f} s), {tokens} tokens"
    )
    print(f"ours / tokenizers: {ours / peer:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
