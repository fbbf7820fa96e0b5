"""CoLM: small sources kept, budgets met, and a coreset whose gradient tracks the big batch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation.train.colm import (
    CoLMConfig,
    facility_location,
    select_coreset,
    split_budget,
    value_gradients,
    zeroth_order_gradients,
)
from curation.train.data import ArraySource
from curation.train.loop import TrainConfig, Trainer
from curation.train.model import GPT, GPTConfig

from .conftest import CONTEXT

TINY = GPTConfig(vocab_size=256, context=CONTEXT, layers=2, heads=2, width=64)


def _full_gradient(model: GPT, sequences: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    losses = model.example_losses(sequences)
    ((losses * weights).sum() / weights.sum()).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _warm_trainer(tmp_path, sources, steps=15) -> Trainer:
    config = TrainConfig(
        model=TINY, steps=steps, batch_size=16, lr=3e-3, eval_every=1000, checkpoint_every=1000
    )
    trainer = Trainer(config, ArraySource(sources, seed=3), tmp_path)
    trainer.train()
    return trainer


def test_coreset_gradient_is_closer_to_big_batch_than_random_half(tmp_path, sources):
    trainer = _warm_trainer(tmp_path, sources)
    model, optimizer = trainer.model, trainer.optimizer
    draw = ArraySource(sources, seed=11)
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    coreset_cos, random_cos = [], []
    for step in range(12):
        batch = draw.next_batch(step, 32)
        full = _full_gradient(model, batch.sequences, torch.ones(32))
        core = select_coreset(model, optimizer, batch.sequences, batch.sources, CoLMConfig(), generator)
        picked = _full_gradient(model, batch.sequences[core.indices], core.weights)
        half = torch.from_numpy(rng.choice(32, size=len(core.indices), replace=False))
        rand = _full_gradient(model, batch.sequences[half], torch.ones(len(half)))
        coreset_cos.append(float(torch.cosine_similarity(full, picked, dim=0)))
        random_cos.append(float(torch.cosine_similarity(full, rand, dim=0)))
    print(f"cosine to big batch: coreset {np.mean(coreset_cos):.3f}, random half {np.mean(random_cos):.3f}")
    assert np.mean(coreset_cos) > np.mean(random_cos)


def test_small_sources_always_kept_and_budget_met(tmp_path, sources):
    trainer = _warm_trainer(tmp_path, sources, steps=3)
    labels = ["big"] * 20 + ["mid"] * 9 + ["tiny"] * 3  # mean 10.7: mid and tiny are small
    rows = [sources[s][i] for s, i in zip(labels, [*range(20), *range(9), *range(3)], strict=True)]
    sequences = torch.from_numpy(np.stack(rows))
    core = select_coreset(
        trainer.model, trainer.optimizer, sequences, labels, CoLMConfig(), torch.Generator().manual_seed(0)
    )
    kept = set(core.indices.tolist())
    assert set(range(20, 32)) <= kept  # every mid and tiny example
    assert len(core.indices) == 16  # b = B/2
    assert core.small_sources == ["mid", "tiny"]
    big_weight = core.weights[[i for i, r in enumerate(core.indices.tolist()) if r < 20]].sum()
    assert float(big_weight) == 20  # medoids stand for every big-source example


def test_zeroth_order_estimate_points_the_same_way_as_the_exact_gradient(sources):
    torch.manual_seed(0)
    model = GPT(TINY)
    sequences = torch.from_numpy(sources["big"][:8])
    _, exact = value_gradients(model, sequences)
    generator = torch.Generator().manual_seed(1)
    _, estimate = zeroth_order_gradients(model, sequences, 1e-3, 64, generator)
    cos = torch.cosine_similarity(exact, estimate, dim=1)
    assert float(cos.mean()) > 0.05
    weight_before = model.value_projection().weight.clone()
    zeroth_order_gradients(model, sequences, 1e-3, 2, generator)
    assert torch.equal(weight_before, model.value_projection().weight)


def test_facility_location_covers_each_cluster():
    points = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [10, 0], [10, 0.1]])
    distance = torch.cdist(points, points)
    chosen = facility_location(distance.max() - distance, 3)
    assert sorted(i // 2 for i in chosen) == [0, 1, 2]


@pytest.mark.parametrize("budget", [1, 5, 16, 40])
def test_split_budget_is_exact_and_proportional(budget):
    counts = {"a": 30, "b": 8, "c": 2}
    share = split_budget(counts, budget)
    assert sum(share.values()) == min(budget, 40)
    assert all(share[s] <= counts[s] for s in counts)
    if budget >= 16:
        assert share["a"] > share["b"] > 0


def test_colm_in_the_loop_reports_selection(tmp_path, sources):
    config = TrainConfig(
        model=TINY,
        steps=6,
        batch_size=16,
        eval_every=100,
        checkpoint_every=100,
        colm=CoLMConfig(gradient="zeroth", zo_probes=2),
    )
    result = Trainer(config, ArraySource(sources, seed=5), tmp_path).train()
    assert result.steps == 6
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all('"selection_seconds"' in line and '"kept"' in line for line in lines)


def test_value_gradients_are_each_examples_exact_gradient(sources):
    torch.manual_seed(0)
    model = GPT(TINY)
    sequences = torch.from_numpy(sources["big"][:4])
    _, grads = value_gradients(model, sequences)
    weight = model.value_projection().weight
    for i in range(len(sequences)):
        model.zero_grad(set_to_none=True)
        model.example_losses(sequences[i : i + 1]).sum().backward()
        assert torch.allclose(grads[i], weight.grad.reshape(-1), atol=1e-6, rtol=1e-4)
    # the selection leaves the model as it found it: trainable, with no gradients of its own
    model.zero_grad(set_to_none=True)
    value_gradients(model, sequences)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
