"""CoLM: mini-batch coresets for training on data mixtures (arXiv 2407.19580).

Each step draws a big batch B and trains on a weighted small batch b:
1. examples of small sources (fewer in B than the mean count per source) are
   all kept with weight 1;
2. for the rest, per-example gradients of the last value projection, made
   Adam-like (the update each example alone would cause), sparsified to the
   dimensions of largest mean magnitude;
3. per large source, a budget proportional to its share of B; medoids chosen
   by greedy facility location on gradient similarity; each medoid weighs as
   many examples of B as are nearest to it (CRAIG weights).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch

from curation.train.model import GPT


@dataclass(frozen=True)
class CoLMConfig:
    small_fraction: float = 0.5  # b = B * small_fraction (paper: B/2)
    gradient: str = "exact"  # "exact" per-example, or "zeroth" (two forwards per probe)
    zo_eps: float = 1e-3
    zo_probes: int = 4  # random directions for the zeroth-order estimate
    top_dims: int = 2560  # reference d
    adam_eps: float = 1e-8

    def __post_init__(self):
        if not 0 < self.small_fraction < 1:
            raise ValueError("small_fraction must be in (0, 1)")
        if self.gradient not in ("exact", "zeroth"):
            raise ValueError(f"gradient {self.gradient!r}: use exact or zeroth")
        if self.top_dims < 1 or self.zo_probes < 1 or self.zo_eps <= 0:
            raise ValueError("top_dims, zo_probes and zo_eps must be positive")


@dataclass
class Coreset:
    indices: torch.Tensor  # rows of the big batch to train on
    weights: torch.Tensor  # how many big-batch examples each one stands for
    small_sources: list[str]
    seconds: float


def value_gradients(model: GPT, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-example gradients of the last value projection, (B, out*in).

    One forward over B with the parameters frozen and the value projection's
    output made a leaf: autograd then records only what lies downstream of that
    output, and saves no activation for the weights' own gradients, so the
    selection's peak memory stays well under a training step on B. For a
    Linear, example i's weight gradient is sum_t grad_out[i,t] x[i,t]^T.
    """
    layer = model.value_projection()
    seen: dict[str, torch.Tensor] = {}

    def leaf(_module, inputs, output):
        seen["x"] = inputs[0].detach()
        seen["out"] = output.detach().requires_grad_()
        return seen["out"]

    trainable = [p for p in model.parameters() if p.requires_grad]
    handle = layer.register_forward_hook(leaf)
    try:
        for param in trainable:
            param.requires_grad_(False)
        with torch.enable_grad():
            losses = model.example_losses(sequences)
            (grad_out,) = torch.autograd.grad(losses.sum(), seen["out"])
    finally:
        handle.remove()
        for param in trainable:
            param.requires_grad_(True)
    grads = torch.einsum("bto,bti->boi", grad_out.float(), seen["x"].float())
    return losses.detach(), grads.reshape(len(sequences), -1)


