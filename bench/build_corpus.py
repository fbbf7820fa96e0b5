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

`--kind prose` builds the long-document prose corpus instead (no source code;
files up to 8 MiB, ingest's default limit; everything available is kept):

  changelog     /usr/share/doc/*/changelog*, NEWS* (gunzipped): Debian and
                upstream changelogs, about 100 KB each, shared packages
                carrying identical copies (libharfbuzz0b, gir1.2-harfbuzz, ...);
  copyright     /usr/share/doc/*/copyright: licence texts, many near copies;
  debian-doc    the other prose files of /usr/share/doc (README, TODO, .txt,
                .md, .rst; markup, code and binary formats are skipped);
  man           /usr/share/man pages in every language, roff, gunzipped;
  info          /usr/share/info manuals, one document per node;
  pkg-docs      README, LICENSE, METADATA, .md/.rst/.txt of every Python's
                site-packages and the project's virtualenv.

    .venv/bin/python bench/build_corpus.py [OUT_DIR] [--max-mb 520]
    .venv/bin/python bench/build_corpus.py --kind prose      # bench/data/prose

Writes OUT_DIR/part-NNNNN.parquet (columns id, source, text); the default
OUT_DIR is bench/data/corpus (bench/data/prose for prose), which git ignores.
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
MAX_PROSE_FILE = 8 << 20  # ingest's default --max-doc-bytes
DOC = Path("/usr/share/doc")
# Not prose: markup, code, data and binary formats found under /usr/share/doc.
NOT_PROSE = {
    ".html", ".htm", ".xml", ".css", ".js", ".json", ".svg", ".png", ".gif", ".jpg", ".ico",
    ".ps", ".pdf", ".tar", ".tgz", ".zip", ".c", ".h", ".cc", ".cpp", ".pl", ".pm", ".sh", ".py",
    ".awk", ".sed", ".cocci", ".conf", ".pem", ".socket", ".service", ".el", ".log", ".diff",
    ".patch", ".mk", ".m4", ".in", ".vim", ".lua", ".rb", ".tcl", ".java", ".cmake", ".yaml", ".yml",
}  # fmt: skip
PKG_DOC_NAMES = {"README", "LICENSE", "LICENCE", "COPYING", "METADATA", "PKG-INFO", "AUTHORS"}
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


def prose_candidates() -> Iterator[tuple[str, Path, Path]]:
    """(source, root, file) for the prose corpus, in a fixed order."""
    for path in sorted(DOC.rglob("*")):
        name = path.name.removesuffix(".gz")
        if Path(name).suffix.lower() in NOT_PROSE:
            continue
        lower = name.lower()
        if lower.startswith(("changelog", "news")):
            yield "changelog", DOC, path
        elif lower == "copyright":
            yield "copyright", DOC, path
        else:
            yield "debian-doc", DOC, path
    for path in sorted(Path("/usr/share/man").rglob("*")):
        yield "man", Path("/usr/share/man"), path
    sites = [lib / "site-packages" for _, lib in python_libs()] + sorted(VENV.glob("python*/site-packages"))
    for site in sites:
        for path in sorted(site.rglob("*")):
            if path.suffix in {".md", ".rst", ".txt"} or path.name in PKG_DOC_NAMES:
                yield "pkg-docs", site.parent.parent.parent, path


def info_nodes() -> Iterator[tuple[str, str]]:
    """(id, text) of every node of the info manuals (nodes are separated by 0x1F)."""
    for path in sorted(Path("/usr/share/info").glob("*info*")):
        data = read_bytes(path, MAX_PROSE_FILE)
        if data is None:
            continue
        text = data.replace(b"\x00", b"").decode("utf-8", errors="replace")  # NULs only mark index entries
        for number, node in enumerate(text.split("\x1f")):
            if len(node.strip()) >= 64:
                yield f"info/{path.name}#{number}", node


def read_bytes(path: Path, limit: int) -> bytes | None:
    if not path.is_file() or path.is_symlink() or path.stat().st_size > limit:
        return None
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    return data if len(data) <= limit else None


def read_text(path: Path, limit: int = MAX_FILE) -> str | None:
    data = read_bytes(path, limit)
    if data is None or len(data) < 64 or b"\x00" in data:
        return None
    return data.decode("utf-8", errors="replace")


def keep_fraction(total: int, limit: float) -> float:
    return 1.0 if total <= limit else limit / total


def sampled(key: str, fraction: float) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="default bench/data/corpus, or bench/data/prose")
    parser.add_argument("--kind", choices=("mixed", "prose"), default="mixed")
    parser.add_argument("--max-mb", type=float, help="cap on total text size (mixed: 520, prose: none)")
    parser.add_argument("--part-mb", type=float, default=64.0, help="text per output file")
    args = parser.parse_args(argv)
    prose = args.kind == "prose"
    out = Path(args.out or ("bench/data/prose" if prose else "bench/data/corpus"))
    max_mb = args.max_mb if args.max_mb is not None else (float("inf") if prose else 520.0)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()

    # Pass 1: which files are usable and how big their text is; pass 2: write a sample.
    usable: list[tuple[str, str, Path, int]] = []
    seen: set[str] = set()
    limit = MAX_PROSE_FILE if prose else MAX_FILE
    for source, root, path in prose_candidates() if prose else candidates():
        doc_id = f"{source}/{path.relative_to(root)}"
        text = None if doc_id in seen else read_text(path, limit)
        if text is not None:
            seen.add(doc_id)
            usable.append((doc_id, str(path.relative_to(root)), path, len(text.encode("utf-8"))))
    available = sum(size for *_, size in usable)
    fraction = keep_fraction(available, max_mb * 1e6)

    rows: dict[str, list[str]] = {"id": [], "source": [], "text": []}
    part, in_part, total, docs = 0, 0, 0, 0
    for doc_id, relative, path, size in usable:
        if not sampled(relative, fraction):  # a module is in every version or in none
            continue
        source = doc_id.split("/", 1)[0]
        text = read_text(path, limit)
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
    for doc_id, text in info_nodes() if prose else ():
        size = len(text.encode("utf-8"))
        available, total, docs = available + size, total + size, docs + 1
        rows["id"].append(doc_id)
        rows["source"].append("info")
        rows["text"].append(text)
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
