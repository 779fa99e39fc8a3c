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
    batch, n = xw.shape
    return pattern_from_flat(flat, (batch, n))


def topk_pattern(pre: Tensor, k: int) -> Pattern:
    """The k largest entries of each row of `pre [batch, n_features]` (as `torch.topk`), columns sorted within a row."""
    batch, n = pre.shape
    cols = topk_columns(pre, k)  # (batch, k)
    crow = torch.arange(0, batch * k + 1, k, device=pre.device)
    row = torch.arange(batch, device=pre.device).repeat_interleave(k)
    return Pattern(crow, cols.reshape(-1), row, (batch, n))


def plain_topk_columns(pre: Tensor, k: int) -> Tensor:
    """`torch.topk`'s column indices `[batch, k]`, sorted within a row: the reference for `topk_columns`."""
    return pre.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values


TOPK_GROUP = (8, 64)
"""`topk_columns` cuts a row into groups of this many columns (min, max); about 4k groups per row."""
TOPK_WIDTH = 8
"""`topk_columns` ranks at most this × k candidates per row; rows with more take the plain top-k."""


def topk_columns(pre: Tensor, k: int) -> Tensor:
    """Column indices `[batch, k]` of each row's k largest entries of `pre [batch, n_features]`, sorted.

    The same set as `torch.topk(pre, k)` in every row, found without ranking every entry: where
    `torch.topk` ranks all n_features entries of a row (~30 ms at 4,096 × 4,096 on the 2-core
    machine, next to a 75 ms encoder product), a row's top k must lie in its k groups with the
    largest maxima, and above the smallest of those maxima, τ:

        1. cut the row into g ≈ 4k groups of s contiguous columns; group maxima `[batch, g]`
           (one vectorised pass, the only one over the whole matrix)
        2. τ = the k-th largest group maximum. It is ≤ the row's k-th largest entry (the k group
           maxima are k entries ≥ τ), and every entry ≥ τ lies in one of those k groups, unless
           another group's maximum equals τ (a tie, checked below)
        3. gather those k groups (k·s ≈ n/4 entries), keep the entries ≥ τ (~40 per row for k 32)
        4. rank the candidates of each row (padded to the longest row) and take the top k

    Exact: a row is redone with `torch.topk` when its k-th largest value is tied with another
    entry (then `torch.topk` picks among equals in its own way, and so do we by redoing it), when
    group maxima tie at τ, when it holds a NaN (`torch.topk` ranks NaN highest), or when it has
    more than TOPK_WIDTH·k candidates. Every other row's top k is unique, so it is `torch.topk`'s.
    Plain `torch.topk` where the pre-filter does not pay: fewer than 2k groups, or not a CPU float32
    tensor (bfloat16 reductions and conversions ran ~9× slower than float32's on the 2-core
    machine, so a bfloat16 pre-filter was 2× slower than `torch.topk`; docs/decisions.md 2026-12-06).
    Steps 2-4 are NumPy's, on one thread: splitting the rows over two threads saved 2-15 % at
    4,096 (measured, idle machine), not worth a thread pool.
    """
    pre = pre.detach()
    batch, n = pre.shape
    s = min(max(n // (4 * k), TOPK_GROUP[0]), TOPK_GROUP[1])  # columns per group
    g = n // s  # groups; the last n − g·s columns (the tail) belong to none and are always candidates
    if pre.device.type != "cpu" or pre.dtype != torch.float32 or batch == 0 or g < 2 * k or not pre.is_contiguous():
        return plain_topk_columns(pre, k)
    gmax = pre.as_strided((batch, g, s), (n, s, 1)).amax(2).numpy()  # (batch, g): the first g·s columns
    out, unique = _select_rows(pre.numpy(), gmax, k, s, g)
    redo = np.flatnonzero(~unique)
    if redo.size:
        out[redo] = pre[torch.from_numpy(redo)].topk(k, dim=-1, sorted=False).indices.numpy()
    out.sort(axis=1)
    return torch.from_numpy(out)


def _select_rows(raw: np.ndarray, gmax: np.ndarray, k: int, s: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-4 of `topk_columns` for rows `raw [rows, n]` with group maxima `gmax [rows, g]`: the
    top k's columns `[rows, k]` (unsorted) and whether each row's top k is unique `[rows]` bool."""
    batch, n = raw.shape
    top_groups = np.argpartition(gmax, g - k, axis=1)[:, g - k :]  # (rows, k); NaN ranks highest
    tau = np.take_along_axis(gmax, top_groups, 1).min(1)  # (rows,)
    first = np.arange(batch)[:, None] * n + top_groups * s  # (rows, k) flat index of each group's first entry
    if g * s == n:  # whole rows of s entries: the fastest gather
        cand = np.take(raw.reshape(batch * g, s), first.ravel() // s, axis=0).reshape(batch, k * s)
    else:
        cand = np.take(raw.reshape(-1), first[:, :, None] + np.arange(s)).reshape(batch, k * s)
        cand = np.concatenate([cand, raw[:, g * s :]], axis=1)  # (rows, k·s + tail)
    out, unique = _rank_candidates(cand, tau, top_groups, k, s, g)
    unique &= (gmax >= tau[:, None]).sum(1) == k  # no group outside the k reaches τ
    unique &= ~np.isnan(gmax).any(1)
    return out, unique


def _rank_candidates(
    cand: np.ndarray, tau: np.ndarray, top_groups: np.ndarray, k: int, s: int, g: int
) -> tuple[np.ndarray, np.ndarray]:
    """Step 4 of `topk_columns`: the top k of each row's candidates ≥ τ, as columns `[batch, k]`
    (unsorted), and whether that top k is unique `[batch]` bool (no tie at the k-th value, and not
    cut off at TOPK_WIDTH·k candidates)."""
    batch, w = cand.shape[0], k * s
    pos = np.flatnonzero(cand >= tau[:, None])  # row-major positions in cand
    row, at = np.divmod(pos, cand.shape[1])
    counts = np.bincount(row, minlength=batch)  # ≥ k in a row without NaN: its k group maxima
    col = np.where(at < w, top_groups[row, np.minimum(at, w - 1) // s] * s + at % s, g * s + at - w)
    width = max(k, int(min(counts.max(), TOPK_WIDTH * k)))
    slot = np.arange(pos.size) - (np.cumsum(counts) - counts)[row]  # index of the candidate within its row
    fits = slot < width
    dest = row[fits] * width + slot[fits]
    vals = np.full((batch, width), -np.inf, dtype=np.float32)
    vals.ravel()[dest] = cand.ravel()[pos[fits]]
    cols = np.zeros((batch, width), dtype=np.int64)
    cols.ravel()[dest] = col[fits]
    pick = np.argpartition(vals, width - k, axis=1)[:, width - k :]  # (batch, k)
    kth = np.take_along_axis(vals, pick, 1).min(1)
    unique = ((vals >= kth[:, None]).sum(1) == k) & (counts <= width)  # padding (−inf) counts as a tie
    return np.take_along_axis(cols, pick, 1), unique


def gather(dense: Tensor, p: Pattern) -> Tensor:
    """`dense [batch, n_features]` at the pattern's entries: `[nnz]`."""
    return dense.reshape(-1)[p.row * p.shape[1] + p.col]


def sampled_matmul(p: Pattern, a: Tensor, b: Tensor, bias: Tensor | None = None, alpha: float = 1.0) -> Tensor:
    """`alpha · (a @ b)` at the pattern's entries, plus `bias [nnz]` when given: `[nnz]` (SDDMM).

    Args:
        a: `[batch, k]`. b: `[k, n_features]` (a transposed view is fine).
    """
    base = bias if bias is not None else torch.zeros(p.col.shape[0], dtype=a.dtype, device=a.device)
    return torch.sparse.sampled_addmm(p.csr(base), a, b, alpha=alpha).values()


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
    0.5 s per call at 47k entries on the shared 2-core machine; NumPy's stable radix sort of the
    16-bit feature indices takes a fraction of a millisecond.
    """
    batch, n = p.shape
    col = p.col.cpu().numpy()
    if n <= 1 << 16:  # S is row-major, so a stable sort by feature alone gives feature-then-input order;
        # NumPy sorts 16-bit keys by radix, in linear time (4-5x faster than argsort of an int64 key at 1M entries)
        order_np = np.argsort(col.astype(np.uint16), kind="stable")
    else:
        order_np = np.argsort(col * batch + p.row.cpu().numpy())  # unique per entry, so an unstable sort is exact
    order = torch.from_numpy(order_np).to(p.col.device)
    counts = torch.bincount(p.col, minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.long, device=p.col.device)
    crow[1:] = counts.cumsum(0)
    cols = torch.repeat_interleave(torch.arange(n, device=p.col.device), counts)  # = p.col[order], without a gather
    return Transposed(Pattern(crow, p.row[order], cols, (n, batch)), order)


def spmm_t(t: Transposed, values: Tensor, dense: Tensor) -> Tensor:
    """`Sᵀ @ dense` for S with `values` at the untransposed pattern: `[n_features, d]` from `dense [batch, d]`."""
    return torch.sparse.mm(t.pattern.csr(values[t.order]), dense)


def column_sums(p: Pattern, values: Tensor) -> Tensor:
    """Σ over the batch of S for each feature: `[n_features]`."""
    return torch.bincount(p.col, weights=values, minlength=p.shape[1]).to(values.dtype)
