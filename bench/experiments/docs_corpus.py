"""The experiments' second corpus: the system's installed documentation, prose
rather than code, so that no result rests on the bundled (Python) corpus alone.

Five sources of very different sizes, all text people wrote, with the
duplicates real corpora have (the same license text in hundreds of copyright
files, changelogs shared by the binary packages of one source package):

  manual     English manual pages (/usr/share/man/man1-8), roff markup stripped
  changelog  Debian and upstream changelogs (/usr/share/doc/*/changelog*)
  copyright  Debian copyright files: license texts and notices
  readme     READMEs, NEWS and other text files under /usr/share/doc
  info       GNU info manuals (/usr/share/info), one document per node

Files are read in a fixed order; each source is capped at its share of
`max_mb` by a hash of the file's path (a uniform, deterministic subsample,
sized from the files' sizes so that only kept files are read), and a
document is cut at a line boundary after MAX_DOC characters, so a few huge
changelogs do not make up a source. The result depends on the packages
installed, so the reports name this corpus by its document counts.

    .venv/bin/python bench/experiments/docs_corpus.py OUT_DIR [--max-mb 16]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from curation.storage import InputSpec

DOC, MAN, INFO = Path("/usr/share/doc"), Path("/usr/share/man"), Path("/usr/share/info")
SHARES = {"manual": 0.40, "changelog": 0.25, "readme": 0.15, "copyright": 0.12, "info": 0.08}
MAX_DOC = 24_000  # characters
MIN_DOC = 200
MAX_FILE = 4 << 20  # bytes read from one file


def build(dest: str | Path, max_mb: float = 16.0) -> list[InputSpec]:
    """Write one JSONL file per source under `dest` (reused when already built
    with the same size) and return the inputs to ingest."""
    dest = Path(dest)
    done = dest / ".complete"
    stamp = json.dumps({"max_mb": max_mb})
    if not done.exists() or done.read_text() != stamp:
        dest.mkdir(parents=True, exist_ok=True)
        for source, files in _sources().items():
            _write_source(dest / f"{source}.jsonl", files, int(SHARES[source] * max_mb * 1e6))
        done.write_text(stamp)
    return [InputSpec(str(dest / f"{source}.jsonl"), source=source) for source in SHARES]


def _sources() -> dict[str, list[Path]]:
    """The candidate files of each source, in a fixed order."""
    return {
        "manual": _man_pages(),
        "changelog": sorted(DOC.glob("*/changelog*")),
        "copyright": sorted(DOC.glob("*/copyright")),
        "readme": _readmes(),
        "info": sorted(INFO.glob("*.info*")),
    }


def _write_source(path: Path, files: list[Path], budget: int) -> None:
    """Keep the files whose path hash falls under the share that fits the
    budget (estimated from file sizes, so only kept files are read)."""
    sizes = {f: _estimated_chars(f) for f in files}
    keep = min(1.0, budget / (sum(sizes.values()) or 1))
    with open(path, "w", encoding="utf-8") as out:
        for file in files:
            if sizes[file] and _fraction(str(file)) < keep:
                for key, text in _documents(path.stem, file):
                    out.write(json.dumps({"text": text, "path": key}, ensure_ascii=False) + "\n")


def _estimated_chars(path: Path) -> int:
    if not path.is_file() or path.is_symlink():
        return 0
    size = path.stat().st_size
    return min(size * 3 if path.suffix == ".gz" else size, MAX_DOC if path.suffix != ".gz" else 3 * MAX_DOC)


def _documents(source: str, path: Path) -> Iterator[tuple[str, str]]:
    """(key, text) of the documents one file gives: info manuals one per node,
    man pages as text; each cut after MAX_DOC characters at a line end."""
    text = _read(path)
    if text is None:
        return
    if source == "info":
        parts = [(f"{path}#{i}", node.strip()) for i, node in enumerate(text.split("\x1f"))]
    else:
        parts = [(str(path), _roff_to_text(text) if source == "manual" else text)]
    for key, part in parts:
        if len(part) > MAX_DOC:
            part = part[:MAX_DOC].rsplit("\n", 1)[0]
        if len(part.strip()) >= MIN_DOC:
            yield key, part


def _fraction(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2**64


def _read(path: Path) -> str | None:
    if not path.is_file() or path.is_symlink():
        return None
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            data = handle.read(MAX_FILE)
    except (OSError, EOFError):
        return None
    if b"\x00" in data:
        return None
    return data.decode("utf-8", errors="replace")


def _man_pages() -> list[Path]:
    return sorted(p for n in range(1, 9) for p in (MAN / f"man{n}").glob("*"))


def _readmes() -> list[Path]:
    names = re.compile(r"^(readme|news|todo|faq|authors|thanks|bugs|usage)", re.I)
    suffixes = {"", ".gz", ".txt", ".md", ".rst"}
    found = []
    for path in sorted(DOC.rglob("*")):
        base = path.name.removesuffix(".gz")
        plain = Path(base).suffix in suffixes or base.endswith((".txt", ".md"))
        if names.match(base) and plain and "changelog" not in base.lower():
            found.append(path)
    return found


_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((oq|cq|aq)"), "'"),
    (re.compile(r"\\\(bu"), "*"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[e\\]"), "\\\\"),
    (re.compile(r"\\[&|^%c:!]|\\ "), " "),
]
_TEXT_MACROS = {"SH", "SS", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "TP", "IP", "Nm", "Nd", "It"}


def _roff_to_text(source: str) -> str:
    """Man-page prose: macro lines give their arguments when they carry text,
    comments and requests go, escapes are undone. Rough, but what a reader sees."""
    lines = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\"')):
            continue
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if name not in _TEXT_MACROS or not rest:
                continue
            line = rest.replace('"', "")
        for pattern, replacement in _ESCAPES:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--max-mb", type=float, default=16.0)
    args = p.parse_args()
    for spec in build(args.out, args.max_mb):
        lines = Path(spec.path).read_text(encoding="utf-8").count("\n")
        print(f"{spec.source}: {lines} documents, {Path(spec.path).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
