"""The SAE losses as pure functions: the 2023 loss (paper.md §3.2; STYLE P4), and the terms later recipes share.

    L = mean over batch of [ (1/d_in) Σ_j (x_j − x̂_j)²  +  λ Σ_i f_i ]

The MSE is a mean over the vector's elements while the L1 penalty is a sum over features: "the MSE
is a mean over each vector element while the L1 penalty is a sum". That is the scale on which the
paper's λ = 0.004 is stated. Another library's coefficient converts as follows: summed squared
error → d_in·λ; summed squared error and L1 summed over the batch → d_in·λ / batch.

Scale: multiplying the data by c multiplies the MSE by c² and the optimal f by c, so training on
c·x with λ is the same problem as training on x with λ / c (see `normalize.py`).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class LossTerms(NamedTuple):
    """What a training recipe's `loss` returns for one batch (`recipe.TrainRecipe`)."""

    loss: Tensor
    """Scalar to minimise."""
    f: Tensor
    """`[batch, n_features]` feature activations, for the dead-feature counter and L0."""
    parts: dict[str, Tensor]
    """Scalars to log, e.g. {"mse": ..., "l1": ...}; the trainer averages them over each log interval."""
    per_input: Tensor | None = None
    """`[batch]` the loss of each input, detached, where the recipe gives it (the 2023 recipe: resampling's
    scores, paper.md §4); else None."""


def reconstruction_mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error over all elements (paper.md §3.2).

    Args:
        x, x_hat: `[batch, d_in]`.
    Returns:
        scalar, mean over batch and d_in of `(x − x_hat)²`.
    """
    return (x - x_hat).pow(2).mean()


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """Squared error summed over d_in, mean over the batch: the 2024 recipes' reconstruction (paper.md §10.3, §10.5).

    Args:
        x, x_hat: `[batch, d_in]`.
    Returns:
        scalar, `d_in · reconstruction_mse(x, x_hat)`.
    """
    return (x - x_hat).pow(2).sum(dim=-1).mean()


def l1_penalty(f: Tensor) -> Tensor:
    """L1 norm of the feature activations, summed over features, mean over the batch (paper.md §3.2).

    Args:
        f: `[batch, n_features]`, feature activations (non-negative after the ReLU).
    Returns:
        scalar, without the coefficient λ.
    """
    return f.abs().sum(dim=-1).mean()


def total_loss(x: Tensor, x_hat: Tensor, f: Tensor, l1_coeff: float) -> Tensor:
    """`reconstruction_mse + l1_coeff · l1_penalty`, the quantity the paper minimises (paper.md §3.1, §3.2).

    Args:
        x, x_hat: `[batch, d_in]`. f: `[batch, n_features]`. l1_coeff: λ.
    Returns:
        scalar; equals `per_example_loss(...).mean()`.
    """
    return reconstruction_mse(x, x_hat) + l1_coeff * l1_penalty(f)


def per_input_terms(x: Tensor, x_hat: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
    """The MSE (mean over d_in) and the L1 (sum over features) of each input: `[batch]` each.

    Their means over the batch are `reconstruction_mse` and `l1_penalty`."""
    return (x - x_hat).pow(2).mean(dim=-1), f.abs().sum(dim=-1)


def per_example_loss(x: Tensor, x_hat: Tensor, f: Tensor, l1_coeff: float) -> Tensor:
    """The same loss for each input separately; resampling squares it (paper.md §4).

    Args:
        x, x_hat: `[batch, d_in]`. f: `[batch, n_features]`. l1_coeff: λ (0 gives the MSE alone).
    Returns:
        `[batch]`, `(1/d_in) Σ_j (x_j − x̂_j)² + λ Σ_i |f_i|` per row.
    """
    mse, l1 = per_input_terms(x, x_hat, f)
    return mse + l1_coeff * l1
