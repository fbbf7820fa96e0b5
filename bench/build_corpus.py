"""Build a real-text benchmark corpus from files already on this machine.

Sources (one `source` label each), all text people wrote, with the exact and
near duplicates real corpora have:

  cpython-X.Y   the standard library .py files of every Python under pyenv
                (2.7 to 3.13): the same modules across versions are exact or
                near duplicates of each other, like mirrored or re-crawled pages;
  site-X.Y      third-party packages installed for each of those Pythons
                (.py, .txt, .md, .rst), with copies of pip, setuptools and
                license texts across versions;
  venv          the project's virtualenv packages (same file types);
  debian-doc    /usr/share/doc: changelogs, copyright files, READMEs (gzip
                decompressed) - many near-identical copyright notices;
  man           /usr/share/man pages (roff source, gzip decompressed).

Files over 1 MB, with NUL bytes, or under 64 bytes are skipped; bytes that
are not UTF-8 are replaced. When the total exceeds --max-mb, files are
dropped by a hash of their path inside their source folder (a deterministic
uniform subsample that keeps a module in all versions or in none, so the
duplicate structure survives).

    .venv/bin/python bench/build_corpus.py [OUT_DIR] [--max-mb 520]

Writes OUT_DIR/part-NNNNN.parquet (columns id, source, text); the default
OUT_DIR is bench/data/corpus, which git ignores.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PYENV = Path("/root/.pyenv/versions")
VENV = Path(__file__).resolve().parent.parent / ".venv" / "lib"
TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst"}
MAX_FILE = 1 << 20
SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())])


def python_libs() -> list[tuple[str, Path]]:
    """(X.Y, lib/pythonX.Y) for every pyenv Python."""
    libs = []
    for version in sorted(PYENV.glob("*/lib/python[0-9]*")):
        if version.is_dir() and not version.name.endswith("-config"):
            libs.append((version.name.removeprefix("python"), version))
    return libs


def candidates() -> Iterator[tuple[str, Path, Path]]:
    """(source, root, file) for every file we may read, in a fixed order."""
    for short, lib in python_libs():
        for path in sorted(lib.rglob("*.py")):
            if "site-packages" not in path.relative_to(lib).parts:
                yield f"cpython-{short}", lib, path
        site = lib / "site-packages"
        for path in sorted(site.rglob("*")):
            if path.suffix in TEXT_SUFFIXES:
                yield f"site-{short}", site, path
    for site in sorted(VENV.glob("python*/site-packages")):
        for path in sorted(site.rglob("*")):
            if path.suffix in TEXT_SUFFIXES:
                yield "venv", site, path
    for root, source in ((Path("/usr/share/doc"), "debian-doc"), (Path("/usr/share/man"), "man")):
        for path in sorted(root.rglob("*")):
            if source == "man" or path.suffix in {".gz", ".txt", ".md", ""}:
                yield source, root, path


def read_text(path: Path) -> str | None:
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE:
        return None
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    if len(data) < 64 or len(data) > MAX_FILE or b"\x00" in data:
        return None
    return data.decode("utf-8", errors="replace")


def keep_fraction(total: int, limit: int) -> float:
    return 1.0 if total <= limit else limit / total


def sampled(key: str, fraction: float) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="bench/data/corpus")
    parser.add_argument("--max-mb", type=float, default=520.0, help="cap on total text size")
    parser.add_argument("--part-mb", type=float, default=64.0, help="text per output file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()

    # Pass 1: which files are usable and how big their text is; pass 2: write a sample.
    usable: list[tuple[str, str, Path, int]] = []
    seen: set[str] = set()
    for source, root, path in candidates():
        doc_id = f"{source}/{path.relative_to(root)}"
        text = None if doc_id in seen else read_text(path)
        if text is not None:
            seen.add(doc_id)
            usable.append((doc_id, str(path.relative_to(root)), path, len(text.encode("utf-8"))))
    available = sum(size for *_, size in usable)
    fraction = keep_fraction(available, int(args.max_mb * 1e6))

    rows: dict[str, list[str]] = {"id": [], "source": [], "text": []}
    part, in_part, total, docs = 0, 0, 0, 0
    for doc_id, relative, path, size in usable:
        if not sampled(relative, fraction):  # a module is in every version or in none
            continue
        source = doc_id.split("/", 1)[0]
        text = read_text(path)
        assert text is not None
        rows["id"].append(doc_id)
        rows["source"].append(source)
        rows["text"].append(text)
        in_part += size
        total += size
        docs += 1
        if in_part >= args.part_mb * 1e6:
            write_part(out, part, rows)
            part, in_part = part + 1, 0
            rows = {"id": [], "source": [], "text": []}
    if rows["id"]:
        write_part(out, part, rows)
    print(
        f"{docs} documents, {total / 1e6:.1f} MB of text (of {available / 1e6:.1f} MB available), in {out}",
        file=sys.stderr,
    )
    return 0


def write_part(out: Path, part: int, rows: dict[str, list[str]]) -> None:
    table = pa.table(rows, schema=SCHEMA)
    pq.write_table(table, out / f"part-{part:05d}.parquet", compression="zstd", row_group_size=4096)


if __name__ == "__main__":
    raise SystemExit(main())
