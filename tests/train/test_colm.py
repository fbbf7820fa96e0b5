"""CoLM: small sources kept, budgets met, and a coreset whose gradient tracks the big batch's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from curation.train.colm import (
    CoLMConfig,
    CoLMSelector,
    facility_location,
    select_coreset,
    similarity,
    split_budget,
    top_dimensions,
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
    shape = model.value_projection().weight.shape
    probes = torch.randn((64, *shape), generator=generator)
    _, estimate = zeroth_order_gradients(model, sequences, 1e-3, probes)
    cos = torch.cosine_similarity(exact, estimate, dim=1)
    assert float(cos.mean()) > 0.05
    weight_before = model.value_projection().weight.clone()
    zeroth_order_gradients(model, sequences, 1e-3, torch.randn((2, *shape), generator=generator))
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


def _metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _one_step(tmp_path, sources, **changes) -> Trainer:
    config = TrainConfig(model=TINY, steps=1, batch_size=16, eval_every=100, checkpoint_every=100, **changes)
    return Trainer(config, ArraySource(sources, seed=7), tmp_path)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_step_trains_the_coreset_unweighted_by_default_craig_weighted_as_option(
    tmp_path, sources, weighted
):
    """The reference's SELECTION_METHOD=submodlib trains the chosen rows with weight 1;
    weightedsubmodlib minimises sum(w*l)/B with CRAIG weights w."""
    trainer = _one_step(tmp_path, sources, colm=CoLMConfig(weighted=weighted))
    batch = ArraySource(sources, seed=7).next_batch(0, 16)  # the batch the trainer will draw
    core = CoLMSelector(CoLMConfig()).select(
        trainer.model, trainer.optimizer, batch.sequences, batch.sources, torch.Generator()
    )
    with torch.no_grad():
        losses = trainer.model.example_losses(batch.sequences[core.indices])
    expected = float((losses * core.weights).sum() / 16) if weighted else float(losses.mean())
    assert CoLMConfig().weighted is False
    assert not torch.equal(core.weights, torch.ones(len(core.weights)))  # the two arms do differ
    trainer.train()
    record = _metrics(tmp_path)[0]
    assert record["objective"] == pytest.approx(expected, rel=1e-4)
    assert record["trained_loss"] == pytest.approx(float(losses.mean()), rel=1e-4)


def test_colm_logs_the_loss_of_the_batch_it_drew_like_every_other_arm(tmp_path, sources):
    """Same seed, same first big batch: CoLM's logged loss equals full training's,
    not the mean over the medoids it kept."""
    _one_step(tmp_path / "full", sources).train()
    _one_step(tmp_path / "colm", sources, colm=CoLMConfig()).train()
    full, colm = _metrics(tmp_path / "full")[0], _metrics(tmp_path / "colm")[0]
    assert colm["loss"] == pytest.approx(full["loss"], rel=1e-5)
    assert colm["trained_loss"] != pytest.approx(full["loss"], rel=1e-5)


def test_zeroth_order_selection_keeps_its_own_moments_and_one_probe_direction(tmp_path, sources):
    trainer = _warm_trainer(tmp_path, sources, steps=4)  # the optimizer has true-gradient moments
    model, optimizer = trainer.model, trainer.optimizer
    config = CoLMConfig(gradient="zeroth", top_dims=64)
    selector = CoLMSelector(config, seed=5)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(selector.directions(model, generator), selector.directions(model, generator))
    fresh = CoLMSelector(CoLMConfig(gradient="zeroth", zo_directions="fresh"), seed=5)
    assert not torch.equal(fresh.directions(model, generator), fresh.directions(model, generator))

    labels = ["big"] * 10 + ["mid"] * 4 + ["tiny"] * 2  # big is the one large source
    sequences = torch.from_numpy(np.stack([sources[s][i] for i, s in enumerate(labels)]))
    core = selector.select(model, optimizer, sequences, labels, generator)
    # the moments are the mean over the chosen large-source rows, from zero: (1-b1) g, (1-b2) g^2
    directions = selector.directions(model, generator)
    _, estimate = zeroth_order_gradients(model, sequences, config.zo_eps, directions)
    chosen = [int(i) for i in core.indices if labels[int(i)] == "big"]
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    torch.testing.assert_close(selector.moments[0], (1 - beta1) * estimate[chosen].mean(dim=0))
    torch.testing.assert_close(selector.moments[1], (1 - beta2) * estimate[chosen].square().mean(dim=0))
    # the optimizer's moments (of true gradients) play no part
    unused = torch.optim.AdamW(model.parameters(), betas=(beta1, beta2))
    again = CoLMSelector(config, seed=5).select(model, unused, sequences, labels, generator)
    assert torch.equal(again.indices, core.indices)
    selector.select(model, optimizer, sequences, labels, generator)
    assert selector.updates == 2


def test_top_dimensions_are_each_large_sources_own(tmp_path, sources):
    """The dimensions come from each large source's rows alone (small sources
    removed first): changing another source's rows leaves a source's picks alone."""
    trainer = _warm_trainer(tmp_path, sources, steps=4)
    labels = ["big"] * 12 + ["mid"] * 12 + ["tiny"] * 2
    config = CoLMConfig(top_dims=8)
    picks = []
    for mid_rows in (range(0, 12), range(40, 52)):
        rows = [*sources["big"][:12], *sources["mid"][list(mid_rows)], *sources["tiny"][:2]]
        sequences = torch.from_numpy(np.stack(rows))
        core = select_coreset(trainer.model, trainer.optimizer, sequences, labels, config, torch.Generator())
        picks.append(sorted(int(i) for i in core.indices if i < 12))
    assert picks[0] == picks[1]


def test_dimension_rank_and_l1_similarity_follow_the_reference():
    vectors = torch.tensor([[5.0, 1.0, 0.0], [-5.0, 1.0, 0.1]])
    assert torch.equal(top_dimensions(vectors, 1), vectors[:, [1]])  # |mean|: the reference
    assert torch.equal(top_dimensions(vectors, 1, "mean_magnitude"), vectors[:, [0]])
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    l1 = torch.tensor([[0.0, 7.0, 2.0], [7.0, 0.0, 5.0], [2.0, 5.0, 0.0]])
    torch.testing.assert_close(similarity(points), 7.0 - l1)
    assert CoLMConfig().similarity == "l1"
    assert float(similarity(points, "euclidean")[0, 1]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="similarity"):
        CoLMConfig(similarity="cosine-ish")


def test_resume_with_zeroth_order_colm_reproduces_the_run(tmp_path, sources):
    """The selector's moments travel in the checkpoint."""

    def config():
        return TrainConfig(model=TINY, steps=8, batch_size=16, eval_every=100, checkpoint_every=4,
                           colm=CoLMConfig(gradient="zeroth"))  # fmt: skip

    Trainer(config(), ArraySource(sources, seed=2), tmp_path / "full").train()

    class Stop(Exception):
        pass

    def interrupt(step, _loss):
        if step == 6:
            raise Stop

    with pytest.raises(Stop):
        Trainer(config(), ArraySource(sources, seed=2), tmp_path / "cut").train(on_step=interrupt)
    resumed = Trainer(config(), ArraySource(sources, seed=2), tmp_path / "cut")
    assert resumed.resume() and resumed.selector.updates == 4
    resumed.train()
    assert [r["loss"] for r in _metrics(tmp_path / "cut")] == [r["loss"] for r in _metrics(tmp_path / "full")]
