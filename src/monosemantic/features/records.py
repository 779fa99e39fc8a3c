"""Streaming per-feature records: what the feature database stores, accumulated batch by batch.

Memory is bounded by the dictionary size, never by the token count: a batch's feature activations
`[tokens, features]` are read once as a sparse list of `(token, feature, value)` non-zeros and
folded into fixed-size state (counts, sums, extremes, histograms, and the kept examples).

    keep = BottomK(n_groups=n_features, k=20, width=15)
    keep.offer(group=feat, key=-value, token=tok, value=value, window=lambda sel: ...)

Every "keep some examples" rule is one `BottomK` with a different key (paper.md §9 / paper.md §9):
- the top activations: key = −activation, group = feature;
- uniform samples per activation interval: key = a uniform random number, group = (feature,
  interval) — the k smallest of i.i.d. uniform keys are a uniform sample without replacement
  (a bottom-k sketch), so this is reservoir sampling without a Python loop;
- random non-zero samples: the same with group = feature.

The random keys are a hash of (seed, token, feature) (`uniform_keys`), not draws from a generator
in stream order: a token's key is then the same whichever process sees it, so bottom-k states of
disjoint shards of the tokens merge (`BottomK.merge`) into exactly the one-process state. That is
how `features build` shards across torchrun ranks (build.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def sparse_entries(f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Non-zeros of `f [n_tokens, n_features]` as `(token int64 [nnz], feature int64 [nnz], value [nnz])`."""
    tok, feat = (f > 0).nonzero(as_tuple=True)
    return tok, feat, f[tok, feat]


class BottomK:
    """Per group, the `k` entries with the smallest keys seen so far, with a payload window each.

    State (each row sorted by key, empty slots have key +inf and token −1):
        key [G, k] float64, token [G, k] int64, value [G, k] float32, window [G, k, width] float32.
    Ties keep the entry offered first (the merge sort is stable, state before newcomers).
    """

    def __init__(self, n_groups: int, k: int, width: int) -> None:
        self.k = k
        self.key = torch.full((n_groups, k), math.inf, dtype=torch.float64)
        self.token = torch.full((n_groups, k), -1, dtype=torch.int64)
        self.value = torch.zeros(n_groups, k)
        self.window = torch.zeros(n_groups, k, width)

    def offer(
        self,
        group: Tensor,
        key: Tensor,
        token: Tensor,
        value: Tensor,
        window: Callable[[Tensor], Tensor],
    ) -> None:
        """Merge candidates `[n]` into the state. `window(sel)` returns `[len(sel), width]` payloads
        for the candidates at positions `sel` (called only for those that can enter)."""
        if self.k == 0 or len(group) == 0:
            return
        key = key.double()
        sel = (key < self.key[group, -1]).nonzero(as_tuple=True)[0]  # cheap filter: most fail
        if len(sel) == 0:
            return
        group, key, token, value = group[sel], key[sel], token[sel], value[sel].float()
        win = window(sel)
        touched = torch.unique(group)  # sorted
        k = self.k
        all_g = torch.cat([touched.repeat_interleave(k), group])
        all_key = torch.cat([self.key[touched].reshape(-1), key])
        all_tok = torch.cat([self.token[touched].reshape(-1), token])
        all_val = torch.cat([self.value[touched].reshape(-1), value])
        all_win = torch.cat([self.window[touched].reshape(-1, win.shape[1]), win])
        # lexicographic (group, key) order with two stable sorts
        order = torch.sort(all_key, stable=True).indices
        order = order[torch.sort(all_g[order], stable=True).indices]
        g_sorted = all_g[order]
        counts = torch.bincount(g_sorted - touched[0])[touched - touched[0]]
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.arange(len(order)) - starts
        kept = rank < k  # every touched group has >= k entries (its state row), so all slots refill
        order, rank, g = order[kept], rank[kept], g_sorted[kept]
        self.key[g, rank] = all_key[order]
        self.token[g, rank] = all_tok[order]
        self.value[g, rank] = all_val[order]
        self.window[g, rank] = all_win[order]

    def merge(self, other: BottomK) -> None:
        """Fold in another keeper's entries (same groups, k and width), as if they had been offered after
        this one's: merging the keepers of consecutive shards of a stream, in order, gives the keeper of
        the whole stream (ties included: earlier entries win, as in `offer`)."""
        g, slot = (other.token >= 0).nonzero(as_tuple=True)  # row-major: each group's slots in key order
        key, token, value = other.key[g, slot], other.token[g, slot], other.value[g, slot]
        self.offer(g, key, token, value, lambda sel: other.window[g[sel], slot[sel]])

    def state(self) -> list[Tensor]:
        """The state tensors (key, token, value, window), e.g. to send to another process."""
        return [self.key, self.token, self.value, self.window]

    @classmethod
    def from_state(cls, state: list[Tensor]) -> BottomK:
        keep = cls.__new__(cls)
        keep.key, keep.token, keep.value, keep.window = state
        keep.k = keep.key.shape[1]
        return keep


