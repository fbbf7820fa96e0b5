"""Dagster config that is checked where a person enters it.

- Defaults come from the library's config dataclasses and the `DEMO` preset
  (`library_field`), so each default lives in one place.
- Settings with a fixed set of values are Enums built from the library's own
  tuples: the Launchpad offers them and refuses anything else.
- A budget is one type for every stage that takes one: exactly one of
  `documents`, `tokens` or `fraction`, each typed, so the Launchpad refuses
  `tokens: lots` or two forms at once.
- Each config class builds the library's settings when it is built (`settings`),
  so any other problem (a fraction of 1.5, a vocabulary under 257) is refused
  with the library's message; `check_run_settings` builds every step's config
  of a run when its first step starts, before any asset is written.
"""
# No `from __future__ import annotations` here: Dagster and pydantic read the
# annotations of config classes at definition time.

import os
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Literal

from dagster import AutomationCondition, Config
from pydantic import Field, ValidationError, model_validator

from curation.defaults import default_of
from curation.errors import CurationError
from curation.selectors.budget import Budget
from curation.selectors.dedup.clean import NORMALIZATIONS, SHORT_COUNTS
from curation.selectors.dedup.config import MODES as DEDUP_MODES
from curation.selectors.diversity import SPLITS
from curation.selectors.mixture import MODES as MIXTURE_MODES
from curation.selectors.mixture import SCHEDULES
from curation.selectors.mixture import UNITS as MIXTURE_UNITS
from curation.selectors.quality.perplexity import BANDS
from curation.selectors.rs2 import MODES as RS2_MODES
from curation.selectors.semdedup import KEEP_RULES
from curation.stages import ENCODERS
from curation.train.clusters import SCORE_ON
from curation.train.schedules import KINDS


def choices(name: str, values: Iterable[str]) -> type[StrEnum]:
    """An Enum of a library setting's accepted values (its members are the strings)."""
    return StrEnum(name, {value: value for value in values})


DedupMode = choices("DedupMode", DEDUP_MODES)
ShortCount = choices("ShortCount", SHORT_COUNTS)
Normalization = choices("Normalization", NORMALIZATIONS)
Encoder = choices("Encoder", ENCODERS)
KeepRule = choices("KeepRule", KEEP_RULES)
Split = choices("Split", SPLITS)
ScoreOn = choices("ScoreOn", SCORE_ON)
MixtureSchedule = choices("MixtureSchedule", SCHEDULES)
MixtureUnit = choices("MixtureUnit", MIXTURE_UNITS)
MixtureMode = choices("MixtureMode", MIXTURE_MODES)
LearningRateSchedule = choices("LearningRateSchedule", KINDS)
RS2Mode = choices("RS2Mode", RS2_MODES)
PerplexityBand = choices("PerplexityBand", BANDS)


def library_field(source: Any, path: str, description: str, enum: type[StrEnum] | None = None) -> Any:
    """A config field whose default is the library's: setting `path` of a config
    dataclass, a preset instance or a function's keyword (see `default_of`)."""
    default = default_of(source, path)
    return Field(default=enum(default) if enum else default, description=description)


# ------------------------------------------------------------ budgets

BUDGET_CONFIG_FORMS = (
    "{documents: {count: N}}, {tokens: {count: N}} or {fraction: {share: F}} (N an integer >= 1, 0 < F <= 1)"
)


class DocumentsBudget(Config):
    """At most this many documents."""

    unit: Literal["documents"] = "documents"
    count: int = Field(description="Documents, an integer >= 1.")


class TokensBudget(Config):
    """At most this many tokens."""

    unit: Literal["tokens"] = "tokens"
    count: int = Field(description="Tokens, an integer >= 1.")


class FractionBudget(Config):
    """This share of the input documents."""

    unit: Literal["fraction"] = "fraction"
    share: float = Field(description="A share of the input documents, 0 < F <= 1.")


