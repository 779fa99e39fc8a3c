"""Streaming Pearson correlation between every column of X and every column of Y.

The proxies (paper.md §8.1) and universality (paper.md §8.12) correlate activations over a million tokens or more;
only sums are kept, so memory is `O(F·P)` whatever the token count:

    n, Σx, Σx², Σy, Σy², Σxy   →   r = (n Σxy − Σx Σy) / sqrt((n Σx² − (Σx)²)(n Σy² − (Σy)²))

Sums are float64 (float32 sums of a million squares lose the digits the subtraction needs). A
column that never varies has no correlation: NaN, which callers read as "dead".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def pearson_from_sums(
    n: float, sx: np.ndarray, sxx: np.ndarray, sy: np.ndarray, syy: np.ndarray, sxy: np.ndarray
) -> np.ndarray:
    """[F, P] correlations from the sums (`sx`, `sxx`: [F]; `sy`, `syy`: [P]; `sxy`: [F, P])."""
    vx = n * sxx - sx**2
    vy = n * syy - sy**2
    cov = n * sxy - np.outer(sx, sy)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(np.outer(np.maximum(vx, 0), np.maximum(vy, 0)))
        r = cov / den
    # Relative tolerance: a constant column's variance is rounding noise, not signal.
    dead = (vx[:, None] <= 1e-12 * np.maximum(n * sxx, 1e-300)[:, None]) | (
        vy[None, :] <= 1e-12 * np.maximum(n * syy, 1e-300)[None, :]
    )
    r[dead | (den == 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


class PearsonAccumulator:
    """Accumulate X [T, F] against Y [T, P] over batches of tokens; `corr()` is [F, P].

    X may be sparse in practice (SAE features): `update` multiplies through a sparse copy of X
    when fewer than `sparse_below` of its entries are nonzero, which turns the [F, T] @ [T, P]
    product into O(nnz(X) · P) work. Both paths give the same sums (tested).
    """

    def __init__(self, n_x: int, n_y: int, sparse_below: float = 0.05):
        self.n = 0
        self.sx = np.zeros(n_x)
        self.sxx = np.zeros(n_x)
        self.sy = np.zeros(n_y)
        self.syy = np.zeros(n_y)
        self.sxy = torch.zeros(n_x, n_y, dtype=torch.float64)
        self.sparse_below = sparse_below

    @torch.inference_mode()
    def update(self, x: Tensor, y: Tensor, keep: Tensor | None = None, nz: Tensor | None = None) -> None:
        """`x`: [T, F], `y`: [T, P], the same T tokens in the same order.

        `keep`: bool [T], count only those tokens; `nz`: `x.nonzero()` when the caller already has it
        (several accumulators over one `x` share it).
        """
        if keep is not None:
            y = y[keep]
        self.n += y.shape[0]
        yd = y.double()
        self.sy += yd.sum(0).numpy()
        self.syy += (yd * yd).sum(0).numpy()
        if nz is None and torch.count_nonzero(x).item() < self.sparse_below * x.numel():
            nz = x.nonzero()
        if nz is not None and len(nz) < self.sparse_below * x.numel():
            # Only the nonzero entries: O(nnz) for the sums, O(nnz · P) for the cross products.
            rows, cols = nz[:, 0], nz[:, 1]
            v = x[rows, cols].double()
            if keep is not None:
                kept = keep[rows]
                rows, cols, v = (torch.cumsum(keep, 0) - 1)[rows[kept]], cols[kept], v[kept]
            sx, sxx = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
            self.sx += sx.index_add_(0, cols, v).numpy()
            self.sxx += sxx.index_add_(0, cols, v * v).numpy()
            xt = torch.sparse_coo_tensor(torch.stack([cols, rows]), v, (x.shape[1], y.shape[0]), check_invariants=False)
            self.sxy += torch.sparse.mm(xt, yd)
        else:
            xd = (x if keep is None else x[keep]).double()
            self.sx += xd.sum(0).numpy()
            self.sxx += (xd * xd).sum(0).numpy()
            self.sxy += xd.t() @ yd

    def corr(self) -> np.ndarray:
        return pearson_from_sums(self.n, self.sx, self.sxx, self.sy, self.syy, self.sxy.numpy())
