"""Sparse building blocks of the fast SAE step: the active set as CSR and the three products over it.

Once only a few dozen of the n_features are active per input, every product after the encoder
forward multiplies mostly zeros. With the active set as a CSR matrix `F [batch, n_features]`
(row pointers, column indices, values), the products the step needs are

    x̂      = F @ W_dec                      `spmm`      B·L0·d multiply-adds instead of B·m·d
    ∂L/∂F   = (g @ W_decᵀ) sampled at F      `sddmm`     only at the active entries
    ∂W_dec  = Fᵀ @ g,   ∂W_encᵀ = Gᵀ @ x̄      `spmm` on the transpose

PyTorch's CSR kernels (MKL on x86) do each in a few milliseconds at batch 4,096, L0 ≈ 30, against
~75 ms for one dense float32 product (docs/benchmarks.md). Extracting the active set is the other
cost: `nonzero` on a float tensor is slow (~230 ms at 4,096 × 4,096), on a bool mask fast (~8 ms),
so the pattern always comes from a `pre > 0` mask or from `topk`.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class Pattern(NamedTuple):
    """Positions of the active entries of a `[batch, n_features]` matrix, row-major, as CSR and COO."""

    crow: Tensor
    """`[batch + 1]` int64 row pointers."""
    col: Tensor
    """`[nnz]` int64 feature index of each entry."""
    row: Tensor
    """`[nnz]` int64 input index of each entry."""
    shape: tuple[int, int]
    """(batch, n_features)."""

    def csr(self, values: Tensor) -> Tensor:
        """The CSR tensor `[batch, n_features]` with `values [nnz]` at this pattern."""
        with warnings.catch_warnings():  # "CSR support is in beta": the kernels used here are tested
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)


def pattern_from_flat(flat: Tensor, shape: tuple[int, int]) -> Pattern:
    """`flat [nnz]` sorted row-major positions in a `shape` matrix → `Pattern`."""
    batch, n = shape
    row, col = flat.div(n, rounding_mode="floor"), flat.remainder(n)
    crow = torch.zeros(batch + 1, dtype=torch.long, device=flat.device)
    crow[1:] = torch.bincount(row, minlength=batch).cumsum(0)
    return Pattern(crow, col, row, shape)


def positive_pattern(xw: Tensor, threshold: Tensor | None = None) -> Pattern:
    """The entries of `xw [batch, n_features]` above `threshold [n_features]` (or 0): ReLU's active set.

    With `threshold = −b_enc` these are the entries where `xw + b_enc > 0`, found without
    materialising the sum (one pass over `xw` instead of three).
    """
    if xw.device.type != "cpu" or xw.dtype not in (torch.float32, torch.bfloat16):
        flat = (xw > (threshold if threshold is not None else 0)).view(-1).nonzero().squeeze(1)
    elif xw.dtype == torch.bfloat16:  # NumPy has no bfloat16: a positive bfloat16 is a positive int16
        assert threshold is None, "add the bias to a bfloat16 xw first"
        flat = torch.from_numpy(np.flatnonzero(xw.view(torch.int16).numpy() > 0))
    else:  # NumPy's compare and flatnonzero were 3-5x faster than torch's here, on one thread or two
        t = threshold.numpy() if threshold is not None else 0
        flat = torch.from_numpy(np.flatnonzero(xw.numpy() > t))
    return pattern_from_flat(flat, tuple(xw.shape))  # type: ignore[arg-type]


def topk_pattern(pre: Tensor, k: int) -> Pattern:
    """The k largest entries of each row of `pre [batch, n_features]`, columns sorted within a row."""
    batch, n = pre.shape
    cols = pre.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values  # (batch, k)
    crow = torch.arange(0, batch * k + 1, k, device=pre.device)
    row = torch.arange(batch, device=pre.device).repeat_interleave(k)
    return Pattern(crow, cols.reshape(-1), row, (batch, n))


def gather(dense: Tensor, p: Pattern) -> Tensor:
    """`dense [batch, n_features]` at the pattern's entries: `[nnz]`."""
    return dense.reshape(-1)[p.row * p.shape[1] + p.col]


def sampled_matmul(p: Pattern, a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """`(a @ b)` at the pattern's entries, plus `bias [nnz]` when given: `[nnz]` (SDDMM).

    Args:
        a: `[batch, k]`. b: `[k, n_features]` (a transposed view is fine).
    """
    base = bias if bias is not None else torch.zeros(p.col.shape[0], dtype=a.dtype, device=a.device)
    return torch.sparse.sampled_addmm(p.csr(base), a, b).values()


def spmm(p: Pattern, values: Tensor, dense: Tensor) -> Tensor:
    """`S @ dense` for the CSR `S [batch, n_features]` with `values` at `p`: `[batch, d]` (dense `[n_features, d]`)."""
    return torch.sparse.mm(p.csr(values), dense)


class Transposed(NamedTuple):
    """The pattern of Sᵀ `[n_features, batch]` and where each of its entries sits in S's values."""

    pattern: Pattern
    order: Tensor
    """`[nnz]` int64: Sᵀ's values are `values[order]`."""


def transpose(p: Pattern) -> Transposed:
    """Sᵀ's pattern, sorted by feature then input.

    Built here rather than by `csr.t()`, whose CSC→CSR conversion runs `torch.sort` and took
    0.5 s per call at 47k entries on the shared 2-core machine; NumPy's argsort of one int64 key
    takes about a millisecond.
    """
    batch, n = p.shape
    key = (p.col * batch + p.row).cpu().numpy()  # unique per entry, so an unstable sort is exact
    order = torch.from_numpy(np.argsort(key)).to(p.col.device)
    crow = torch.zeros(n + 1, dtype=torch.long, device=p.col.device)
    crow[1:] = torch.bincount(p.col, minlength=n).cumsum(0)
    return Transposed(Pattern(crow, p.row[order], p.col[order], (n, batch)), order)


def spmm_t(t: Transposed, values: Tensor, dense: Tensor) -> Tensor:
    """`Sᵀ @ dense` for S with `values` at the untransposed pattern: `[n_features, d]` from `dense [batch, d]`."""
    return torch.sparse.mm(t.pattern.csr(values[t.order]), dense)


def column_sums(p: Pattern, values: Tensor) -> Tensor:
    """Σ over the batch of S for each feature: `[n_features]`."""
    return torch.bincount(p.col, weights=values, minlength=p.shape[1]).to(values.dtype)