BudgetConfig = DocumentsBudget | TokensBudget | FractionBudget


def budget_field(default: Budget, limits: str) -> Any:
    """A budget setting: `limits` says what it limits; the default is a library Budget."""
    if default.fraction is not None:
        value: BudgetConfig = FractionBudget(share=default.fraction)
    elif default.tokens is not None:
        value = TokensBudget(count=default.tokens)
    else:
        value = DocumentsBudget(count=default.documents)
    return Field(default=value, discriminator="unit", description=f"{limits} Write {BUDGET_CONFIG_FORMS}.")


def to_budget(config: BudgetConfig) -> Budget:
    """The library's Budget, which checks the amount; its message lists the forms."""
    amount = config.share if isinstance(config, FractionBudget) else config.count
    try:
        return Budget(**{config.unit: amount})
    except ValueError as exc:
        raise ValueError(f"budget: {exc}; write {BUDGET_CONFIG_FORMS}") from None


# ------------------------------------------------------------ automation

AUTOMATION = ("eager", "nightly", "off")
NIGHTLY = "0 3 * * *"  # 03:00 UTC


def stage_automation(mode: str, after_ingest: bool = False) -> AutomationCondition | None:
    """When the daemon materializes a stage after ingest (and runs its checks).
    eager: once anything upstream changed and no upstream run is in progress; the
    stages right after ingest also wait until every corpus passed its blocking
    checks, and the stages after them follow in the same run (where blocking
    checks stop what follows). nightly: once a night after upstream changed.
    off: only when launched."""
    if mode == "eager":
        eager = AutomationCondition.eager()
        return eager & AutomationCondition.all_deps_blocking_checks_passed() if after_ingest else eager
    if mode == "nightly":
        return AutomationCondition.on_cron(NIGHTLY, "UTC")
    if mode == "off":
        return None
    raise CurationError(f"CURATION_AUTOMATION={mode!r}: use {', '.join(AUTOMATION)}")


# Read when the code location loads, like the resources' environment variables.
AUTOMATION_MODE = os.getenv("CURATION_AUTOMATION", "eager")
AUTOMATE = stage_automation(AUTOMATION_MODE)
AUTOMATE_AFTER_INGEST = stage_automation(AUTOMATION_MODE, after_ingest=True)


# ------------------------------------------------------------ config classes

STAGE_CONFIGS: dict[str, type["StageConfig"]] = {}


def stage_config(op: str) -> Callable[[type["StageConfig"]], type["StageConfig"]]:
    """Register a config class as the config of step `op` (an asset's or check's op),
    for `check_run_settings`."""

    def register(cls: type["StageConfig"]) -> type["StageConfig"]:
        STAGE_CONFIGS[op] = cls
        return cls

    return register


class StageConfig(Config):
    """A step's config. `settings()` builds the library's settings from it; building
    the config calls it, so the library's checks apply wherever a config is made."""

    def settings(self) -> Any:
        return None

    @model_validator(mode="after")
    def _library_accepts(self) -> "StageConfig":
        try:
            self.settings()
        except (ValueError, TypeError, CurationError) as exc:
            raise ValueError(str(exc)) from None
        return self


def check_run_settings(context) -> None:
    """Build the config of every step this run was launched with. Called first by
    every asset, so a bad value stops the run at its first step, before any asset
    is written, with every problem in one message."""
    ops = (context.run.run_config or {}).get("ops") or {}
    problems = []
    for op, body in sorted(ops.items()):
        cls = STAGE_CONFIGS.get(op)
        if cls is None or not isinstance(body, dict):
            continue
        try:
            cls(**(body.get("config") or {}))
        except ValidationError as exc:
            problems += [f"{op}: {_problem(error)}" for error in exc.errors()]
    if problems:
        raise CurationError("the run's settings are refused, nothing was run: " + "; ".join(problems))


def _problem(error: dict) -> str:
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {message}" if where else message
