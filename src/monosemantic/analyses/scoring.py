"""The simulation score of automated interpretability (paper §8.8): correlations and importance weights.

    w = importance_weights(strata, population)            # one weight per test window
    rho = spearman(predicted, true)                       # the headline, as the paper
    rho_w = spearman(predicted, true, np.repeat(w, lengths))

The simulator predicts an activation for every token of every test window; the score correlates the
predictions with the true activations over all those tokens. The paper scores with the Spearman
rank correlation ("Pearson is nearly the same"); both are here, each optionally weighted.

Importance weighting. The test windows are not a uniform sample of the feature's tokens: the top
examples and the per-interval samples over-represent high activations, and a feature that fires on
one token in 10,000 is mostly zero in the data but mostly non-zero among its test windows. The
paper notes that weighting the examples by their share of the real distribution pulls feature
scores towards 0. We implement it as post-stratification (a Horvitz–Thompson estimate of the
correlation over *all* windows of the held-out tokens):

- the population is every held-out token of the build (N of them), each the centre of a window;
- its strata are set by the activation of the window's centre token: stratum 0 = zero activation
  (N − n_active tokens), stratum i + 1 = activation interval i of the build's equal split of
  (0, max] (the `intervals` table's `count`; one non-zero stratum of n_active tokens when there is
  no such table);
- every probability-sampled test window (top, interval, random non-zero, random held-out) is put
  in the stratum of its centre activation, and gets the weight N_s / n_s (stratum size over test
  windows in it); every token of a window carries its window's weight;
- a stratum with test windows but no population (float rounding) weighs 0, and a stratum with
  population but no test window is missing from the estimate.

The windows chosen by token ("top tokens out of context") have no inclusion probability, so they
count in the unweighted score only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted Pearson correlation of `x [n]` and `y [n]` under weights `w [n]` (default: equal).

    0.0 when either side is constant (no correlation to measure; the paper scores it 0) or n < 2.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} predictions for {len(y)} tokens")
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
    if len(x) < 2 or w.sum() <= 0:
        return 0.0
    w = w / w.sum()
    dx, dy = x - w @ x, y - w @ y
    vx, vy = w @ (dx * dx), w @ (dy * dy)
    if vx <= 1e-12 * max(1.0, float(w @ (x * x))) or vy <= 1e-12 * max(1.0, float(w @ (y * y))):
        return 0.0
    return float(np.clip((w @ (dx * dy)) / np.sqrt(vx * vy), -1.0, 1.0))


def midranks(x: Sequence[float] | np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted mid-ranks `[n]`: the weight of all smaller values plus half the weight of the equal ones.

    Ties share one rank. With equal weights this is the usual average rank minus 1/2, so the
    Pearson correlation of mid-ranks is the usual Spearman correlation with ties.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
    values, inverse = np.unique(x, return_inverse=True)
    per_value = np.bincount(inverse, weights=w, minlength=len(values))
    below = np.concatenate([[0.0], np.cumsum(per_value)[:-1]])
    return (below + per_value / 2)[inverse]


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, w: np.ndarray | None = None) -> float:
    """Spearman rank correlation (ties at mid-ranks), optionally weighted: Pearson of the weighted mid-ranks."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} predictions for {len(y)} tokens")
    return pearson(midranks(x, w), midranks(y, w), w)


def importance_weights(strata: Sequence[int], population: Mapping[int, int]) -> np.ndarray:
    """Per test window, N_s / n_s: the size of its stratum over the number of test windows in it.

    `strata [n]` are the windows' stratum ids, `population` the number of held-out tokens per stratum
    (module docstring). A stratum missing from `population` weighs 0.
    """
    seen = Counter(strata)
    return np.array([population.get(s, 0) / seen[s] for s in strata], dtype=np.float64)


def stratum(act: float, max_act: float, n_intervals: int) -> int:
    """0 for a zero activation, else 1 + its interval of (0, max] split into `n_intervals` equal parts
    (the build's `interval_index`; an activation above the max, from another dtype, is in the top one)."""
    if act <= 0:
        return 0
    if n_intervals <= 1 or max_act <= 0:
        return 1
    return 1 + int(min(max(np.ceil(act / max_act * n_intervals) - 1, 0), n_intervals - 1))


def window_scores(
    predicted: Sequence[Sequence[float]], true: Sequence[Sequence[float]], weights: Sequence[float | None]
) -> dict[str, float | None]:
    """The scores of one feature over its test windows: `spearman` (the headline), `pearson`, and
    `spearman_weighted` over the windows that have a weight (None: not probability-sampled).

    `predicted` and `true` are per window, one value per token; `weights` one per window.
    """
    if len(predicted) != len(true) or len(true) != len(weights):
        raise ValueError(f"{len(predicted)} predicted windows, {len(true)} true, {len(weights)} weights")
    p = np.concatenate([np.asarray(x, dtype=np.float64) for x in predicted]) if predicted else np.zeros(0)
    t = np.concatenate([np.asarray(x, dtype=np.float64) for x in true]) if true else np.zeros(0)
    lengths = np.array([len(x) for x in true], dtype=np.int64)
    out: dict[str, float | None] = {"spearman": spearman(p, t), "pearson": pearson(p, t), "spearman_weighted": None}
    has = np.array([w is not None for w in weights], dtype=bool)
    if has.any():
        tok_has = np.repeat(has, lengths)
        w_tok = np.repeat(np.array([w or 0.0 for w in weights], dtype=np.float64), lengths)[tok_has]
        out["spearman_weighted"] = spearman(p[tok_has], t[tok_has], w_tok)
    return out
