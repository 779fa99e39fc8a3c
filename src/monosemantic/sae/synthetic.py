"""Synthetic activations built from known sparse directions: a ground truth for SAE tests.

Like the paper's toy-model checks (paper.md §6: "toy models with known ground truth"), each sample
is a sparse non-negative combination of fixed unit directions:

    x = Σ_i a_i · u_i,   a_i = Bernoulli(density) · Uniform(lo, hi)   independently per i

with magnitudes (lo, hi) = (0.5, 1.5) unless chosen otherwise.

A good dictionary should contain every u_i among its decoder rows; `mean_max_cosine` measures that.
Used by tests/sae and by the benchmarks. Everything is seeded and runs on CPU.

    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    batches = sampler.batches(batch_size=256, n_batches=1000)   # Iterator[Tensor [256, 32]]
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class PlantedSampler:
    """Draws `[batch, d]` samples from fixed directions; owns its random generator."""

    def __init__(
        self, directions: Tensor, density: float, seed: int, magnitude: tuple[float, float] = (0.5, 1.5)
    ) -> None:
        self.directions = directions  # (n_dirs, d), unit rows
        self.density = density
        self.magnitude = magnitude
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch_size: int) -> Tensor:
        n_dirs = self.directions.shape[0]
        on = torch.rand(batch_size, n_dirs, generator=self.generator) < self.density
        lo, hi = self.magnitude
        size = lo + (hi - lo) * torch.rand(batch_size, n_dirs, generator=self.generator)  # U(lo, hi)
        return (on * size) @ self.directions  # (batch, n_dirs) @ (n_dirs, d) -> (batch, d)

    def batches(self, batch_size: int, n_batches: int) -> Iterator[Tensor]:
        """`n_batches` fresh batches, never repeated."""
        for _ in range(n_batches):
            yield self(batch_size)


def planted_features(
    n_dirs: int, d: int, density: float, seed: int = 0, magnitude: tuple[float, float] = (0.5, 1.5)
) -> tuple[Tensor, PlantedSampler]:
    """Random unit directions and a sampler of their sparse combinations.

    Args:
        n_dirs: number of planted directions (may exceed d: superposition).
        d: input width.
        density: probability that each direction is active in a sample.
        seed: fixes both the directions and the sample stream.
        magnitude: (lo, hi) of the uniform coefficient of an active direction, 0 ≤ lo ≤ hi.
    Returns:
        `(directions [n_dirs, d], sampler)`; `sampler(batch)` gives `[batch, d]`.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not 0 <= magnitude[0] <= magnitude[1]:
        raise ValueError(f"magnitude must be (lo, hi) with 0 <= lo <= hi, got {magnitude}")
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_dirs, d, generator=g)
    directions = directions / directions.norm(dim=1, keepdim=True)
    return directions, PlantedSampler(directions, density, seed + 1, magnitude)


def mean_max_cosine(learned: Tensor, true: Tensor) -> float:
    """For each true direction, the best cosine with any learned direction, averaged.

    Args:
        learned: `[n_features, d]`, e.g. `sae.W_dec`. true: `[n_dirs, d]`.
    Returns:
        mean over the n_dirs true directions of max_j cos(true_i, learned_j), in [-1, 1].
    """
    a = learned / learned.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = true / true.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = b @ a.T  # (n_dirs, n_features)
    return cos.max(dim=1).values.mean().item()
