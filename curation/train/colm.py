"""CoLM: mini-batch coresets for training on data mixtures (arXiv 2407.19580).

Each step draws a big batch B and trains on a small batch b chosen from it:
1. examples of small sources (fewer in B than the mean count per source) are
   all kept;
2. for the rest, per-example gradients of the last value projection (exact,
   or a zeroth-order estimate along one fixed probe direction), made Adam-like
   (the update each example alone would cause), sparsified per source to the
   dimensions where that source's mean is largest;
3. per large source, a budget proportional to its share of B; medoids chosen
   by greedy facility location on gradient similarity (d_max - d, L1 distance
   by default); each medoid stands for the examples of B nearest to it.

The step trains on the chosen rows with weight 1 by default, as the reference
scripts' `SELECTION_METHOD=submodlib` do; `weighted=True` trains on CRAIG
weights, sum(w*l)/B, the scripts' `weightedsubmodlib`. Followed:
BigML-CS-UCLA/CoLM colm/train/subset_trainer_distributed.py (selection, the
zeroth-order moments, select_masking) and colm/train/facility_location.py.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from curation.selectors.allocation import allocate
from curation.train.model import GPT

GRADIENTS = ("exact", "zeroth")
DIRECTIONS = ("fixed", "fresh")
SIMILARITIES = ("l1", "euclidean")
DIMENSION_RANKS = ("magnitude_of_mean", "mean_magnitude")


@dataclass(frozen=True)
class CoLMConfig:
    """Fields (defaults follow the reference code; the other values are options):
    small_fraction: b = B * small_fraction (paper: B/2).
    weighted: train on CRAIG weights (sum(w*l)/B) instead of weight 1 per row.
    gradient: "exact" per-example gradients, or "zeroth" (two forwards per probe).
    zo_eps, zo_probes: the zeroth-order perturbation and number of directions.
    zo_directions: "fixed" (the same directions every step, as the reference) or
        "fresh" (new random directions each step).
    top_dims: dimensions kept per source (reference zo_dim = 2560).
    dimension_rank: "magnitude_of_mean" (|mean of the source's rows|, the
        reference) or "mean_magnitude" (mean of |rows|).
    similarity: facility-location similarity d_max - d with d the "l1"
        (reference default) or "euclidean" distance.
    adam_eps: epsilon of the Adam normalisation.
    """

    small_fraction: float = 0.5
    weighted: bool = False
    gradient: str = "exact"
    zo_eps: float = 1e-3
    zo_probes: int = 1
    zo_directions: str = "fixed"
    top_dims: int = 2560
    dimension_rank: str = "magnitude_of_mean"
    similarity: str = "l1"
    adam_eps: float = 1e-8

    def __post_init__(self):
        if not 0 < self.small_fraction < 1:
            raise ValueError("small_fraction must be in (0, 1)")
        for name, allowed in (
            ("gradient", GRADIENTS),
            ("zo_directions", DIRECTIONS),
            ("similarity", SIMILARITIES),
            ("dimension_rank", DIMENSION_RANKS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        if not isinstance(self.weighted, bool):
            raise ValueError(f"weighted must be true or false, got {self.weighted!r}")
        if self.top_dims < 1 or self.zo_probes < 1 or self.zo_eps <= 0:
            raise ValueError("top_dims, zo_probes and zo_eps must be positive")


@dataclass
class Coreset:
    indices: torch.Tensor  # rows of the big batch to train on
    weights: torch.Tensor  # how many big-batch examples each one stands for (CRAIG)
    losses: torch.Tensor  # every big-batch row's loss before the step: what the log reports
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
    model: GPT, sequences: torch.Tensor, eps: float, directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPSA estimate along given directions (probes, *weight.shape):
    g_i ~ mean_z [(L_i(w+eps z) - L_i(w-eps z)) / 2eps] z. Returns the losses at w too."""
    weight = model.value_projection().weight
    original = weight.detach().clone()
    estimate = torch.zeros(len(sequences), weight.numel(), device=weight.device)
    for z in directions.to(weight.device):
        weight.copy_(original + eps * z)
        plus = model.example_losses(sequences)
        weight.copy_(original - eps * z)
        minus = model.example_losses(sequences)
        estimate += ((plus - minus) / (2 * eps)).float()[:, None] * z.reshape(1, -1)
    weight.copy_(original)
    return model.example_losses(sequences), estimate / len(directions)


