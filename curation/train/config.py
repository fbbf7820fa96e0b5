"""Training settings from a TOML or JSON file into `TrainConfig`, with clear errors."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from curation.errors import CurationError
from curation.selectors.mixture import MixtureConfig
from curation.selectors.replay import ReplayConfig
from curation.selectors.rs2 import RS2Config
from curation.train.colm import CoLMConfig
from curation.train.data import TopicConfig
from curation.train.loop import TrainConfig
from curation.train.model import GPTConfig
from curation.train.schedules import Schedule

_NESTED = {
    "model": GPTConfig,
    "schedule": Schedule,
    "colm": CoLMConfig,
    "mixture": MixtureConfig,
    "rs2": RS2Config,
    "replay": ReplayConfig,
    "topic_batches": TopicConfig,
}


def load_train_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Read `path` (TOML or JSON; None for defaults), then apply `overrides`."""
    body: dict[str, Any] = {}
    where = str(path) if path else "defaults"
    if path is not None:
        body = _read(Path(path))
    body.update({k: v for k, v in overrides.items() if v is not None})
    return train_config_from_dict(body, where)


def train_config_from_dict(body: dict[str, Any], where: str = "config") -> TrainConfig:
    values = _checked(TrainConfig, body, where)
    if "steps" in values and isinstance(values.get("rs2"), dict) and values["rs2"].get("rounds") is not None:
        raise CurationError(f"{where}: give steps or [rs2] rounds (which sets the steps), not both")
    for key, cls in _NESTED.items():
        if isinstance(values.get(key), dict):
            values[key] = cls(**_checked(cls, values[key], f"{where} [{key}]"))
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    if isinstance(values.get("mixture"), MixtureConfig) and values["mixture"].phases:
        phases = tuple(tuple(p) for p in values["mixture"].phases)
        values["mixture"] = dataclasses.replace(values["mixture"], phases=phases)
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CurationError(f"{where}: {exc}") from exc


def _checked(cls, body: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise CurationError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return dict(body)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise CurationError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise CurationError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})"
        ) from exc
