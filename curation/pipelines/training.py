"""Mixture, tokenizer, shard and training assets: thin wrappers over the library."""
# No `from __future__ import annotations` here: Dagster reads the annotations
# of asset functions at definition time to infer config and resources.

import dataclasses
import json
import time
from pathlib import Path

import pyarrow.compute as pc
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from curation.errors import CurationError
from curation.pipelines.assets import plot
from curation.pipelines.resources import ComputeDevice, ExecutionEngine, StorageRoot
from curation.pipelines.selection import diverse_subset
from curation.plots import bar_png, weights_over_steps_png
from curation.selectors.mixture import Mixture, MixtureConfig
from curation.storage import Dataset
from curation.storage.fs import Location, write_bytes_atomic
from curation.storage.shards import ShardConfig
from curation.storage.subset import Budget, SubsetConfig, materialize_subset
from curation.storage.tokenizer import TOKENIZER_FILE, TokenizerConfig, tokenizer_hash, train_tokenizer
from curation.train.config import train_config_from_dict
from curation.train.run import train_on_shards

PLAN_FILE = "plan.json"


class MixturePlanConfig(Config):
    """Per-source weights over training. Defaults: the paper's Cooldown (T=5, then T=1 at half)."""

    schedule: str = Field(
        default="cooldown",
        description="constant (T = temperature), cooldown (temperature, then cooldown_temperature) "
        "or piecewise (phases).",
    )
    temperature: float = Field(
        default=5.0,
        description="T of a constant schedule or before the switch; p_i ~ n_i^(1/T); .inf = uniform.",
    )
    cooldown_temperature: float = Field(default=1.0, description="T after the Cooldown switch.")
    switch_at: float = Field(default=0.5, description="Fraction of training at which Cooldown switches.")
    phases: list[list[float]] = Field(
        default_factory=list, description="Piecewise only: [[start fraction, T], ...], first start 0."
    )
    unit: str = Field(
        default="tokens",
        description="What source sizes count: tokens (estimated as chars / 4; the trainer draws packed "
        "sequences), or documents.",
    )
    mode: str = Field(
        default="sample", description="sample: draw sources by p_i(T); scalarize: draw by size, weigh losses."
    )
    plot_steps: int = Field(
        default=1000, description="Steps the plan is drawn over (the schedule is in fractions of training)."
    )


@asset(
    group_name="selection",
    deps=[diverse_subset],
    description="The mixture schedule over the diverse subset's sources: mixture_plan/plan.json.",
)
def mixture_plan(
    context: AssetExecutionContext, config: MixturePlanConfig, storage: StorageRoot
) -> MaterializeResult:
    start = time.perf_counter()
    settings = MixtureConfig(
        schedule=config.schedule,
        temperature=config.temperature,
        cooldown_temperature=config.cooldown_temperature,
        switch_at=config.switch_at,
        phases=tuple(tuple(p) for p in config.phases),
        unit=config.unit,
        mode=config.mode,
    )
    sizes = _source_sizes(Dataset.open(storage.location("diverse_subset", "documents")), config.unit)
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
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(out.uri),
            "sources": len(sizes),
            "sizes": MetadataValue.json(sizes),
            "average_weights": MetadataValue.json(
                {k: round(v, 6) for k, v in plan["average_weights"].items()}
            ),
            "switch_steps": MetadataValue.json(mixture.switch_steps()),
            "seconds": round(time.perf_counter() - start, 3),
            "weights_over_steps_plot": plot(weights_over_steps_png(steps, weights), "weights over steps"),
        }
    )


def _source_sizes(dataset: Dataset, unit: str) -> dict[str, int]:
    table = dataset.read_table(["source", "n_chars"])
    if unit == "tokens":  # the estimate select_stage uses before a tokenizer exists
        table = table.set_column(1, "n_chars", pc.divide(pc.add(table.column("n_chars"), 3), 4))
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


class TokenizerStageConfig(Config):
    """Byte-level BPE trained on a sample of the diverse subset."""

    vocab_size: int = Field(default=4096, description="Vocabulary, bytes and EOS included (>= 257).")
    min_frequency: int = Field(default=2, description="A pair must occur this often to be merged.")
    sample_documents: int = Field(default=50_000, description="Documents drawn (seeded) to train on.")
    sample_chars: int = Field(default=50_000_000, description="Stop sampling at this many characters.")
    seed: int = Field(default=0, description="Picks the sample.")


@asset(
    group_name="training",
    deps=[diverse_subset, mixture_plan],
    description="Byte-level BPE tokenizer trained on the diverse subset: tokenizer/tokenizer.json.",
)
def tokenizer(
    context: AssetExecutionContext,
    config: TokenizerStageConfig,
    storage: StorageRoot,
    engine: ExecutionEngine,
) -> MaterializeResult:
    start = time.perf_counter()
    settings = TokenizerConfig(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        sample_documents=config.sample_documents,
        sample_chars=config.sample_chars,
        seed=config.seed,
    )
    out = storage.location("tokenizer", TOKENIZER_FILE)
    trained = engine.run(train_tokenizer, str(storage.location("diverse_subset", "documents")), out, settings)
    context.log.info(f"tokenizer: {trained.get_vocab_size()} tokens")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(out.uri),
            "vocab_size": trained.get_vocab_size(),
            "sha256": tokenizer_hash(trained),
            "seconds": round(time.perf_counter() - start, 3),
        }
    )


class ShardsConfig(Config):
    """Which documents of the diverse subset go into the shards, and how they are packed."""

    budget: str = Field(
        default="fraction=1.0",
        description="documents=N, tokens=N (EOS included) or fraction=F of the diverse subset; "
        "each source's share follows the mixture plan.",
    )
    seed: int = Field(default=0, description="Which documents inside each source.")
    seq_len: int = Field(default=129, description="Tokens per packed sequence (context + 1).")
    sequences_per_shard: int = Field(default=32_768, description="Rows per shard file.")


