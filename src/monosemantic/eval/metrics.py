"""Is the dictionary any good? Sparsity, reconstruction and feature-density metrics (paper.md §7).

Pure functions on tensors (STYLE P4), each stating its shapes and formula, plus two small
streaming accumulators that give the same numbers over many batches without holding all
activations in memory (262k tokens × 4,096 features would be 4 GB of float32):

    ReconstructionStats.update(x, x_hat)   -> mse, fvu, normalized_mse
    FeatureStats.update(f)                  -> density per feature, l0, l1, dead / dense / ultralow

Three reconstruction numbers circulate in the literature and disagree because they normalise
differently (paper.md §7.3). We report all three, each with its formula in `metrics.json`:

    mse            = mean over rows and elements of (x − x̂)²   the paper's training loss term (§3.2)
    normalized_mse = Σ‖x − x̂‖² / Σ‖x‖²                          likely [APR24]'s "Normalized MSE" (undefined there)
    fvu            = Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the mean over rows fraction of variance unexplained;
                                                               [SM]'s "variance explained" is 1 − fvu

The 2023 paper reports none of them numerically (§7.3). Post-ReLU MLP activations have a large
mean, so normalized_mse is much smaller than fvu for the same reconstruction.

Section numbers (§n) refer to the method reference `docs/reference/paper.md`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.errors import UserError
from monosemantic.io import atomic_path

DENSE_THRESHOLD = 0.1
"""A feature firing on more than 10 % of tokens is "dense". [TM] warns already at 1 % ("many
features with density > 1 % means λ too low", §12 #11); 10 % flags the clearly broken ones."""
ULTRALOW_THRESHOLD = 1e-6
"""paper.md §7.1: ultralow density = "active on less than 1 in a million dataset examples" (but alive)."""


# -- reconstruction (§7.3) ---------------------------------------------------------------------


def mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean squared error over all elements, the recon term of the paper's loss (paper.md §3.2).

    Args:
        x, x_hat: `[n, d]` activations and their reconstruction.
    Returns:
        scalar, `mean_{rows, elements} (x − x̂)²`.
    """
    return (x - x_hat).pow(2).mean()


def normalized_mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """Squared error relative to the squared norm of the input (paper.md §7.3).

    Args:
        x, x_hat: `[n, d]`.
    Returns:
        scalar, `Σ‖x − x̂‖² / Σ‖x‖²` (sums over rows and elements). 0 is perfect; predicting
        zero gives 1. Likely the "Normalized MSE" of [APR24]'s table.
    """
    return (x - x_hat).pow(2).sum() / x.pow(2).sum()


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained (paper.md §7.3); explained variance is `1 − fvu`.

    Args:
        x, x_hat: `[n, d]`.
    Returns:
        scalar, `Σ‖x − x̂‖² / Σ‖x − x̄‖²` with `x̄ [d]` the mean of `x` over rows. 0 is perfect;
        predicting the mean vector gives 1.
    """
    return (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum()


# -- sparsity (§7.3) ---------------------------------------------------------------------------


def l0(f: Tensor) -> Tensor:
    """Mean number of active features per row (paper.md §7.3).

    Args:
        f: `[n, n_features]` feature activations.
    Returns:
        scalar, `mean_rows #{i : f_i > 0}`.
    """
    return (f > 0).sum(dim=-1).float().mean()


def l1(f: Tensor) -> Tensor:
    """Mean L1 norm of the feature activations per row (the paper's penalty without λ, §3.2).

    Args:
        f: `[n, n_features]`.
    Returns:
        scalar, `mean_rows Σ_i |f_i|`.
    """
    return f.abs().sum(dim=-1).mean()


# -- density (§7.1, §7.2) ----------------------------------------------------------------------


def feature_density(f: Tensor) -> Tensor:
    """Fraction of rows on which each feature is nonzero (paper.md §7.1 "density").

    Args:
        f: `[n, n_features]`.
    Returns:
        `[n_features]` float64 in [0, 1].
    """
    return (f > 0).sum(dim=0).double() / f.shape[0]


def density_summary(
    density: Tensor, dense_threshold: float = DENSE_THRESHOLD, ultralow_threshold: float = ULTRALOW_THRESHOLD
) -> dict[str, int | float]:
    """Count dead, dense and ultralow features (paper.md §7.1).

    Args:
        density: `[n_features]`, from `feature_density` or `FeatureStats.density`.
    Returns:
        `n_dead` (density == 0: never active on the evaluation tokens), `n_dense`
        (density > dense_threshold), `n_ultralow` (0 < density < ultralow_threshold, so dead and
        ultralow are disjoint as in the paper's A/1: 168 dead + 292 ultralow), and each as a
        fraction of `n_features` (`dead_frac`, `dense_frac`, `ultralow_frac`).
    """
    n = density.numel()
    counts = {
        "n_dead": int((density == 0).sum()),
        "n_dense": int((density > dense_threshold).sum()),
        "n_ultralow": int(((density > 0) & (density < ultralow_threshold)).sum()),
    }
    fracs = {k.removeprefix("n_") + "_frac": v / n for k, v in counts.items()}
    return {**counts, **fracs}


@dataclass(frozen=True)
class DensityHistogram:
    """Histogram of log10(density) over the features that fired at least once (paper.md §7.2)."""

    log10_edges: list[float]
    """`bins + 1` bin edges in log10(density), increasing."""
    counts: list[int]
    """Alive features per bin; `sum(counts) + n_dead = n_features`."""
    n_dead: int
    """Features with density 0, which have no log10 and are counted here instead."""


def density_histogram(density: Tensor, bins: int, log10_min: float, log10_max: float = 0.0) -> DensityHistogram:
    """Histogram of `log10(density)` with dead features counted separately (paper.md §7.1, §7.2).

    Args:
        density: `[n_features]` in [0, 1].
        bins: number of equal-width bins on `[log10_min, log10_max]`.
        log10_min: left edge. With N evaluation tokens the rarest alive feature has density 1/N,
            so `floor(log10(1/N))` shows every alive feature. Bins are left-closed (the last one is
            closed on both sides); values outside the range are clamped into the first or last
            bin, so no alive feature is dropped.
    Returns:
        a `DensityHistogram`.
    """
    if bins < 1 or not log10_min < log10_max:
        raise ValueError(f"need bins >= 1 and log10_min < log10_max, got {bins}, {log10_min}, {log10_max}")
    density = density.detach().double().cpu()
    alive = density[density > 0]
    edges = torch.linspace(log10_min, log10_max, bins + 1, dtype=torch.float64)
    # Bins are [e_k, e_k+1), the last one closed; clamping keeps out-of-range features in the end bins.
    index = torch.bucketize(alive.log10().clamp(log10_min, log10_max), edges[1:-1], right=True)
    counts = torch.bincount(index, minlength=bins)
    return DensityHistogram(
        log10_edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        n_dead=int((density == 0).sum()),
    )


# -- streaming accumulators (STYLE P4: state in small classes) ---------------------------------


class ReconstructionStats:
    """Accumulates `mse`, `normalized_mse` and `fvu` over batches, in float64.

    The result equals the one-shot functions on the concatenated batches (up to rounding). FVU's
    denominator uses `Σ‖x − x̄‖² = Σ‖x‖² − n‖x̄‖²`, with x̄ the mean over all rows seen.
    """

    def __init__(self) -> None:
        self.n_rows = 0
        self.d: int | None = None
        self.sse = 0.0  # Σ‖x − x̂‖²
        self.sum_sq = 0.0  # Σ‖x‖²
        self.sum_x: Tensor | None = None  # Σ_rows x, [d] float64

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor) -> None:
        """Add a batch: `x, x_hat [batch, d]`."""
        x, x_hat = x.double(), x_hat.double()
        if self.sum_x is None:
            self.d, self.sum_x = x.shape[1], torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        self.n_rows += x.shape[0]
        self.sse += float((x - x_hat).pow(2).sum())
        self.sum_sq += float(x.pow(2).sum())
        self.sum_x += x.sum(dim=0)

    def result(self) -> dict[str, float]:
        """`{"mse", "normalized_mse", "fvu"}` over everything seen (see the module docstring)."""
        if self.sum_x is None or self.d is None:
            raise ValueError("ReconstructionStats: no batches seen")
        centred = self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n_rows
        return {
            "mse": self.sse / (self.n_rows * self.d),
            "normalized_mse": _ratio(self.sse, self.sum_sq),
            "fvu": _ratio(self.sse, centred),
        }


class FeatureStats:
    """Per-feature firing counts and L1 mass over a stream of `f [batch, n_features]` (paper.md §7.1).

    `density` equals `feature_density` of the concatenated batches; `l0` and `l1` equal the
    one-shot `l0` and `l1` (since Σ_rows #active = Σ_features count).
    """

    def __init__(self, n_features: int, device: torch.device | str | None = None) -> None:
        self.n_rows = 0
        self.active_counts = torch.zeros(n_features, dtype=torch.int64, device=device)
        """`[n_features]`: rows on which each feature was > 0."""
        self.abs_sums = torch.zeros(n_features, dtype=torch.float64, device=device)
        """`[n_features]`: Σ_rows |f_i|."""

    @torch.no_grad()
    def update(self, f: Tensor) -> None:
        """Add a batch: `f [batch, n_features]`."""
        if f.shape[-1] != self.active_counts.numel():
            raise ValueError(f"FeatureStats: f has {f.shape[-1]} features, expected {self.active_counts.numel()}")
        self.n_rows += f.shape[0]
        self.active_counts += (f > 0).sum(dim=0).to(self.active_counts.device)
        self.abs_sums += f.abs().sum(dim=0).double().to(self.abs_sums.device)

    @property
    def density(self) -> Tensor:
        """`[n_features]` float64: fraction of rows on which each feature fired."""
        return self.active_counts.double() / max(self.n_rows, 1)

    @property
    def l0(self) -> float:
        return float(self.active_counts.sum()) / max(self.n_rows, 1)

    @property
    def l1(self) -> float:
        return float(self.abs_sums.sum()) / max(self.n_rows, 1)

    def summary(self, **thresholds: float) -> dict[str, int | float]:
        """`density_summary(self.density, **thresholds)` plus `l0`, `l1` and the row count."""
        return {"l0": self.l0, "l1": self.l1, **density_summary(self.density, **thresholds), "n_rows": self.n_rows}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


# -- plot (§7.2) -------------------------------------------------------------------------------


def require_matplotlib() -> tuple[Any, Any]:
    """`(FigureCanvasAgg, Figure)`, or a UserError saying matplotlib is missing. Cheap to call early."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plotting the density histogram needs matplotlib: pip install matplotlib") from None
    return FigureCanvasAgg, Figure


def plot_density_histogram(hist: DensityHistogram, path: str | os.PathLike[str], title: str = "") -> Path:
    """Write the log10(density) histogram as a PNG at `path` (like TM's appendix figures); returns it.

    Uses matplotlib's Agg canvas directly (no pyplot, so no global backend state), imported here so
    the rest of the package works without matplotlib. The file appears atomically.
    """
    FigureCanvasAgg, Figure = require_matplotlib()
    edges = hist.log10_edges
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], hist.counts, width=widths, align="edge", color="tab:blue", edgecolor="white", linewidth=0.3)
    for threshold, label in ((ULTRALOW_THRESHOLD, "ultralow"), (DENSE_THRESHOLD, "dense")):
        x = math.log10(threshold)
        ax.axvline(x, color="gray", linestyle="--", linewidth=0.8)
        ax.text(x, 0.98, label, transform=ax.get_xaxis_transform(), rotation=90, ha="right", va="top", fontsize=7)
    ax.set_xlabel("log10(feature density)")
    ax.set_ylabel("features")
    info = f"alive {sum(hist.counts):,}, dead {hist.n_dead:,} (not shown)"
    ax.set_title(f"{title}\n{info}" if title else info, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
