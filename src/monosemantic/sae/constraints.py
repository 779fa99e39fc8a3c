"""The unit-norm decoder constraint, in one place (TM §3.4; STYLE P14).

Each row of `W_dec [n_features, d_in]` is a feature direction d_i and is kept at unit L2 norm.
The paper found that resetting rows to unit norm after each step is not quite enough: "removing any
gradient information parallel to our dictionary vectors before applying the gradient step results
in a small but real reduction in total loss". So one training step is

    loss.backward()
    remove_parallel_grad(sae.W_dec)   # project the row-parallel part out of W_dec.grad
    optimizer.step()
    normalize_rows_(sae.W_dec)        # Adam's step still drifts the norm; put rows back on the sphere

The final renormalisation is required (Neel Nanda's replication documents the bug of leaving it
out). Section numbers (§n) refer to the method reference `towards-monosemanticity.md`.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Guards the division for an all-zero row; a real decoder row never gets near this.
EPS = 1e-12


def project_out_rows(grad: Tensor, W: Tensor) -> Tensor:
    """Remove from each row of `grad` its component along the same row of `W` (pure).

    Args:
        grad: `[n_features, d_in]`, a gradient with respect to `W`.
        W: `[n_features, d_in]`, rows need not be unit norm (they are normalised here).
    Returns:
        `[n_features, d_in]`, `grad - (grad · d_i) d_i` row by row, with `d_i = W_i / ‖W_i‖`.
    """
    d = W / W.norm(dim=1, keepdim=True).clamp_min(EPS)  # (n_features, d_in), unit rows
    parallel = torch.einsum("f d, f d -> f", grad, d)  # (n_features,)
    return grad - parallel[:, None] * d


@torch.no_grad()
def remove_parallel_grad(W_dec: Tensor) -> None:
    """In place: make `W_dec.grad` orthogonal to each decoder row (TM §3.4). No-op without a grad."""
    if W_dec.grad is not None:
        W_dec.grad.copy_(project_out_rows(W_dec.grad, W_dec))


@torch.no_grad()
def normalize_rows_(W_dec: Tensor) -> None:
    """In place: rescale each row of `W_dec [n_features, d_in]` to unit L2 norm (TM §3.3, §3.4)."""
    W_dec.div_(W_dec.norm(dim=1, keepdim=True).clamp_min(EPS))
