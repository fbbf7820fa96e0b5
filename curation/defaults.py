"""Defaults read from the library's config dataclasses, so each default lives in one place.

The Dagster config classes (`curation.pipelines.config`) and the command line
take their defaults from here instead of copying the numbers. The command line
reads them lazily (`Defaults`), so that `curation --help` imports no stage module.
"""

from __future__ import annotations

import dataclasses
import inspect
from importlib import import_module
from typing import Any


def default_of(source: Any, path: str) -> Any:
    """The default of setting `path` (dotted for nested settings, e.g. `model.layers`)
    of a config dataclass or a function's keyword, or its value in a config instance
    (a named preset)."""
    value = source
    for name in path.split("."):
        value = _setting(value, name)
    return value


def _setting(source: Any, name: str) -> Any:
    if inspect.isfunction(source):
        parameter = inspect.signature(source).parameters.get(name)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            raise AttributeError(f"{source.__name__} has no keyword {name!r} with a default")
        return parameter.default
    if not (isinstance(source, type) and dataclasses.is_dataclass(source)):
        if not hasattr(source, name):
            raise AttributeError(f"{type(source).__name__} has no setting {name!r}")
        return getattr(source, name)
    fields = {f.name: f for f in dataclasses.fields(source)}
    if name not in fields:
        raise AttributeError(f"{source.__name__} has no setting {name!r}")
    field = fields[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise AttributeError(f"{source.__name__}.{name} has no default")


class LibraryDefault:
    """A command-line option's default, read from the library when first needed:
    typer shows it in `--help` (str) and click calls it when the option is left out."""

    def __init__(self, where: str, path: str):
        self.where, self.path = where, path

    def __call__(self) -> Any:
        module, _, name = self.where.partition(":")
        return default_of(getattr(import_module(module), name), self.path)

    def __str__(self) -> str:
        return str(self())

    def __bool__(self) -> bool:  # typer reads a flag's default by its truth
        return bool(self())

    def __repr__(self) -> str:
        return f"LibraryDefault({self.where!r}, {self.path!r})"


class Defaults:
    """`Defaults("curation.selectors.dedup:DedupConfig").min_chars` is that setting's
    default, looked up only when the command line needs it."""

    def __init__(self, where: str):
        self._where = where

    def __getattr__(self, path: str) -> LibraryDefault:
        if path.startswith("_"):
            raise AttributeError(path)
        return LibraryDefault(self._where, path)