@torch.no_grad()
def zeroth_order_gradients(
    model: GPT, sequences: torch.Tensor, eps: float, probes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPSA estimate: g_i ~ mean_z [(L_i(w+eps z) - L_i(w-eps z)) / 2eps] z."""
    weight = model.value_projection().weight
    original = weight.detach().clone()
    estimate = torch.zeros(len(sequences), weight.numel(), device=weight.device)
    for _ in range(probes):
        z = torch.randn(weight.shape, generator=generator, device="cpu").to(weight.device)
        weight.copy_(original + eps * z)
        plus = model.example_losses(sequences)
        weight.copy_(original - eps * z)
        minus = model.example_losses(sequences)
        estimate += ((plus - minus) / (2 * eps)).float()[:, None] * z.reshape(1, -1)
    weight.copy_(original)
    return model.example_losses(sequences), estimate / probes


def adam_normalise(grads: torch.Tensor, optimizer: torch.optim.Optimizer, layer, eps: float) -> torch.Tensor:
    """The update Adam would make from each example alone: m_hat / (sqrt(v_hat) + eps)."""
    state = optimizer.state.get(layer.weight, {})
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    step = int(state["step"]) + 1 if "step" in state else 1
    m = state.get("exp_avg", torch.zeros_like(layer.weight)).reshape(1, -1).float()
    v = state.get("exp_avg_sq", torch.zeros_like(layer.weight)).reshape(1, -1).float()
    m_i = beta1 * m + (1 - beta1) * grads
    v_i = beta2 * v + (1 - beta2) * grads.square()
    m_hat = m_i / (1 - beta1**step)
    v_hat = v_i / (1 - beta2**step)
    return m_hat / (v_hat.sqrt() + eps)


def top_dimensions(vectors: torch.Tensor, dims: int) -> torch.Tensor:
    if vectors.shape[1] <= dims:
        return vectors
    keep = vectors.abs().mean(dim=0).topk(dims).indices
    return vectors[:, keep]


def facility_location(similarity: torch.Tensor, k: int) -> list[int]:
    """Greedy maximisation of sum_i max_{j in S} sim(i, j); sim must be >= 0."""
    n = similarity.shape[0]
    best = torch.zeros(n, dtype=similarity.dtype, device=similarity.device)
    chosen: list[int] = []
    for _ in range(min(k, n)):
        gains = (torch.clamp(similarity - best[:, None], min=0)).sum(dim=0)
        if chosen:
            gains[chosen] = -1
        pick = int(gains.argmax())
        chosen.append(pick)
        best = torch.maximum(best, similarity[:, pick])
    return chosen


def craig_weights(similarity: torch.Tensor, medoids: list[int]) -> torch.Tensor:
    """Each medoid weighs the number of examples closest to it."""
    nearest = similarity[:, medoids].argmax(dim=1)
    return torch.bincount(nearest, minlength=len(medoids)).float()


def similarity_from_distance(vectors: torch.Tensor) -> torch.Tensor:
    distance = torch.cdist(vectors, vectors)
    return distance.max() - distance  # CRAIG: d_max - d, non-negative


def small_sources(sources: list[str]) -> set[str]:
    """A source is small when its count in B is below the mean count per source."""
    counts = Counter(sources)
    mean = len(sources) / len(counts)
    return {s for s, n in counts.items() if n < mean}


def split_budget(counts: dict[str, int], budget: int) -> dict[str, int]:
    """Budget per source proportional to its count, largest remainders first, at least 1."""
    total = sum(counts.values())
    if budget <= 0 or total == 0:
        return {s: 0 for s in counts}
    exact = {s: budget * n / total for s, n in counts.items()}
    share = {s: max(1, int(v)) for s, v in exact.items()}
    order = sorted(counts, key=lambda s: (-(exact[s] - int(exact[s])), s))
    i = 0
    while sum(share.values()) < budget and i < 10 * len(order):
        source = order[i % len(order)]
        if share[source] < counts[source]:
            share[source] += 1
        i += 1
    while sum(share.values()) > budget:
        source = max(share, key=lambda s: (share[s], s))
        share[source] -= 1
    return {s: min(share[s], counts[s]) for s in counts}


def select_coreset(
    model: GPT,
    optimizer: torch.optim.Optimizer,
    sequences: torch.Tensor,
    sources: list[str],
    config: CoLMConfig,
    generator: torch.Generator,
) -> Coreset:
    start = time.perf_counter()
    small = small_sources(sources)
    budget = max(1, round(len(sources) * config.small_fraction))
    kept = [i for i, s in enumerate(sources) if s in small]
    large = {s: [i for i, x in enumerate(sources) if x == s] for s in sorted(set(sources) - small)}
    share = split_budget({s: len(rows) for s, rows in large.items()}, budget - len(kept))
    indices, weights = list(kept), [1.0] * len(kept)
    if large and any(share.values()):
        vectors = _normalised_gradients(model, optimizer, sequences, config, generator)
        for source, rows in large.items():
            if share[source] == 0:
                continue
            sim = similarity_from_distance(vectors[rows])
            medoids = facility_location(sim, share[source])
            indices += [rows[m] for m in medoids]
            weights += craig_weights(sim, medoids).tolist()
    return Coreset(
        indices=torch.tensor(indices, dtype=torch.long),
        weights=torch.tensor(weights, dtype=torch.float32),
        small_sources=sorted(small),
        seconds=time.perf_counter() - start,
    )


def _normalised_gradients(model, optimizer, sequences, config, generator) -> torch.Tensor:
    if config.gradient == "exact":
        _, grads = value_gradients(model, sequences)
    else:
        _, grads = zeroth_order_gradients(model, sequences, config.zo_eps, config.zo_probes, generator)
    normalised = adam_normalise(grads, optimizer, model.value_projection(), config.adam_eps)
    return top_dimensions(normalised, config.top_dims)
