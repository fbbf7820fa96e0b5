"""Mixture, tokenizer, shard and training assets: thin wrappers over the library."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import dataclasses
import json
import time
from pathlib import Path

import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, asset
from pydantic import Field

from curation.errors import CurationError
from curation.pipelines.assets import OWNERS
from curation.pipelines.config import (
    AUTOMATE,
    BudgetConfig,
    LearningRateSchedule,
    MixtureMode,
    MixtureSchedule,
    MixtureUnit,
    RS2Mode,
    StageConfig,
    budget_field,
    check_run_settings,
    library_field,
    stage_config,
    to_budget,
)
from curation.pipelines.report import Report
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot
from curation.pipelines.selection import diverse_subset
from curation.plots import bar_png, weights_over_steps_png
from curation.presets import DEMO
from curation.selectors.mixture import Mixture, MixtureConfig
from curation.storage import Dataset
from curation.storage.fs import Location, write_bytes_atomic
from curation.storage.shards import ShardConfig
from curation.storage.tokenizer import (
    TOKENIZER_FILE,
    TokenizerConfig,
    estimated_tokens,
    tokenizer_hash,
    train_tokenizer,
)
from curation.subset import SubsetConfig, materialize_subset
from curation.train.colm import CoLMConfig
from curation.train.config import train_config_from_dict
from curation.train.loop import TrainConfig
from curation.train.run import train_on_shards

PLAN_FILE = "plan.json"


TRAINING = dict(
    group_name="training", owners=OWNERS, tags={"stage": "training"}, automation_condition=AUTOMATE
)


@stage_config("mixture_plan")
class MixturePlanConfig(StageConfig):
    """Per-source weights over training. Defaults: the paper's Cooldown (T=5, then T=1 at half)."""

    schedule: MixtureSchedule = library_field(
        MixtureConfig,
        "schedule",
        "constant (T = temperature), cooldown (temperature, then cooldown_temperature) "
        "or piecewise (phases).",
        MixtureSchedule,
    )
    temperature: float = library_field(
        MixtureConfig,
        "temperature",
        "T of a constant schedule or before the switch; p_i ~ n_i^(1/T); .inf = uniform.",
    )
    cooldown_temperature: float = library_field(MixtureConfig, "cooldown_temperature", "T after the switch.")
    switch_at: float = library_field(
        MixtureConfig, "switch_at", "Fraction of training at which Cooldown switches, in (0, 1)."
    )
    phases: list[list[float]] = Field(
        default_factory=list, description="Piecewise only: [[start fraction, T], ...], first start 0."
    )
    unit: MixtureUnit = library_field(
        MixtureConfig,
        "unit",
        "What source sizes count: tokens (estimated as chars / 4; the trainer draws packed sequences) "
        "or documents.",
        MixtureUnit,
    )
    mode: MixtureMode = library_field(
        MixtureConfig,
        "mode",
        "sample: draw sources by p_i(T); scalarize: draw by size, weigh losses.",
        MixtureMode,
    )
    plot_steps: int = Field(
        default=1000, description="Steps the plan is drawn over (the schedule is in fractions of training)."
    )

    def settings(self) -> MixtureConfig:
        if self.plot_steps < 1:
            raise ValueError(f"plot_steps must be >= 1, got {self.plot_steps}")
        return MixtureConfig(
            schedule=self.schedule.value,
            temperature=self.temperature,
            cooldown_temperature=self.cooldown_temperature,
            switch_at=self.switch_at,
            phases=tuple(tuple(p) for p in self.phases),
            unit=self.unit.value,
            mode=self.mode.value,
        )