def adam_update(
    grads: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, betas, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's Adam update m_hat / (sqrt(v_hat) + eps) if it alone were the
    `step`-th gradient after moments (m, v); also each row's new moments."""
    beta1, beta2 = betas
    m_i = beta1 * m + (1 - beta1) * grads
    v_i = beta2 * v + (1 - beta2) * grads.square()
    update = (m_i / (1 - beta1**step)) / ((v_i / (1 - beta2**step)).sqrt() + eps)
    return update, m_i, v_i


def adam_normalise(grads: torch.Tensor, optimizer: torch.optim.Optimizer, layer, eps: float) -> torch.Tensor:
    """The update the optimizer's Adam would make from each example alone (its own moments)."""
    state = optimizer.state.get(layer.weight, {})
    step = int(state["step"]) + 1 if "step" in state else 1
    m = state.get("exp_avg", torch.zeros_like(layer.weight)).reshape(1, -1).float()
    v = state.get("exp_avg_sq", torch.zeros_like(layer.weight)).reshape(1, -1).float()
    return adam_update(grads, m, v, step, optimizer.param_groups[0]["betas"], eps)[0]


def top_dimensions(vectors: torch.Tensor, dims: int, rank: str = "magnitude_of_mean") -> torch.Tensor:
    """The `dims` columns where |mean of the rows| (or the mean of |rows|) is largest."""
    if vectors.shape[1] <= dims:
        return vectors
    score = vectors.mean(dim=0).abs() if rank == "magnitude_of_mean" else vectors.abs().mean(dim=0)
    return vectors[:, score.topk(dims).indices]


def similarity(vectors: torch.Tensor, metric: str = "l1") -> torch.Tensor:
    """CRAIG's similarity d_max - d (non-negative), d the L1 or Euclidean distance."""
    distance = torch.cdist(vectors, vectors, p=1.0 if metric == "l1" else 2.0)
    return distance.max() - distance


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
    """Each medoid weighs the number of examples closest to it, itself included."""
    nearest = similarity[:, medoids].argmax(dim=1)
    nearest[medoids] = torch.arange(len(medoids), device=nearest.device)  # even when tied with another
    return torch.bincount(nearest, minlength=len(medoids)).float()


def small_sources(sources: list[str]) -> set[str]:
    """A source is small when its count in B is below the mean count per source."""
    counts = Counter(sources)
    mean = len(sources) / len(counts)
    return {s for s, n in counts.items() if n < mean}


def split_budget(counts: dict[str, int], budget: int) -> dict[str, int]:
    """Budget per source proportional to its count, largest remainders first, at least 1."""
    names = sorted(counts)
    sizes = np.array([counts[name] for name in names], dtype=np.int64)
    shares = dict(zip(names, allocate(budget, sizes, sizes, at_least=1).tolist(), strict=True))
    return {name: shares[name] for name in counts}


class CoLMSelector:
    """Chooses each step's coreset; keeps what the selection carries between
    steps: the zeroth-order path's own Adam moments (the reference keeps the
    mean moments of the selected examples' estimates, not the optimizer's,
    whose true-gradient scale differs) and its fixed probe directions' seed."""

    def __init__(self, config: CoLMConfig, seed: int = 0):
        self.config, self.seed = config, seed
        self.moments: tuple[torch.Tensor, torch.Tensor] | None = None
        self.updates = 0

    def select(
        self,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        sequences: torch.Tensor,
        sources: list[str],
        generator: torch.Generator,
    ) -> Coreset:
        start = time.perf_counter()
        small = small_sources(sources)
        budget = max(1, round(len(sources) * self.config.small_fraction))
        kept = [i for i, s in enumerate(sources) if s in small]
        large = {s: [i for i, x in enumerate(sources) if x == s] for s in sorted(set(sources) - small)}
        share = split_budget({s: len(rows) for s, rows in large.items()}, budget - len(kept))
        indices, weights, losses = list(kept), [1.0] * len(kept), None
        if large and any(share.values()):
            losses, grads = self._gradients(model, sequences, generator)
            rows = [i for members in large.values() for i in members]  # small sources left out
            update, moments = self._normalise(grads[rows], optimizer, model)
            chosen, offset = [], 0
            for source, members in large.items():
                own = update[offset : offset + len(members)]
                medoids, counts = self._medoids(own, share[source])
                chosen += [offset + m for m in medoids]
                indices += [members[m] for m in medoids]
                weights += counts
                offset += len(members)
            if moments is not None:
                self.moments = (moments[0][chosen].mean(dim=0), moments[1][chosen].mean(dim=0))
                self.updates += 1
        if losses is None:
            with torch.no_grad():
                losses = model.example_losses(sequences)
        return Coreset(
            indices=torch.tensor(indices, dtype=torch.long),
            weights=torch.tensor(weights, dtype=torch.float32),
            losses=losses.detach().float(),
            small_sources=sorted(small),
            seconds=time.perf_counter() - start,
        )

    def _medoids(self, vectors: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        """Medoids of one source's rows (on its own top dimensions) and their CRAIG weights."""
        if k == 0:
            return [], []
        own = top_dimensions(vectors, self.config.top_dims, self.config.dimension_rank)
        sim = similarity(own, self.config.similarity)
        medoids = facility_location(sim, k)
        return medoids, craig_weights(sim, medoids).tolist()

    def directions(self, model: GPT, generator: torch.Generator) -> torch.Tensor:
        """Probe directions: the same every step ("fixed", from the seed) or fresh draws."""
        shape = (self.config.zo_probes, *model.value_projection().weight.shape)
        if self.config.zo_directions == "fixed":
            generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(shape, generator=generator)

    def _gradients(self, model, sequences, generator):
        if self.config.gradient == "exact":
            return value_gradients(model, sequences)
        directions = self.directions(model, generator)
        return zeroth_order_gradients(model, sequences, self.config.zo_eps, directions)

    def _normalise(self, grads, optimizer, model):
        """Adam-normalised rows, and for the zeroth-order path each row's new moments."""
        layer, eps = model.value_projection(), self.config.adam_eps
        if self.config.gradient == "exact":  # true gradients: the optimizer's moments (as the reference)
            return adam_normalise(grads, optimizer, layer, eps), None
        m, v = self.moments or (torch.zeros(grads.shape[1], device=grads.device),) * 2
        update, m_i, v_i = adam_update(grads, m, v, self.updates + 1, optimizer.param_groups[0]["betas"], eps)
        return update, (m_i, v_i)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "moments": list(self.moments) if self.moments else None}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.moments = tuple(state["moments"]) if state["moments"] is not None else None


def select_coreset(
    model: GPT,
    optimizer: torch.optim.Optimizer,
    sequences: torch.Tensor,
    sources: list[str],
    config: CoLMConfig,
    generator: torch.Generator,
) -> Coreset:
    """One selection with no history (a fresh selector): for probes and tests."""
    return CoLMSelector(config).select(model, optimizer, sequences, sources, generator)
