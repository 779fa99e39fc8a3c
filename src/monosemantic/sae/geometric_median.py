"""Geometric median by Weiszfeld's algorithm, used to initialise `b_dec` (paper.md §3.3).

The paper ties the pre-encoder bias to the decoder bias and initialises it "to the geometric
median of the dataset"; it does not say how the median was computed (paper.md §13). We run
Weiszfeld's iteration on a sample of training activations (the trainer's
`SAETrainConfig.b_dec_init_n_inputs`, 16,384 by default):

    y = mean(X)
    repeat: w_k = 1 / max(‖x_k − y‖, eps);  y ← Σ w_k x_k / Σ w_k
    until ‖Δy‖ ≤ tol · (1 + ‖y‖)  or  max_iter iterations

The stopping rule is relative to ‖y‖ so the same `tol` works whatever the data's scale. `eps` keeps
a point that coincides with y from taking infinite weight; the median of points lying on a line
may then be off by about eps. The sum runs in float64, since Weiszfeld divides small differences.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@torch.no_grad()
def geometric_median(X: Tensor, tol: float = 1e-6, max_iter: int = 200, eps: float = 1e-8) -> Tensor:
    """The point minimising Σ_k ‖x_k − y‖₂ over the rows of `X` (Weiszfeld).

    Args:
        X: `[n, d]` sample points (n ≥ 1).
        tol: stop when the step is at most `tol · (1 + ‖y‖)`.
        max_iter: upper bound on iterations; a warning is logged if it is reached.
        eps: lower bound on distances, in the units of X.
    Returns:
        `[d]`, in X's dtype and device.
    """
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"geometric_median: X must be [n, d] with n >= 1, got shape {tuple(X.shape)}")
    Xd = X.double()
    y = Xd.mean(dim=0)
    for i in range(max_iter):
        w = 1.0 / (Xd - y).norm(dim=1).clamp_min(eps)  # (n,)
        y_new = (w[:, None] * Xd).sum(dim=0) / w.sum()
        step = (y_new - y).norm()
        y = y_new
        if step <= tol * (1.0 + y.norm()):
            log.debug("geometric median converged after %d iterations", i + 1)
            break
    else:
        log.warning("geometric median: no convergence to tol=%g after %d iterations", tol, max_iter)
    return y.to(X.dtype)
