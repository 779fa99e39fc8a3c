"""Loss functions against hand-computed values (paper.md §3.2)."""

from __future__ import annotations

import pytest
import torch

from monosemantic.sae.loss import l1_penalty, per_example_loss, reconstruction_mse, total_loss

X = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
X_HAT = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # squared errors: [0, 4], [1, 1]
F = torch.tensor([[0.5, 0.0, 1.5], [0.0, 0.0, 3.0]])  # L1 per row: 2, 3


def test_reconstruction_mse_is_mean_over_elements() -> None:
    assert reconstruction_mse(X, X_HAT).item() == pytest.approx((0 + 4 + 1 + 1) / 4)


def test_l1_is_sum_over_features_mean_over_batch() -> None:
    assert l1_penalty(F).item() == pytest.approx((2 + 3) / 2)


def test_total_loss() -> None:
    assert total_loss(X, X_HAT, F, l1_coeff=0.1).item() == pytest.approx(1.5 + 0.1 * 2.5)


def test_per_example_loss() -> None:
    got = per_example_loss(X, X_HAT, F, l1_coeff=0.1)
    assert torch.allclose(got, torch.tensor([2.0 + 0.2, 1.0 + 0.3]))
    assert got.mean().item() == pytest.approx(total_loss(X, X_HAT, F, 0.1).item())
    assert torch.allclose(per_example_loss(X, X_HAT, F, 0.0), torch.tensor([2.0, 1.0]))
