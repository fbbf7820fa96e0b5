"""Heuristic quality rules: ours (`curation.selectors.quality.measure`, one numba
kernel) against datatrove's GopherQualityFilter, GopherRepetitionFilter and
C4QualityFilter on the same documents, with the published thresholds on both
(datatrove's C4 is given C4's 5 words per line and 3 sentences; its defaults are
3 and 5). Prints MB/s for each, the speed ratio, and how often the keep/drop
decisions agree, with the commonest disagreements.

Documents: real prose-like text already on this machine: bench/build_corpus.py's
`debian-doc` READMEs, changelogs and copyright files and the `venv` packages'
.md/.rst/.txt files (sampled by a hash of the path up to --max-mb), and the
bundled corpus's prose (docstrings, module docstrings, the language reference,
IDLE's news, the license: many short documents).

    .venv/bin/python bench/quality.py [--max-mb 20] [--repeats 3]

datatrove runs one document at a time in one process (its executors add
processes); ours is timed on one thread and on all cores.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time

import numba
import numpy as np
from build_corpus import candidates, keep_fraction, read_text, sampled
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

from curation import default_corpus
from curation.selectors.quality import C4Rules, GopherQuality, GopherRepetition, first_failed, measure
from curation.storage import Dataset, ingest

SOURCES = {"debian-doc", "venv"}
SUFFIXES = {".md", ".rst", ".txt", ".gz", ""}


def bundled_prose() -> list[str]:
    with tempfile.TemporaryDirectory(prefix="curation-bench-") as tmp:
        inputs = [i for i in default_corpus.build(f"{tmp}/raw") if i.source != "code"]
        ingest(inputs, f"{tmp}/documents")
        return Dataset.open(f"{tmp}/documents").read_table(["text"]).column("text").to_pylist()


def documents(max_mb: float) -> list[str]:
    usable = []
    for source, root, path in candidates():
        if source in SOURCES and path.suffix in SUFFIXES:
            text = read_text(path)
            if text is not None and text.strip():
                usable.append((str(path.relative_to(root)), text))
    total = sum(len(t.encode()) for _, t in usable)
    fraction = keep_fraction(total, int(max_mb * 1e6))
    return [t for key, t in usable if sampled(key, fraction)] + bundled_prose()


def datatrove_filters():
    return {
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "c4": C4QualityFilter(min_num_sentences=3, min_words_per_line=5),
        # The letter-word rule is where the two differ most (see the README): the rest without it.
        "gopher_quality without letter-words": GopherQualityFilter(max_non_alpha_words_ratio=None),
    }


OURS = {
    "gopher_quality": GopherQuality(),
    "gopher_repetition": GopherRepetition(),
    "c4": C4Rules(),
    "gopher_quality without letter-words": GopherQuality(min_alpha_words=0),
}
TIMED = ("gopher_quality", "gopher_repetition", "c4")


def run_datatrove(texts: list[str]) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Each filter's reason per document ("" kept) and its seconds."""
    reasons, seconds = {}, {}
    for name, block in datatrove_filters().items():
        block.filter(Document(text=texts[0], id="warm-up"))  # loads spaCy's tokenizer
        start, out = time.perf_counter(), []
        for i, text in enumerate(texts):
            verdict = block.filter(Document(text=text, id=str(i)))  # C4 rewrites text: a fresh doc each
            out.append("" if verdict is True else verdict[1] if isinstance(verdict, tuple) else "dropped")
        seconds[name] = time.perf_counter() - start
        reasons[name] = out
    seconds["chained"] = chained(texts)
    return reasons, seconds


def chained(texts: list[str]) -> float:
    """Seconds for each document through the three filters in turn, as a datatrove
    pipeline runs them: the repetition filter then reuses the quality filter's
    spaCy tokens (datatrove caches the last few splits)."""
    blocks = [datatrove_filters()[name] for name in TIMED]
    start = time.perf_counter()
    for i, text in enumerate(texts):
        for block in blocks:
            block.filter(Document(text=text, id=str(i)))
    return time.perf_counter() - start


def run_ours(texts: list[str], repeats: int, threads: int) -> tuple[np.ndarray, float]:
    numba.set_num_threads(threads)
    measure(texts[:100])  # compile or load the cached kernel
    times, values = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        values = np.concatenate([measure(texts[i : i + 8192]) for i in range(0, len(texts), 8192)])
        times.append(time.perf_counter() - start)
    return values, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-mb", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = documents(args.max_mb)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts):,} documents, {mb:.1f} MB")
    theirs, their_seconds = run_datatrove(texts)
    values, one = run_ours(texts, args.repeats, 1)
    _, every = run_ours(texts, args.repeats, numba.config.NUMBA_NUM_THREADS)
    total = sum(their_seconds[name] for name in TIMED)
    print("\n| implementation | seconds | MB/s |\n|---|---:|---:|")
    for name in TIMED:
        s = their_seconds[name]
        print(f"| datatrove {name} | {s:.2f} | {mb / s:.2f} |")
    print(f"| datatrove, all three | {total:.2f} | {mb / total:.2f} |")
    print(
        f"| datatrove, all three per document (shared tokens) | {their_seconds['chained']:.2f} | "
        f"{mb / their_seconds['chained']:.2f} |"
    )
    print(f"| ours, all three, 1 thread | {one:.2f} | {mb / one:.1f} |")
    print(f"| ours, all three, {numba.config.NUMBA_NUM_THREADS} threads | {every:.2f} | {mb / every:.1f} |")
    print(
        f"\nspeed ratio (ours 1 thread / datatrove, one process each): {total / one:.0f}x; "
        f"against datatrove sharing tokens across its filters: {their_seconds['chained'] / one:.0f}x"
    )
    print("\n| rules | agree | both drop | only ours drops | only datatrove drops | both keep |")
    print("|---|---:|---:|---:|---:|---:|")
    pairs = {}
    for name, group in OURS.items():
        ours = first_failed(values, group.rules())
        mine, other = ours != "", np.array(theirs[name]) != ""
        counts = [int((mine & other).sum()), int((mine & ~other).sum()), int((~mine & other).sum())]
        counts.append(len(texts) - sum(counts))
        print(f"| {name} | {np.mean(mine == other):.1%} | " + " | ".join(f"{c:,}" for c in counts) + " |")
        both = zip(ours, theirs[name], strict=True)
        differ = [(a or "kept", b or "kept") for a, b in both if bool(a) != bool(b)]
        pairs[name] = collections.Counter(differ).most_common(4)
    print("\ncommonest disagreements (ours, datatrove):")
    for name, common in pairs.items():
        print(f"  {name}: " + "; ".join(f"{a} / {b}: {n}" for (a, b), n in common))


if __name__ == "__main__":
    main()