@asset(
    group_name="selection",
    deps=[diverse_subset],
    kinds={"json"},
    owners=OWNERS,
    tags={"stage": "selection"},
    automation_condition=AUTOMATE,
    description="The mixture schedule over the diverse subset's sources: mixture_plan/plan.json.",
)
def mixture_plan(
    context: AssetExecutionContext, config: MixturePlanConfig, storage: StorageRoot
) -> MaterializeResult:
    check_run_settings(context)
    start = time.perf_counter()
    settings = config.settings()
    sizes = _source_sizes(Dataset.open(storage.location("diverse_subset", "documents")), settings.unit)
    mixture = Mixture(settings).fit(sizes, config.plot_steps)
    steps, weights = mixture.weights_over_steps()
    plan = {
        "mixture": dataclasses.asdict(settings),
        "sizes": sizes,
        "average_weights": mixture.average_weights(),
        "phase_starts": mixture.phase_starts(),
        "plot_steps": config.plot_steps,
    }
    out = storage.location("mixture_plan", PLAN_FILE)
    write_bytes_atomic(out, json.dumps(plan, indent=2).encode())
    context.log.info(f"mixture_plan: {settings.schedule} over {len(sizes)} sources")
    page = Report("mixture_plan", f"{settings.schedule} schedule over {len(sizes)} sources.")
    page.path("path", out.uri)
    page.value("sources", len(sizes))
    page.value("seconds", round(time.perf_counter() - start, 3))
    average = plan["average_weights"]
    rows = [{"source": s, settings.unit: n, "average_weight": round(average[s], 6)} for s, n in sizes.items()]
    page.table("weights", rows, "source sizes and average weights")
    page.value("switch_steps", ", ".join(str(step) for step in mixture.switch_steps()) or "none")
    page.plot(weights_over_steps_png(steps, weights), "weights over steps")
    return page.result()


def _source_sizes(dataset: Dataset, unit: str) -> dict[str, int]:
    table = dataset.read_table(["source", "n_chars"])
    if unit == "tokens":  # the estimate select_stage uses before a tokenizer exists
        tokens = estimated_tokens(table.column("n_chars").to_numpy())
        table = table.set_column(1, "n_chars", pa.array(tokens))
        grouped = table.group_by("source").aggregate([("n_chars", "sum")])
        return dict(
            sorted(zip(grouped["source"].to_pylist(), grouped["n_chars_sum"].to_pylist(), strict=True))
        )
    grouped = table.group_by("source").aggregate([("source", "count")])
    return dict(sorted(zip(grouped["source"].to_pylist(), grouped["source_count"].to_pylist(), strict=True)))


def read_plan(storage: StorageRoot) -> MixtureConfig:
    """The mixture the plan recorded, for the shards and the training run."""
    loc = storage.location("mixture_plan", PLAN_FILE)
    if not loc.exists():
        raise CurationError(f"{loc}: no mixture plan; materialize mixture_plan first")
    with loc.fs.open_input_stream(loc.path) as handle:
        saved = json.loads(handle.read())["mixture"]
    return MixtureConfig(**{**saved, "phases": tuple(tuple(p) for p in saved["phases"])})


@stage_config("tokenizer")
class TokenizerStageConfig(StageConfig):
    """Byte-level BPE trained on a sample of the diverse subset (the demo's scale by default)."""

    vocab_size: int = library_field(
        DEMO.tokenizer, "vocab_size", "Vocabulary, bytes and EOS included (>= 257)."
    )
    min_frequency: int = library_field(
        DEMO.tokenizer, "min_frequency", "A pair must occur this often to be merged."
    )
    sample_documents: int = library_field(
        DEMO.tokenizer, "sample_documents", "Documents drawn (seeded) to train on."
    )
    sample_chars: int = library_field(
        DEMO.tokenizer, "sample_chars", "Stop sampling at this many characters."
    )
    seed: int = library_field(DEMO.tokenizer, "seed", "Picks the sample.")

    def settings(self) -> TokenizerConfig:
        return TokenizerConfig(
            vocab_size=self.vocab_size,
            min_frequency=self.min_frequency,
            sample_documents=self.sample_documents,
            sample_chars=self.sample_chars,
            seed=self.seed,
        )


