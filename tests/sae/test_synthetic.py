"""The planted-features generator and its recovery score."""

from __future__ import annotations

import torch

from monosemantic.sae.synthetic import mean_max_cosine, planted_features


def test_planted_features_are_seeded_unit_and_sparse() -> None:
    dirs, sampler = planted_features(n_dirs=20, d=10, density=0.1, seed=3)
    dirs2, sampler2 = planted_features(n_dirs=20, d=10, density=0.1, seed=3)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(20))
    x = sampler(5000)
    assert x.shape == (5000, 10) and torch.equal(dirs, dirs2) and torch.equal(x, sampler2(5000))
    # coefficients are recoverable when directions are orthonormal: check density on a fresh sampler
    eye, s = planted_features(n_dirs=10, d=10, density=0.1, seed=0)
    coeffs = s(20000) @ eye.T @ torch.linalg.inv(eye @ eye.T)
    assert abs((coeffs.abs() > 1e-4).float().mean().item() - 0.1) < 0.01
    assert len(list(sampler.batches(7, 3))) == 3


def test_mean_max_cosine() -> None:
    dirs, _ = planted_features(n_dirs=8, d=6, density=0.5, seed=0)
    assert abs(mean_max_cosine(dirs * 3, dirs) - 1.0) < 1e-6  # scale does not matter
    learned = torch.cat([dirs[:4], -dirs[4:]])  # half of them flipped: cosine -1 is not a match
    assert mean_max_cosine(learned, dirs) < 0.9
