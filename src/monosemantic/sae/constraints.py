"""The unit-norm decoder constraint, in one place (paper.md §3.4; STYLE P14).

`optimizer_step_` is the one function every trainer calls: it applies the constraint below to SAE
classes whose `unit_norm_decoder` is true (the paper's SAE, TopK) and skips it for the April 2024
SAE, whose decoder norms are free and enter its L1 penalty instead (paper.md §10.5).
`fold_decoder_norms_` moves free decoder norms into the encoder so rows end up unit norm.

Each row of `W_dec [n_features, d_in]` is a feature direction d_i and is kept at unit L2 norm.
The paper found that resetting rows to unit norm after each step is not quite enough: "removing any
gradient information parallel to our dictionary vectors before applying the gradient step results
in a small but real reduction in total loss". So one training step is

    loss.backward()
    remove_parallel_grad(sae.W_dec)   # project the row-parallel part out of W_dec.grad
    optimizer.step()
    normalize_rows_(sae.W_dec)        # Adam's step still drifts the norm; put rows back on the sphere

The final renormalisation is required (Neel Nanda's replication documents the bug of leaving it
out). Section numbers (§n) refer to the method reference `docs/reference/paper.md`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

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
    """In place: make `W_dec.grad` orthogonal to each decoder row (paper.md §3.4). No-op without a grad.

    `project_out_rows` in three passes over `[n_features, d_in]` instead of six: g −= (g·W / ‖W‖²) W."""
    grad = W_dec.grad
    if grad is not None:
        coeff = torch.einsum("f d, f d -> f", grad, W_dec) / W_dec.norm(dim=1).square().clamp_min(EPS**2)
        grad.addcmul_(W_dec, coeff.neg_()[:, None])


@torch.no_grad()
def normalize_rows_(W_dec: Tensor) -> None:
    """In place: rescale each row of `W_dec [n_features, d_in]` to unit L2 norm (paper.md §3.3, §3.4)."""
    W_dec.div_(W_dec.norm(dim=1, keepdim=True).clamp_min(EPS))


def adam(params: Iterator[Tensor], lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Adam:
    """The trainers' Adam: PyTorch's fused kernel on a CPU or CUDA device, one pass over each parameter.

    The default (for-loop) Adam makes about six passes over every parameter and its moments; at 4,096
    features its step took 13 ms against the fused kernel's 1.4 ms on the 2-core machine (2026-12-07).
    The update is the same up to float32 rounding. The fused kernel needs contiguous gradients
    (sparse_step.py makes `W_enc.grad` contiguous)."""
    tensors = list(params)
    fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in tensors)
    return torch.optim.Adam(tensors, lr=lr, betas=betas, eps=eps, fused=fused or None)


class _HasDecoder(Protocol):
    """What `optimizer_step_` reads of an SAE (read-only, so a class attribute and a Parameter fit)."""

    @property
    def unit_norm_decoder(self) -> bool: ...

    @property
    def W_dec(self) -> Tensor: ...

    def parameters(self) -> Iterator[Tensor]: ...


def optimizer_step_(opt: torch.optim.Optimizer, sae: _HasDecoder, max_grad_norm: float | None = None) -> None:
    """One optimizer step that keeps the SAE's decoder constraint (after `loss.backward()`).

    Order: remove the row-parallel gradient (unit-norm SAEs, paper.md §3.4) → clip the total gradient
    norm (when `max_grad_norm` is set; the April 2024 recipe clips at 1) → `opt.step()` →
    renormalise the rows (unit-norm SAEs).
    """
    if sae.unit_norm_decoder:
        remove_parallel_grad(sae.W_dec)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), max_grad_norm)
    opt.step()
    if sae.unit_norm_decoder:
        normalize_rows_(sae.W_dec)


@torch.no_grad()
def fold_decoder_norms_(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor) -> None:
    """In place: make decoder rows unit norm without changing the reconstruction (paper.md §10.5, peers.md §5.5).

    With n_i = ‖W_dec[i]‖: `W_enc[:, i] *= n_i`, `b_enc[i] *= n_i`, `W_dec[i] /= n_i`. For a ReLU
    encoder the feature activation becomes f_i · n_i (the April update's reading of a feature's
    activation) and x̂ = Σ f_i W_dec[i] + b_dec is unchanged. Not valid for TopK when norms differ
    (it changes which k features win), which is why TopK keeps unit-norm rows all along.

    Args:
        W_enc: `[d_in, n_features]`. b_enc: `[n_features]`. W_dec: `[n_features, d_in]`.
    """
    n = W_dec.norm(dim=1).clamp_min(EPS)  # (n_features,)
    W_enc.mul_(n)
    b_enc.mul_(n)
    W_dec.div_(n[:, None])