_M64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic): a bijection that scrambles every bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_keys(seed: int, salt: int, token: Tensor, feat: Tensor) -> Tensor:
    """A uniform [0, 1) float64 per entry, a pure function of (seed, salt, token, feature).

    Hash-based bottom-k sampling: distinct entries get independent-looking uniform keys, and the
    same entry gets the same key in any process and batch order (see the module docstring)."""
    base = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _M64)
    t = token.numpy().astype(np.uint64)
    f = feat.numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        z = _mix64(_mix64(t + base) ^ (f * np.uint64(0x9E3779B97F4A7C15)))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def windows_of(f3: Tensor, rows: Tensor, pos: Tensor, feat: Tensor, before: int, after: int) -> Tensor:
    """Activations of feature `feat[i]` at positions `pos[i] - before ... pos[i] + after` of context
    `rows[i]` of `f3 [n_ctx, ctx_len, n_features]`: `[n, before + 1 + after]`, zero outside the context."""
    offs = torch.arange(-before, after + 1)
    p = pos[:, None] + offs[None, :]
    inside = (p >= 0) & (p < f3.shape[1])
    vals = f3[rows[:, None], p.clamp(0, f3.shape[1] - 1), feat[:, None]]
    return torch.where(inside, vals, torch.zeros((), dtype=vals.dtype)).float()


@dataclass
class Stats:
    """Pass 1 of one dictionary: counts, sums, extremes and activation mass per corpus source."""

    n_active: Tensor  # int64 [F]
    total: Tensor  # float64 [F] sum of activations
    max: Tensor  # float32 [F]
    min_nonzero: Tensor  # float32 [F], +inf if never active
    by_source: Tensor  # float64 [F, n_sources] sum of activations per source

    @classmethod
    def zeros(cls, n_features: int, n_sources: int) -> Stats:
        return cls(
            torch.zeros(n_features, dtype=torch.int64),
            torch.zeros(n_features, dtype=torch.float64),
            torch.zeros(n_features),
            torch.full((n_features,), math.inf),
            torch.zeros(n_features, n_sources, dtype=torch.float64),
        )

    def add(self, feat: Tensor, value: Tensor, src: Tensor) -> None:
        """Fold in non-zeros `feat [nnz]`, `value [nnz]` with each token's source index `src [nnz]`."""
        F, S = self.by_source.shape
        self.n_active += torch.bincount(feat, minlength=F)
        v = value.double()
        self.total += torch.bincount(feat, weights=v, minlength=F)
        self.max.scatter_reduce_(0, feat, value.float(), "amax")
        self.min_nonzero.scatter_reduce_(0, feat, value.float(), "amin")
        self.by_source += torch.bincount(feat * S + src, weights=v, minlength=F * S).view(F, S)


def hist_edges(min_nonzero: Tensor, max_act: Tensor, n_bins: int, decades: float) -> Tensor:
    """Log-spaced bin edges per feature, `[F, n_bins + 1]`, from max(min non-zero, max·10^−decades)
    to the max. Activations below the first edge are counted in bin 0 (the low tail is lumped, so
    a feature with one tiny activation does not stretch its histogram). Never-active features get
    edges [0, ..., 0]."""
    hi = max_act.double().clamp_min(1e-30)
    lo = torch.maximum(min_nonzero.double().nan_to_num(posinf=0.0), hi * 10.0**-decades).clamp_max(hi)
    t = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    edges = torch.exp(lo.log()[:, None] + (hi.log() - lo.log())[:, None] * t[None, :])
    return torch.where((max_act > 0)[:, None], edges, torch.zeros(()).double())