@asset(
    deps=[diverse_subset, mixture_plan],
    kinds={"huggingface", "json"},
    description="Byte-level BPE tokenizer trained on the diverse subset: tokenizer/tokenizer.json.",
    **TRAINING,
)
def tokenizer(
    context: AssetExecutionContext,
    config: TokenizerStageConfig,
    storage: StorageRoot,
) -> MaterializeResult:
    check_run_settings(context)
    start = time.perf_counter()
    out = storage.location("tokenizer", TOKENIZER_FILE)
    documents_in = str(storage.location("diverse_subset", "documents"))
    trained = train_tokenizer(documents_in, out, config.settings())
    context.log.info(f"tokenizer: {trained.get_vocab_size()} tokens")
    page = Report("tokenizer", f"Byte-level BPE of {trained.get_vocab_size():,} tokens.")
    page.path("path", out.uri)
    page.value("vocab_size", trained.get_vocab_size())
    page.value("sha256", tokenizer_hash(trained))
    page.value("seconds", round(time.perf_counter() - start, 3))
    return page.result()


@stage_config("shards")
class ShardsConfig(StageConfig):
    """Which documents of the diverse subset go into the shards, and how they are packed."""

    budget: BudgetConfig = budget_field(
        DEMO.shards_budget,
        "How much of the diverse subset the shards hold (tokens counted by the tokenizer, EOS "
        "included); each source's share follows the mixture plan.",
    )
    seed: int = library_field(SubsetConfig, "seed", "Which documents inside each source.")
    seq_len: int = library_field(DEMO.shards, "seq_len", "Tokens per packed sequence (context + 1).")
    sequences_per_shard: int = library_field(DEMO.shards, "sequences_per_shard", "Rows per shard file.")

    def settings(self, mixture: MixtureConfig | None = None) -> SubsetConfig:
        return SubsetConfig(
            budget=to_budget(self.budget),
            mixture=mixture or MixtureConfig(),
            seed=self.seed,
            shards=ShardConfig(seq_len=self.seq_len, sequences_per_shard=self.sequences_per_shard),
        )


@asset(
    deps=[diverse_subset, mixture_plan, tokenizer],
    kinds={"numpy", "parquet"},
    description="A subset under a budget and the mixture, tokenised and packed into checksummed shards.",
    **TRAINING,
)
def shards(
    context: AssetExecutionContext, config: ShardsConfig, storage: StorageRoot, engine: ExecutionEngine
) -> MaterializeResult:
    check_run_settings(context)
    report = materialize_subset(
        str(storage.location("diverse_subset", "documents")),
        str(storage.location("shards")),
        config.settings(read_plan(storage)),
        tokenizer=str(storage.location("tokenizer", TOKENIZER_FILE)),
        engine=engine.get(),
    )
    context.log.info(f"shards: {report.selected} documents, {report.tokens} tokens")
    page = Report("shards", f"`{report.selected:,}` documents, `{report.tokens:,}` tokens.")
    page.path("path", report.output)
    page.value("engine", engine.describe())
    for key in ("documents_in", "candidates", "selected", "tokens"):
        page.value(key, getattr(report, key))
    page.value("not_selected", report.candidates - report.selected)
    page.value("budget_unit", report.budget_unit)
    page.value("budget_asked", report.budget_asked)
    page.value("budget_achieved", report.budget_achieved)
    page.value("seconds", report.seconds)
    rows = [
        {
            "source": source,
            "documents": n,
            "tokens": report.per_source_tokens.get(source, 0),
            "weight": round(report.weights.get(source, 0.0), 6),
        }
        for source, n in report.per_source.items()
    ]
    page.table("per_source", rows, "documents, tokens and mixture weight by source")
    page.plot(bar_png(report.per_source_tokens, "tokens per source", "tokens"), "tokens per source")
    return page.result()


