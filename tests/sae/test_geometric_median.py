"""Weiszfeld geometric median (paper.md §3.3) on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from monosemantic.sae.geometric_median import geometric_median


def test_one_dimension_is_the_median() -> None:
    X = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert geometric_median(X).item() == pytest.approx(2.0, abs=1e-3)


def test_symmetric_points_give_the_centre() -> None:
    square = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) + torch.tensor([5.0, -2.0])
    assert torch.allclose(geometric_median(square), torch.tensor([5.0, -2.0]), atol=1e-5)


def test_fermat_point_of_a_right_isoceles_triangle() -> None:
    # Triangle (0,0), (1,0), (0,1): all angles < 120°, so the median is the Fermat point, where each
    # side subtends 120°. By symmetry it lies on y = x at t = (3 − √3)/6.
    X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = (3 - math.sqrt(3)) / 6
    assert torch.allclose(
        geometric_median(X, tol=1e-12, max_iter=1000), torch.tensor([t, t], dtype=torch.float64), atol=1e-6
    )


def test_robust_to_an_outlier_unlike_the_mean() -> None:
    torch.manual_seed(0)
    X = torch.randn(99, 16) * 0.1 + 1.0
    X = torch.cat([X, torch.full((1, 16), 1e4)])
    gm = geometric_median(X)
    assert (gm - 1.0).norm() < 0.1  # stays with the bulk
    assert (X.mean(dim=0) - 1.0).norm() > 100  # the mean is dragged away


def test_keeps_dtype_and_rejects_empty() -> None:
    assert geometric_median(torch.randn(10, 3, dtype=torch.float32)).dtype == torch.float32
    with pytest.raises(ValueError):
        geometric_median(torch.empty(0, 3))