def hist_bin(value: Tensor, feat: Tensor, edges: Tensor) -> Tensor:
    """Bin index of each non-zero `value [nnz]` of feature `feat [nnz]` under `edges [F, n_bins+1]`;
    log-spaced bins, so the index is a linear function of log(value) (no per-feature search)."""
    n_bins = edges.shape[1] - 1
    lo, hi = edges[feat, 0].log(), edges[feat, -1].log()
    width = ((hi - lo) / n_bins).clamp_min(1e-300)
    b = torch.floor((value.double().log() - lo) / width)
    return b.clamp(0, n_bins - 1).long()


def interval_index(value: Tensor, feat: Tensor, max_act: Tensor, n_intervals: int) -> Tensor:
    """Interval of each non-zero activation: the range (0, max] split into `n_intervals` equal parts,
    interval i = (i·max/n, (i+1)·max/n] ([TM] browser: "evenly-spaced fraction of the max")."""
    v, m = value.double(), max_act[feat].double()
    i = (torch.ceil(v / m * n_intervals) - 1).clamp(0, n_intervals - 1)
    # Rounding can put a value that sits on an edge one interval off; settle it against the edges
    # exactly as the `intervals` table writes them (m * i / n in float64), so the two always agree.
    i = torch.where(v <= m * i / n_intervals, i - 1, i)
    i = torch.where(v > m * (i + 1) / n_intervals, i + 1, i)
    return i.clamp(0, n_intervals - 1).long()


@dataclass
class Samples:
    """Pass 2 of one dictionary (the max is known): histogram, intervals, random samples."""

    edges: Tensor  # float64 [F, bins + 1]
    hist: Tensor  # int64 [F, bins]
    interval_count: Tensor  # int64 [F, n_intervals]
    intervals: BottomK  # groups feature * n_intervals + interval
    random: BottomK  # groups feature
    seed: int = 0  # of the sample keys (`uniform_keys`)

    @property
    def n_intervals(self) -> int:
        return self.interval_count.shape[1]

    def add(self, tok: Tensor, feat: Tensor, value: Tensor, max_act: Tensor, window: Callable) -> None:
        """Fold in one batch's non-zeros; `tok` is the global token index, `window(sel)` as in BottomK."""
        F, B = self.hist.shape
        n = self.n_intervals
        self.hist += torch.bincount(feat * B + hist_bin(value, feat, self.edges), minlength=F * B).view(F, B)
        iv = interval_index(value, feat, max_act, n)
        self.interval_count += torch.bincount(feat * n + iv, minlength=F * n).view(F, n)
        self.intervals.offer(feat * n + iv, uniform_keys(self.seed, 1, tok, feat), tok, value, window)
        self.random.offer(feat, uniform_keys(self.seed, 2, tok, feat), tok, value, window)


def sparse_windows(
    tok: Tensor, feat: Tensor, value: Tensor, sel: Tensor, ctx_len: int, n_features: int, before: int, after: int
) -> Tensor:
    """`windows_of` for the entries `sel` of a batch held as sorted non-zeros `(tok, feat, value)`
    (row-major order, as `sparse_entries` returns them; `tok` counts tokens of whole contexts of
    `ctx_len`): `[len(sel), before + 1 + after]`, zero where the feature is not active."""
    key = tok * n_features + feat  # ascending: nonzero() walks [tokens, features] row by row
    t = tok[sel]
    pos = t % ctx_len
    p = pos[:, None] + torch.arange(-before, after + 1)[None, :]
    inside = (p >= 0) & (p < ctx_len)
    q = (t[:, None] - pos[:, None] + p.clamp(0, ctx_len - 1)) * n_features + feat[sel][:, None]
    i = torch.searchsorted(key, q).clamp_max(len(key) - 1)
    hit = inside & (key[i] == q)
    return torch.where(hit, value[i].float(), torch.zeros(()))