@stage_config("trained_model")
class TrainedModelConfig(StageConfig):
    """A short run of the bundled GPT on the shards (the demo's); the mixture comes from the plan."""

    steps: int = library_field(DEMO.train, "steps", "Optimizer steps.")
    batch_size: int = library_field(
        DEMO.train, "batch_size", "Sequences per step (the big batch B under CoLM)."
    )
    lr: float = library_field(DEMO.train, "lr", "Peak learning rate (AdamW).")
    schedule: LearningRateSchedule = library_field(
        DEMO.train, "schedule.kind", "Learning-rate schedule: cosine, wsd or constant.", LearningRateSchedule
    )
    warmup: int = library_field(DEMO.train, "schedule.warmup", "Warmup steps.")
    layers: int = library_field(DEMO.train, "model.layers", "Transformer blocks.")
    heads: int = library_field(DEMO.train, "model.heads", "Attention heads.")
    width: int = library_field(DEMO.train, "model.width", "Model width (divisible by heads).")
    eval_every: int = library_field(
        DEMO.train, "eval_every", "Validation every this many steps, and at the end."
    )
    checkpoint_every: int = library_field(
        DEMO.train, "checkpoint_every", "Checkpoint every this many steps, and at the end."
    )
    holdout: int = library_field(DEMO.train, "holdout", "Validation sequences held out per source.")
    rs2_fraction: float = library_field(
        DEMO.train, "rs2.fraction", "RS2: share of each source's sequences used per round; 0 turns RS2 off."
    )
    rs2_mode: RS2Mode = library_field(
        DEMO.train, "rs2.mode", "without_replacement, with_replacement or static.", RS2Mode
    )
    colm: bool = Field(
        default=False, description="CoLM mini-batch coresets on (each step trains on a subset)."
    )
    colm_small_fraction: float = library_field(
        CoLMConfig, "small_fraction", "CoLM: small batch b = B * this."
    )
    seed: int = library_field(DEMO.train, "seed", "Seeds the model and the data order.")
    resume: bool = Field(
        default=False, description="Continue from the last checkpoint instead of starting over."
    )

    def settings(self, mixture: MixtureConfig | None = None) -> TrainConfig:
        return train_config_from_dict(
            {
                "model": {"layers": self.layers, "heads": self.heads, "width": self.width},
                "steps": self.steps,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "schedule": {"kind": self.schedule.value, "warmup": self.warmup},
                "eval_every": self.eval_every,
                "checkpoint_every": self.checkpoint_every,
                "holdout": self.holdout,
                "seed": self.seed,
                "mixture": dataclasses.asdict(mixture or MixtureConfig()),
                "rs2": {"fraction": self.rs2_fraction, "mode": self.rs2_mode.value, "seed": self.seed}
                if self.rs2_fraction > 0
                else None,
                "colm": {"small_fraction": self.colm_small_fraction} if self.colm else None,
            },
            "trained_model config",
        )


@asset(
    deps=[shards, mixture_plan],
    kinds={"pytorch", "safetensors"},
    description="The bundled GPT trained on the shards: metrics, checkpoints and loss curves.",
    **TRAINING,
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainedModelConfig,
    storage: StorageRoot,
    device: ComputeDevice,
) -> MaterializeResult:
    check_run_settings(context)
    out, shard_set = _local(storage.location("trained_model")), _local(storage.location("shards"))
    settings = config.settings(read_plan(storage))
    every = max(1, config.steps // 20)

    def on_step(step: int, loss: float) -> None:
        if step % every == 0 or step == config.steps:
            context.log.info(f"trained_model: step {step}/{config.steps}, loss {loss:.4f}")

    result = train_on_shards(
        str(shard_set),
        settings,
        out,
        device=device.resolve(),
        resume=config.resume,
        on_step=on_step,
    )
    evaluation = result.eval or {}
    page = Report("trained_model", f"{result.steps:,} steps on `{result.tokens:,}` tokens.")
    page.path("path", str(out))
    page.value("steps", result.steps)
    page.value("final_loss", float(result.final_loss))
    page.value("eval_loss", float(evaluation.get("overall", float("nan"))))
    page.value("tokens", result.tokens)
    page.value("seconds", result.seconds)
    page.path("checkpoint", result.checkpoint or "")
    page.path("metrics", result.metrics_path)
    page.counts(
        "eval_by_source", evaluation.get("by_source", {}), "source", "loss", "validation loss by source"
    )
    page.plot((out / "loss_curves.png").read_bytes(), "loss curves")
    return page.result()


def _local(loc: Location) -> Path:
    if not loc.is_local:
        raise CurationError(
            f"{loc}: training memory-maps shards and writes checkpoints on a local disk; "
            "use a local storage root for shards and trained_model"
        )
    return Path(loc.path)
