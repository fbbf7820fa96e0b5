"""The weighted loss a training step minimises, and what share of the gradient
each source gets under it (the check that scalarization keeps the expected
gradient of temperature sampling, "Upsample or Upweight?", arXiv 2410.04579)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from curation.selectors.mixture import Mixture, MixtureConfig
from curation.selectors.sampler import MixtureSampler


def batch_objective(
    losses: torch.Tensor, weights: torch.Tensor, normalise: str = "batch", rows: int | None = None
) -> torch.Tensor:
    """The weighted loss a step minimises, over the last dimension. "batch":
    sum(w*l) / B with B = `rows` (default: the losses given), whose expected
    gradient is that of sampling by the weights (scalarization's claim);
    "weights": sum(w*l) / sum(w), self-normalised and biased: a batch's one
    heavily weighted row takes most of its step, and on average the sources
    with large weights (the small sources) get less than their share."""
    total = (losses * weights).sum(dim=-1)
    if normalise == "weights":
        return total / weights.sum(dim=-1)
    if normalise != "batch":
        raise ValueError(f"normalise {normalise!r}: use batch or weights")
    return total / (losses.shape[-1] if rows is None else rows)


def gradient_shares(
    config: MixtureConfig, sizes: Mapping[str, float], steps: int, batch_size: int, seed: int = 0
) -> dict[str, float]:
    """Each source's share of the gradient weight over `steps` batches that the
    mixture sampler draws: the sum over its rows of d(objective)/d(row's loss),
    by autograd through `batch_objective`. Equals the sampling share p_i(T) in
    expectation when the objective is unbiased."""
    mixture = Mixture(config).fit(sizes, steps)
    block = MixtureSampler(mixture, dict.fromkeys(sizes, 10_000), batch_size, seed=seed).next_block(steps)
    losses = torch.ones(steps, batch_size, requires_grad=True)
    objective = batch_objective(losses, torch.from_numpy(block.loss_weights), config.normalise)
    (coefficient,) = torch.autograd.grad(objective.sum(), losses)
    ids = torch.from_numpy(block.source_ids.astype("int64")).flatten()
    per_source = torch.zeros(len(mixture.sources), dtype=coefficient.dtype).index_add_(
        0, ids, coefficient.flatten()
    )
    per_source /= per_source.sum()
    return dict(zip(mixture.sources, per_source.tolist(), strict=True))
