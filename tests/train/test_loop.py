"""The loop on CPU with a tiny model: it learns, resumes exactly, and rejects bad settings."""

from __future__ import annotations

import json

import pytest
import torch

from curation.train.data import ArraySource
from curation.train.loop import TrainConfig, Trainer
from curation.train.model import GPTConfig
from curation.train.schedules import Schedule

from .conftest import CONTEXT

TINY = GPTConfig(vocab_size=256, context=CONTEXT, layers=2, heads=2, width=64)


def _config(**changes) -> TrainConfig:
    base = {
        "model": TINY,
        "steps": 60,
        "batch_size": 16,
        "lr": 3e-3,
        "eval_every": 20,
        "checkpoint_every": 20,
        "schedule": Schedule(warmup=5),
    }
    return TrainConfig(**{**base, **changes})


def _losses(path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def test_loss_falls_on_real_text(tmp_path, sources, validation):
    trainer = Trainer(_config(), ArraySource(sources, seed=1), tmp_path, validation)
    before = trainer.evaluate()["overall"]
    result = trainer.train()
    assert result.steps == 60
    assert result.eval["overall"] < before - 1.0  # bytes start near ln(256) = 5.5
    assert set(result.eval["by_source"]) == {"big", "mid", "tiny"}
    assert result.tokens == 60 * 16 * CONTEXT


def test_resume_reproduces_the_uninterrupted_run(tmp_path, sources, validation):
    full = Trainer(_config(steps=40), ArraySource(sources, seed=2), tmp_path / "full", validation)
    full.train()
    first = Trainer(_config(steps=40), ArraySource(sources, seed=2), tmp_path / "cut", validation)
    stop_at = 20

    class Stop(Exception):
        pass

    def interrupt(step, _loss):
        if step == stop_at:
            raise Stop

    with pytest.raises(Stop):
        first.train(on_step=interrupt)
    resumed = Trainer(_config(steps=40), ArraySource(sources, seed=99), tmp_path / "cut", validation)
    assert resumed.resume() and resumed.step == stop_at
    resumed.train()
    assert _losses(tmp_path / "cut" / "metrics.jsonl") == _losses(tmp_path / "full" / "metrics.jsonl")
    a = torch.load(full.save() / "optimizer.pt", weights_only=True)
    b = torch.load(resumed.save() / "optimizer.pt", weights_only=True)
    assert torch.equal(a["torch_rng"], b["torch_rng"])


def test_schedules_span_the_steps_run():
    cosine = Schedule(kind="cosine", warmup=10, min_ratio=0.1)
    assert cosine.multiplier(0, 100) == pytest.approx(0.1)
    assert cosine.multiplier(10, 100) == pytest.approx(1.0)
    assert cosine.multiplier(99, 100) == pytest.approx(0.1, abs=0.01)
    wsd = Schedule(kind="wsd", warmup=10, decay_fraction=0.2)
    assert [wsd.multiplier(s, 100) for s in (50, 79)] == [1.0, 1.0]
    assert wsd.multiplier(90, 100) == pytest.approx(0.5)
    exp = Schedule(kind="wsd", warmup=0, decay_fraction=0.2, decay="exp", half_life=0.25)
    assert exp.multiplier(85, 100) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"batch_size": 0}, {"lr": -1.0}, {"grad_clip": 0.0}])
def test_bad_train_settings_are_refused(bad):
    with pytest.raises(ValueError):
        _config(**bad)


def test_bad_model_and_schedule_settings_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(width=10, heads=3)
    with pytest.raises(ValueError, match="schedule kind"):
        Schedule(kind="linear-ish")


def test_cluster_validation_alone_is_evaluated(tmp_path, sources, validation):
    """Per-cluster scores (kMQ refinement's input) do not need per-source validation rows."""
    clusters = {0: validation["big"], 1: validation["tiny"]}
    trainer = Trainer(
        _config(steps=4), ArraySource(sources, seed=1), tmp_path, None, cluster_validation=clusters
    )
    result = trainer.evaluate()
    assert set(result["by_cluster"]) == {"0", "1"} and result["by_source"] == {}
    rows = len(validation["big"]) + len(validation["tiny"])
    pooled = result["by_cluster"]["0"] * len(validation["big"]) + result["by_cluster"]["1"] * len(
        validation["tiny"]
    )
    assert result["overall"] == pytest.approx(pooled / rows, abs=1e-4)


# The mixture experiment's six sources (tokens after dedup): one large, two tiny.
SIX = {"code": 2_167_704, "docstrings": 320_098, "reference": 179_810, "modules": 83_176,
       "idle": 14_763, "license": 5_740}  # fmt: skip


def _gradient_shares(normalise: str, batches: int = 40_000) -> dict[str, float]:
    """Expected gradient share per source under scalarization at T=5, batches of 16."""
    from curation.selectors.mixture import MixtureConfig
    from curation.train.objective import gradient_shares

    config = MixtureConfig(schedule="constant", temperature=5.0, mode="scalarize", normalise=normalise)
    return gradient_shares(config, SIX, batches, 16, seed=3)


def test_scalarization_gives_each_source_its_temperature_share_of_the_gradient():
    """sum(w*l)/B has the expected gradient of sampling at T (the paper's claim);
    dividing by sum(w) (the self-normalised option) starves the small sources."""
    from curation.selectors.mixture import temperature_weights

    target = temperature_weights(SIX, 5.0)
    batch_mean = _gradient_shares("batch")
    for name, share in target.items():
        assert batch_mean[name] == pytest.approx(share, rel=0.08), name
    self_normalised = _gradient_shares("weights", batches=10_000)
    assert self_normalised["license"] < 0.5 * target["license"]
    assert self_normalised["code"] > 1.2 * target["code"]


def test_batch_mean_is_the_default_and_self_normalised_is_an_option():
    from curation.selectors.mixture import MixtureConfig
    from curation.train.objective import batch_objective

    assert MixtureConfig().normalise == "batch"
    losses, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.5, 0.5, 5.0])
    assert float(batch_objective(losses, weights)) == pytest.approx((0.5 + 1 + 20) / 3)
    assert float(batch_objective(losses, weights, "weights")) == pytest.approx((0.5 + 1 + 20) / 6)
    assert float(batch_objective(losses, weights, "batch", rows=6)) == pytest.approx((0.5 + 1 + 20) / 6)
    with pytest.raises(ValueError, match="normalise"):
        MixtureConfig(normalise="sum")