@asset(
    group_name="training",
    deps=[diverse_subset, mixture_plan, tokenizer],
    description="A subset under a budget and the mixture, tokenised and packed into checksummed shards.",
)
def shards(
    context: AssetExecutionContext, config: ShardsConfig, storage: StorageRoot, engine: ExecutionEngine
) -> MaterializeResult:
    settings = SubsetConfig(
        budget=Budget.parse(config.budget),
        mixture=read_plan(storage),
        seed=config.seed,
        shards=ShardConfig(seq_len=config.seq_len, sequences_per_shard=config.sequences_per_shard),
    )
    report = engine.run(
        materialize_subset,
        str(storage.location("diverse_subset", "documents")),
        str(storage.location("shards")),
        settings,
        tokenizer=str(storage.location("tokenizer", TOKENIZER_FILE)),
    )
    context.log.info(f"shards: {report.selected} documents, {report.tokens} tokens")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(report.output),
            "documents_in": report.documents_in,
            "candidates": report.candidates,
            "selected": report.selected,
            "not_selected": report.candidates - report.selected,
            "tokens": report.tokens,
            "budget_unit": report.budget_unit,
            "budget_asked": report.budget_asked,
            "budget_achieved": report.budget_achieved,
            "per_source": MetadataValue.json(report.per_source),
            "per_source_tokens": MetadataValue.json(report.per_source_tokens),
            "weights": MetadataValue.json(report.weights),
            "seconds": report.seconds,
            "tokens_per_source_plot": plot(
                bar_png(report.per_source_tokens, "tokens per source", "tokens"), "tokens per source"
            ),
        }
    )


class TrainedModelConfig(Config):
    """A short run of the bundled GPT on the shards; the mixture comes from the plan."""

    steps: int = Field(default=150, description="Optimizer steps.")
    batch_size: int = Field(default=16, description="Sequences per step (the big batch B under CoLM).")
    lr: float = Field(default=2e-3, description="Peak learning rate (AdamW).")
    schedule: str = Field(default="cosine", description="Learning-rate schedule: cosine, wsd or constant.")
    warmup: int = Field(default=20, description="Warmup steps.")
    layers: int = Field(default=2, description="Transformer blocks.")
    heads: int = Field(default=4, description="Attention heads.")
    width: int = Field(default=128, description="Model width (divisible by heads).")
    eval_every: int = Field(default=25, description="Validation every this many steps, and at the end.")
    checkpoint_every: int = Field(default=50, description="Checkpoint every this many steps, and at the end.")
    holdout: int = Field(default=8, description="Validation sequences held out per source.")
    rs2_fraction: float = Field(
        default=0.5, description="RS2: share of each source's sequences used per round; 0 turns RS2 off."
    )
    rs2_mode: str = Field(
        default="without_replacement", description="without_replacement, with_replacement or static."
    )
    colm: bool = Field(
        default=False, description="CoLM mini-batch coresets on (each step trains on a subset)."
    )
    colm_small_fraction: float = Field(default=0.5, description="CoLM: small batch b = B * this.")
    seed: int = Field(default=0, description="Seeds the model and the data order.")
    resume: bool = Field(
        default=False, description="Continue from the last checkpoint instead of starting over."
    )


@asset(
    group_name="training",
    deps=[shards, mixture_plan],
    description="The bundled GPT trained on the shards: metrics, checkpoints and loss curves.",
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainedModelConfig,
    storage: StorageRoot,
    device: ComputeDevice,
    engine: ExecutionEngine,
) -> MaterializeResult:
    out, shard_set = _local(storage.location("trained_model")), _local(storage.location("shards"))
    settings = train_config_from_dict(
        {
            "model": {"layers": config.layers, "heads": config.heads, "width": config.width},
            "steps": config.steps,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "schedule": {"kind": config.schedule, "warmup": config.warmup},
            "eval_every": config.eval_every,
            "checkpoint_every": config.checkpoint_every,
            "holdout": config.holdout,
            "seed": config.seed,
            "mixture": dataclasses.asdict(read_plan(storage)),
            "rs2": {"fraction": config.rs2_fraction, "mode": config.rs2_mode, "seed": config.seed}
            if config.rs2_fraction > 0
            else None,
            "colm": {"small_fraction": config.colm_small_fraction} if config.colm else None,
        },
        "trained_model config",
    )
    every = max(1, config.steps // 20)

    def on_step(step: int, loss: float) -> None:
        if step % every == 0 or step == config.steps:
            context.log.info(f"trained_model: step {step}/{config.steps}, loss {loss:.4f}")

    result = engine.run(
        train_on_shards,
        str(shard_set),
        settings,
        out,
        device=device.resolve(),
        resume=config.resume,
        on_step=on_step,
    )
    evaluation = result.eval or {}
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out)),
            "steps": result.steps,
            "final_loss": float(result.final_loss),
            "eval_loss": float(evaluation.get("overall", float("nan"))),
            "eval_by_source": MetadataValue.json(evaluation.get("by_source", {})),
            "tokens": result.tokens,
            "seconds": result.seconds,
            "checkpoint": MetadataValue.path(result.checkpoint or ""),
            "metrics": MetadataValue.path(result.metrics_path),
            "loss_curves_plot": plot((out / "loss_curves.png").read_bytes(), "loss curves"),
        }
    )


def _local(loc: Location) -> Path:
    if not loc.is_local:
        raise CurationError(
            f"{loc}: training memory-maps shards and writes checkpoints on a local disk; "
            "use a local storage root for shards and trained_model"
        )
    return Path(loc.path)
