"""The training loop: AdamW, clipping, a schedule over the steps actually run,
optional CoLM coresets, evaluation per source, and exact resume from checkpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from curation.device import CPU, Device
from curation.selectors.mixture import MixtureConfig
from curation.selectors.replay import ReplayConfig
from curation.selectors.rs2 import RS2Config
from curation.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from curation.train.colm import CoLMConfig, CoLMSelector
from curation.train.data import Batch, BatchSource, TopicConfig
from curation.train.model import GPT, GPTConfig
from curation.train.objective import batch_objective
from curation.train.schedules import Schedule


@dataclass(frozen=True)
class TrainConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    steps: int = 200
    batch_size: int = 16  # sequences per step (the big batch B under CoLM)
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    schedule: Schedule = field(default_factory=Schedule)
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0
    colm: CoLMConfig | None = None
    # data: how shards are mixed (temperature / Cooldown / scalarization), RS2
    # subsets inside each source, and validation rows held out per source
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    rs2: RS2Config | None = None
    holdout: int = 16
    replay: ReplayConfig | None = None
    topic_batches: TopicConfig | None = None  # one-cluster batches instead of the mixture sampler
    compile: bool = False  # torch.compile, on CUDA only

    def __post_init__(self):
        if self.replay is not None and self.topic_batches is not None:
            raise ValueError("replay and topic_batches each choose the batches; pick one")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive")


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    eval: dict  # last evaluation: overall and per source
    tokens: int
    seconds: float
    metrics_path: str
    checkpoint: str | None
    resumed_from: int = 0  # the step a checkpoint brought the run to before this call
    rs2_rounds: dict | None = None  # with RS2: rounds each source's sampler went through


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        data: BatchSource,
        out: str | Path,
        validation: dict[str, torch.Tensor] | None = None,
        device: Device | None = None,
        cluster_validation: dict[int, torch.Tensor] | None = None,
    ):
        self.config, self.data, self.out = config, data, Path(out)
        self.validation = validation or {}
        self.cluster_validation = cluster_validation or {}
        self.hardware = device or CPU
        self.device = self.hardware.torch_device
        torch.manual_seed(config.seed)
        self.model = GPT(config.model).to(self.device)
        self.optimizer = _adamw(self.model, config)
        # fp16 needs loss scaling; bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.hardware.dtype == torch.float16)
        self.example_losses = self.model.example_losses
        if config.compile and self.hardware.is_cuda:
            self.example_losses = torch.compile(self.model.example_losses)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.selector = CoLMSelector(config.colm, seed=config.seed + 2) if config.colm else None
        self.step = 0
        self.tokens = 0
        self.last_eval: dict = {}

    def resume(self) -> bool:
        """Continue from the latest checkpoint under `out`, if there is one."""
        path = latest_checkpoint(self.out / "checkpoints")
        if path is None:
            return False
        state = load_checkpoint(path, self.model, self.optimizer, self.data, self.generator)
        self.step, self.tokens = state["step"], state["tokens"]
        if self.selector is not None and state.get("selection") is not None:
            self.selector.load_state_dict(state["selection"])
        _truncate_metrics(self.out / "metrics.jsonl", self.step)
        return True

    def train(self, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(self.out / "metrics.jsonl", self.step)  # a fresh start forgets an old run
        start, first = time.perf_counter(), self.step
        loss = float("nan")
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as metrics:
            while self.step < self.config.steps:
                record = self._train_step()
                loss = record["loss"]
                self.step += 1
                if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
                    record["eval"] = self.last_eval = self.evaluate()
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    self.save()
                if on_step:
                    on_step(self.step, loss)
        checkpoint = latest_checkpoint(self.out / "checkpoints")
        return TrainResult(
            steps=self.step,
            final_loss=loss,
            eval=self.last_eval,
            tokens=self.tokens,
            seconds=round(time.perf_counter() - start, 3),
            metrics_path=str(self.out / "metrics.jsonl"),
            checkpoint=str(checkpoint) if checkpoint else None,
            resumed_from=first,
            rs2_rounds=self.data.rs2_rounds(self.step) if hasattr(self.data, "rs2_rounds") else None,
        )

    def save(self) -> Path:
        extra = {"step": self.step, "tokens": self.tokens, "config": _jsonable(asdict(self.config))}
        selection = self.selector.state_dict() if self.selector is not None else None
        return save_checkpoint(
            self.out / "checkpoints",
            self.step,
            self.model,
            self.optimizer,
            self.data,
            self.generator,
            extra,
            selection=selection,
        )

    def _train_step(self) -> dict:
        self.model.train()
        lr = self.config.lr * self.config.schedule.multiplier(self.step, self.config.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        batch = self.data.next_batch(self.step, self.config.batch_size)
        loaded = time.perf_counter()
        sequences = batch.sequences.to(self.device)
        weights = batch.loss_weights.to(self.device)
        record: dict = {"step": self.step + 1, "lr": lr}
        rows, drawn = None, None  # the batch size the objective divides by; the drawn rows' losses
        if self.selector is not None:
            sequences, weights, rows, coreset = self._coreset(batch, sequences, weights)
            drawn = coreset.losses
            record["selection_seconds"] = round(coreset.seconds, 5)
            record["kept"] = len(coreset.indices)
        with self.hardware.autocast():
            losses = self.example_losses(sequences)
        loss = batch_objective(losses, weights, self.config.mixture.normalise, rows)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.tokens += sequences.shape[0] * (sequences.shape[1] - 1)
        # "loss": the mean over the rows drawn, before the step, in every arm (CoLM's
        # medoids are no random sample of them); "objective": what was minimised.
        trained = float(losses.detach().float().mean())
        record["loss"] = float(drawn.mean()) if drawn is not None else trained
        record["objective"] = float(loss.detach())
        if drawn is not None:
            record["trained_loss"] = trained
        record["data_seconds"] = round(loaded - started, 6)
        record["step_seconds"] = round(time.perf_counter() - started, 6)
        if hasattr(self.data, "observe"):
            self.data.observe(self.step, record["loss"])
        return record

    def _coreset(self, batch: Batch, sequences, weights):
        """The chosen rows, their loss weights, and the batch size the objective divides by:
        B for CRAIG weights (sum(w*l)/B, they stand for all of B), else the rows trained."""
        coreset = self.selector.select(self.model, self.optimizer, sequences, batch.sources, self.generator)
        rows = coreset.indices.to(self.device)
        weights = weights[rows]
        if self.config.colm.weighted:
            return sequences[rows], weights * coreset.weights.to(self.device), len(sequences), coreset
        return sequences[rows], weights, len(rows), coreset

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean validation loss overall and per source, and per cluster when given.
        "overall" pools the per-source rows, or the cluster rows when only those exist."""
        if not self.validation and not self.cluster_validation:
            return {}
        self.model.eval()
        by_source, by_cluster = self._mean_losses(self.validation), self._mean_losses(self.cluster_validation)
        pooled = by_source or by_cluster
        total = sum(mean * rows for mean, rows in pooled.values())
        count = sum(rows for _, rows in pooled.values())
        result = {"overall": round(total / count, 5), "by_source": _means(by_source)}
        if self.cluster_validation:
            result["by_cluster"] = {str(c): m for c, m in _means(by_cluster).items()}
        return result

    def _mean_losses(self, sets: dict) -> dict:
        """(mean loss, rows) of each validation set."""
        out = {}
        for key, sequences in sorted(sets.items()):
            losses = self._losses(sequences)
            out[key] = (float(losses.mean()), len(losses))
        return out

    def _losses(self, sequences: torch.Tensor) -> torch.Tensor:
        with self.hardware.autocast():
            parts = [self.model.example_losses(chunk.to(self.device)) for chunk in sequences.split(32)]
        return torch.cat(parts).float()


def _means(losses: dict) -> dict:
    return {key: round(mean, 5) for key, (mean, _) in losses.items()}


def _adamw(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    # No weight decay on norms, biases and embeddings' positions: the usual GPT split.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "positions" not in n]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2 or "positions" in n]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def _truncate_metrics(path: Path, step: int) -> None:
    """Forget metrics logged after the checkpoint we resume from (and a line torn by a crash)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if line and json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in keep))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
