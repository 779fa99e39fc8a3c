"""The case studies' statistics (paper §8.1, §8.2, §8.6), streamed over tokens; `proxies.py` runs them.

    m = Moments(n_cols=F, n_proxies=P, n_slices=S)
    for f, y, member in batches:            # f [N, F] activations, y [N, P] proxy values, member [S, N]
        m.update(f, y, member)
    r = m.corr()                            # [S, F, P] Pearson r of each column with each proxy

- `Moments`: the sums Pearson's r needs (correlate.py), for every column of a dictionary against
  every proxy, per slice of the tokens (all tokens; without the synthetic/ sources), and each
  column's maximum: two skinny matmuls per batch, never a loop over features.
- `Levels`: specificity by activation level, the paper's histogram coloured by the proxy
  ("Arabic ... 81 % of tokens where the feature is active: 25 % when barely active, 98 % above
  activation 5"): the activation range (0, max] in equal intervals, per interval the tokens and
  those where the proxy holds (LLR > 0); the scalar is the share above half the maximum. The
  sensitivity plot (per proxy LLR bin, the share of proxy tokens where the feature fires) rides along.
- `decoder_in_neurons`: a feature's decoder direction in the neuron basis (§8.6: the paper's Arabic
  feature has 27 neurons with |coefficient| >= 0.1).
- `families`: the features of one dictionary whose activation correlates with the proxy above a
  threshold (the paper's Arabic family in A/1); their summed activation is correlated in a second pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from monosemantic.analyses.correlate import pearson_from_sums


class Moments:
    """n, Σf, Σf², Σf·y per slice, and max f over all tokens, for several dictionaries' columns against
    P proxies over the same tokens.

        m = Moments({"neurons": 512, "tm2023-4096": 4096}, n_proxies=P, n_slices=S)
        for f_by_dictionary, y, member in batches:   # f [N, F], y [N, P], member [S, N] bool
            m.batch(y, member)                       # the proxies' side, once per batch
            for name, f in f_by_dictionary.items():
                m.add(name, f)                       # each dictionary's side
        r = m.corr("tm2023-4096")                    # [S, F, P] Pearson r

    Slice s counts the tokens where `member[s]`. Per batch a dictionary's sums are two skinny float32
    matmuls over the tokens, [member; y·member] @ f and member @ f², so a slice costs no copy of f
    and there is no loop over features; across batches they add up in float64
    (tests/analyses/test_casestudy.py checks them against numpy).
    """

    def __init__(self, widths: dict[str, int], n_proxies: int, n_slices: int):
        P, S = n_proxies, n_slices
        self.n = np.zeros(S)
        self.sy, self.syy = np.zeros((S, P)), np.zeros((S, P))
        self.sx = {d: np.zeros((S, F)) for d, F in widths.items()}
        self.sxx = {d: np.zeros((S, F)) for d, F in widths.items()}
        self.sxy = {d: np.zeros((F, S, P)) for d, F in widths.items()}
        self.max = {d: torch.zeros(F) for d, F in widths.items()}
        self._m: Tensor | None = None
        self._w: Tensor | None = None

    @torch.inference_mode()
    def batch(self, y: Tensor, member: Tensor) -> None:
        """Start a batch: `y [N, P]` the proxies' values, `member [S, N]` bool the slices."""
        (N, P), S = y.shape, member.shape[0]
        md, yd = member.double(), y.double()
        self.n += md.sum(1).numpy()
        self.sy += (md @ yd).numpy()
        self.syy += (md @ (yd * yd)).numpy()
        # Weights as rows, [k, N] @ f: MKL's skinny f.T @ [N, k] is ten times slower on this machine.
        self._m = member.float()  # [S, N]
        self._w = torch.cat([self._m, (y.T.float()[None] * self._m[:, None, :]).reshape(S * P, N)])  # [S + S·P, N]

    @torch.inference_mode()
    def add(self, name: str, f: Tensor, scratch: Tensor | None = None) -> None:
        """Dictionary `name`'s activations `f [N, F]` (float32) on the batch's tokens; `scratch`: a
        float32 buffer of at least N·F elements for f² (a fresh one per batch costs page faults on
        this scale: 128 MB for 4,096 features × 8,192 tokens)."""
        assert self._m is not None and self._w is not None, "Moments.batch first"
        (N, F), S = f.shape, self._m.shape[0]
        wf = (self._w @ f).double().numpy()  # [S + S·P, F]
        sq = f * f if scratch is None else torch.mul(f, f, out=scratch[: f.numel()].view(N, F))
        self.sx[name] += wf[:S]
        self.sxy[name] += wf[S:].reshape(S, -1, F).transpose(2, 0, 1)
        self.sxx[name] += (self._m @ sq).double().numpy()
        if N:
            torch.maximum(self.max[name], f.amax(0), out=self.max[name])

    def corr(self, name: str) -> np.ndarray:
        """[S, F, P] Pearson r of dictionary `name`; NaN where a column or a proxy never varies in the slice."""
        sx, sxx, sxy = self.sx[name], self.sxx[name], self.sxy[name]
        return np.stack(
            [
                pearson_from_sums(self.n[s], sx[s], sxx[s], self.sy[s], self.syy[s], sxy[:, s, :])
                for s in range(len(self.n))
            ]
        )


