"""Distributions of best-match correlations, overall and by density band (numpy only).

The universality summary's shape (universality.py); torch-free, so the browser's synthetic
database (browser/synthetic.py) builds the same shape without a model.
"""

from __future__ import annotations

import numpy as np

PAPER = {"features": 0.72, "neurons": 0.46}
"""Median max activation correlation, A/1 → B/1 and A's neurons → B's neurons ([TM], paper.md §12 #16)."""


def distribution(best: np.ndarray, n_bins: int) -> dict:
    """Median, mean and histogram over [0, 1] of the finite best-match correlations `best` [n]."""
    alive = best[np.isfinite(best)]
    counts, edges = np.histogram(np.clip(alive, 0, 1), bins=n_bins, range=(0.0, 1.0))
    return {
        "n": int(len(best)),
        "n_alive": int(len(alive)),
        "median": float(np.median(alive)) if len(alive) else None,
        "mean": float(alive.mean()) if len(alive) else None,
        "hist": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def density_bands(best: np.ndarray, density: np.ndarray, edges: list[float], n_bins: int) -> list[dict]:
    """`distribution` of the best-match r [n] per band of the features' `density` [n], cut at `edges`.

    Each band carries its `label`, which the text table and the browser show as the column head.
    """
    cuts = [0.0, *edges, 1.0]
    return [
        {
            "lo": lo,
            "hi": hi,
            "label": _band_label(lo, hi),
            **distribution(best[(density > lo) & (density <= hi)], n_bins),
        }
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
    ]


def _band_label(lo: float, hi: float) -> str:
    if lo == 0:
        return f"density ≤ {hi:g}"
    return f"density > {lo:g}" if hi >= 1 else f"density {lo:g}–{hi:g}"
