"""Checkpoints: model (safetensors), optimizer and RNG (torch.load weights_only),
sampler state (JSON). Each is a folder written under a temporary name and
renamed whole, so a checkpoint either exists completely or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from curation.errors import CurationError
from curation.storage.fs import resolve
from curation.storage.output import claim_all

KEEP = 2  # newest checkpoints kept; older ones are removed
FILES = ("model.safetensors", "optimizer.pt", "state.json")
_STEP = re.compile(r"^step-\d{7}$")
_TEMP = re.compile(r"^\.step-\d{7}\.[0-9a-f]{32}\.tmp$")


def save_checkpoint(
    folder: Path, step: int, model, optimizer, data, generator, extra: dict, selection: dict | None = None
) -> Path:
    """`selection`: state a batch selector keeps between steps (tensors and numbers), if any."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": generator.get_state(),
            "selection": selection,
        },
        tmp / "optimizer.pt",
    )
    state = {**extra, "data": data.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state, default=int))
    for child in tmp.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(tmp)
    claim_all(resolve(final), FILES)  # the run owns these names before they appear
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
    _fsync_dir(folder)  # the rename reaches disk before older checkpoints are pruned
    _prune(folder)
    return final


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_checkpoint(folder: Path) -> Path | None:
    steps = _steps(folder)
    return steps[-1] if steps else None


def _steps(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _STEP.match(p.name) and p.is_dir() and not p.is_symlink())


def saved_state(path: Path) -> dict:
    """A checkpoint's state.json (step, tokens, the run's settings)."""
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CurationError(f"{path}: checkpoint is unreadable ({type(exc).__name__}: {exc})") from exc


# A damaged file surfaces as any of these (safetensors' own error, the unpickler's
# refusal under weights_only, a missing key); each used to escape as itself, with no
# word of which checkpoint was at fault. Now all are one CurationError naming it.
_DAMAGED = (OSError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError, SafetensorError)


def load_checkpoint(path: Path, model, optimizer, data, generator) -> dict:
    try:
        load_model(model, str(path / "model.safetensors"))
        saved = torch.load(path / "optimizer.pt", weights_only=True)
        state = json.loads((path / "state.json").read_text())
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        generator.set_state(saved["generator"])
        data.load_state_dict(state["data"])
        state["selection"] = saved.get("selection")
        for key in ("step", "tokens"):
            state[key] = int(state[key])
    except _DAMAGED as exc:
        raise CurationError(f"{path}: checkpoint is unreadable ({type(exc).__name__}: {exc})") from exc
    return state


def _prune(folder: Path) -> None:
    for old in _steps(folder)[:-KEEP]:
        _remove(old)
    for stale in folder.iterdir():  # a killed save's folder, by its temp name only
        if _TEMP.match(stale.name) and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _remove(step: Path) -> None:
    """A checkpoint's own files, then its folder if nothing else is left in it."""
    for name in FILES:
        (step / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # someone else's file is in there: it stays
        step.rmdir()