def best_columns(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per proxy (last axis of `r [..., F, P]`): the column with the highest r and that r (-1, NaN if none)."""
    filled = np.where(np.isnan(r), -np.inf, r)
    idx = filled.argmax(-2)
    val = np.take_along_axis(r, idx[..., None, :], -2)[..., 0, :]
    return np.where(np.isnan(val), -1, idx), val


def families(r: np.ndarray, min_r: float) -> list[list[tuple[int, float]]]:
    """Per proxy (column of `r [F, P]`): the `(column, r)` with r >= `min_r`, by decreasing r."""
    out = []
    for k in range(r.shape[1]):
        col = np.nan_to_num(r[:, k], nan=-np.inf)
        members = np.flatnonzero(col >= min_r)
        out.append([(int(i), float(r[i, k])) for i in members[np.argsort(-col[members], kind="stable")]])
    return out


def decoder_in_neurons(w_dec: np.ndarray, min_abs: float, top: int = 3) -> dict[str, Any]:
    """A decoder row `w_dec [d_mlp]` as the unit vector d/‖d‖ over the neurons (§8.6).

    Returns `{"n_ge": neurons with |coefficient| >= min_abs, "top": [[neuron, coefficient]...] by
    |coefficient|, "norm": ‖d‖}`. The paper's decoder rows are unit norm (and a saved SAE's are,
    whatever its training normalisation: one input scale folds into the biases, sae/normalize.py),
    so dividing by the norm changes nothing there; it makes other SAEs' rows comparable.
    """
    w = np.asarray(w_dec, dtype=np.float64)
    norm = float(np.linalg.norm(w))
    unit = w / norm if norm > 0 else w
    order = np.argsort(-np.abs(unit), kind="stable")[:top]
    return {
        "n_ge": int((np.abs(unit) >= min_abs).sum()),
        "top": [[int(i), round(float(unit[i]), 4)] for i in order],
        "norm": norm,
    }


class Levels:
    """One column's activations against one proxy over one slice, in `n_levels` equal intervals of
    (0, `act_max`], and the sensitivity plot over `n_bins` bins of (0, `llr_max`].

    Interval k holds activations in (k·max/L, (k+1)·max/L]; a token counts for the proxy where its
    value is > 0 (LLR > 0: the proxy "thresholded at 0", §8.1).
    """

    def __init__(self, act_max: float, llr_max: float, n_levels: int, n_bins: int):
        self.act_max = float(act_max)
        self.edges = np.linspace(0.0, max(self.act_max, 1e-9), n_levels + 1)
        self.llr_edges = np.linspace(0.0, max(llr_max, 1e-9), n_bins + 1)
        self.levels = np.zeros((4, n_levels))  # tokens, tokens with proxy, activation, activation with proxy
        self.half = np.zeros(2)  # tokens above max/2, of which the proxy holds
        self.sens = np.zeros((3, n_bins))  # proxy tokens, of which the column fires, activation sum
        self.mass = np.zeros(2)  # Σ proxy value, Σ proxy value · 1[fires]

    def add(self, act: np.ndarray, value: np.ndarray, llr: np.ndarray | None = None) -> None:
        """`act`, `value` (and `llr`, for the sensitivity plot): [N] over the slice's tokens of a batch."""
        L = self.levels.shape[1]
        on, held = act > 0, value > 0
        i = np.clip(np.searchsorted(self.edges, act[on], side="left") - 1, 0, L - 1)
        for row, w in enumerate((None, held[on], act[on], act[on] * held[on])):
            self.levels[row] += np.bincount(i, weights=w, minlength=L)
        high = act > self.act_max / 2
        self.half += (high.sum(), (high & held).sum())
        if llr is not None:
            n = self.sens.shape[1]
            j = np.clip(np.searchsorted(self.llr_edges, llr[held], side="left") - 1, 0, n - 1)
            for row, w in enumerate((None, on[held], act[held])):
                self.sens[row] += np.bincount(j, weights=w, minlength=n)
            self.mass += (value.sum(), (value * on).sum())

    def specificity(self) -> float:
        """Share of tokens with activation above half the maximum where the proxy holds (NaN if none)."""
        return float(self.half[1] / self.half[0]) if self.half[0] else float("nan")

    def mass_specificity(self) -> float:
        """Share of the column's activation mass on tokens where the proxy holds."""
        total = self.levels[2].sum()
        return float(self.levels[3].sum() / total) if total else float("nan")

    def sensitivity(self) -> float:
        """Share of the proxy's mass Σ value · 1[fires] / Σ value."""
        return float(self.mass[1] / self.mass[0]) if self.mass[0] else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "max": self.act_max,
            "edges": self.edges.tolist(),
            "tokens": self.levels[0].astype(np.int64).tolist(),
            "proxy_tokens": self.levels[1].astype(np.int64).tolist(),
            "act": self.levels[2].tolist(),
            "proxy_act": self.levels[3].tolist(),
            "half_max": {"tokens": int(self.half[0]), "proxy_tokens": int(self.half[1])},
            "specificity": self.specificity(),
            "mass_specificity": self.mass_specificity(),
        }

    def sensitivity_json(self) -> dict[str, Any]:
        return {
            "edges": self.llr_edges.tolist(),
            "tokens": self.sens[0].tolist(),
            "fires": self.sens[1].tolist(),
            "act": self.sens[2].tolist(),
            "sensitivity": self.sensitivity(),
        }
