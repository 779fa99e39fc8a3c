"""Universality (paper.md §8.12): how well each feature of model A is matched in model B.

    summary = run_universality(conn, RunLayout(run), UniversalityConfig())
    print(format_universality(summary))

Models A and B differ in their seeds (`monosemantic lm train --model B --seed 1` seeds both the
initialisation and the data order; the demo's B is `pipeline.model_b_config`); B's SAEs are trained
with the same configuration on B's own activations of other tokens (`harvest --model B --seed 1`,
`sae train --model B`). Both models read the same held-out tokens (`stream.held_out_contexts`, at
most the build's `--n-tokens`); for each pair of same-named dictionaries (e.g. tm2023-4096 of A and
of B) every A feature is correlated with every B feature,

    r_ij = Pearson(f^A_i, f^B_j) over the same tokens,      match(i) = argmax_j r_ij,

and the headline is the median of max_j r_ij over all of A's live features (those that fire at least
once on these tokens; no sample): the paper reports **0.72** for A/1 vs B/1 and **0.46** for the same
analysis on the neurons (A's neurons vs B's neurons). The median is also given per band of A's
feature density, and on each half of the tokens (alternate batches): the gap between the two halves
says whether the token budget is enough for a stable median. Only sums are kept
(`correlate.PearsonAccumulator`): a dense [n_A, n_B] float64 matrix per half (128 MiB each for
4096 × 4096), with A's sparse features multiplied through a sparse copy.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from monosemantic import paths
from monosemantic.analyses.bands import PAPER, density_bands, distribution
from monosemantic.analyses.correlate import PearsonAccumulator
from monosemantic.analyses.loader import dictionaries, ensure_dictionaries, load_saes
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.transformer.model import load_transformer


@dataclass(frozen=True)
class UniversalityConfig:
    """Which two models, over how many tokens."""

    model: str = "A"
    """The model whose features are matched."""
    other: str = "B"
    """The model searched for matches (same architecture, another seed)."""
    n_tokens: int = 1_000_000
    """Held-out tokens both models read (the paper: 40.96M)."""
    batch_size: int = 16
    """Contexts per forward pass."""
    top_k: int = 3
    """Matches stored per feature in the `matches` table (rank 0 is the best)."""
    n_bins: int = 20
    """Bins of the histogram of best-match correlations over [0, 1]."""
    density_edges: tuple[float, ...] = (1e-4, 1e-3)
    """The medians are also given per band of A's feature density (on the same
    tokens) split here: in the demo most rare features have no counterpart in B while the frequent ones match as well as
    the paper's (docs/decisions.md 2026-12-06), so one median over all features hides both."""

    def __post_init__(self) -> None:
        if self.model == self.other:
            raise ValueError("model and other must differ")
        edges = list(self.density_edges)
        if edges != sorted(set(edges)) or not all(isinstance(e, int | float) and 0 < e < 1 for e in edges):
            raise ValueError(f"density_edges must be increasing and in (0, 1), got {self.density_edges!r}")
        for f in ("n_tokens", "batch_size", "top_k", "n_bins"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")


def best_matches(corr: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `corr` [n_A, n_B]: the `k` most correlated columns and their r, best first.

    NaN (a dead feature on either side) never wins; a row with no finite r gets index -1, r NaN.
    Returns (idx int64 [n_A, k], r float64 [n_A, k]).
    """
    filled = np.where(np.isnan(corr), -np.inf, corr)
    k = min(k, corr.shape[1])
    idx = np.argsort(-filled, axis=1, kind="stable")[:, :k]
    r = np.take_along_axis(corr, idx, 1)
    idx = np.where(np.isnan(r), -1, idx)
    return idx, r


def live_best(best: np.ndarray, n_active: np.ndarray) -> np.ndarray:
    """Best-match r [n] of the live features (`n_active` [n] > 0), NaN for the others.

    A live feature with no finite correlation (every feature of the other model constant on these
    tokens) has no match: r 0, so that the median runs over every live feature.
    """
    live = n_active > 0
    return np.where(live, np.nan_to_num(best, nan=0.0), np.nan)


def merged(a: PearsonAccumulator, b: PearsonAccumulator) -> PearsonAccumulator:
    """One accumulator holding the sums of `a` and `b` (two disjoint sets of tokens)."""
    out = PearsonAccumulator(len(a.sx), len(a.sy), a.sparse_below)
    out.n = a.n + b.n
    for name in ("sx", "sxx", "sy", "syy", "sxy"):
        setattr(out, name, getattr(a, name) + getattr(b, name))
    return out


def run_universality(
    conn: sqlite3.Connection, layout: paths.RunLayout, cfg: UniversalityConfig, progress: bool = True
) -> dict:
    """Match `cfg.model`'s dictionaries to `cfg.other`'s; write `matches` and `summary['universality']`."""
    rows_a = dictionaries(conn, cfg.model)
    if not rows_a:
        raise UserError(f"feature database: no dictionary of model {cfg.model}; run `monosemantic features build`")
    hook_name = rows_a[0].hook
    if not (layout.transformer(cfg.other) / paths.CONFIG).is_file():
        raise UserError(
            f"{layout.transformer(cfg.other)}: no model {cfg.other}; train it with another seed: "
            f"`monosemantic lm train --run {layout.root} --model {cfg.other} --seed 1`, then `harvest --model "
            f"{cfg.other} --seed 1` (other tokens than {cfg.model}'s) and `sae train --model {cfg.other}`"
        )
    rows_b = {r.name: r for r in ensure_dictionaries(conn, layout, cfg.other, hook_name)}
    pairs = [(a, rows_b[a.name]) for a in rows_a if a.name in rows_b]
    if not any(a.kind == "sae" for a, _ in pairs):
        raise UserError(
            f"{layout.saes(cfg.other, hook_name)}: no SAE of model {cfg.other} with the name of one of "
            f"{cfg.model}'s ({', '.join(r.name for r in rows_a if r.kind == 'sae')}); run `monosemantic sae train "
            f"--run {layout.root} --model {cfg.other}` with the same settings"
        )
    models = {m: load_transformer(layout.transformer(m)).eval() for m in (cfg.model, cfg.other)}
    saes = {
        cfg.model: load_saes(layout, [a for a, _ in pairs]),
        cfg.other: load_saes(layout, [b for _, b in pairs]),
    }
    ctx = held_out_contexts(TokenStore(layout.tokens), models[cfg.model].cfg.ctx_len, cfg.n_tokens)
    # one accumulator per half of the tokens (alternate batches); their sums together give the whole
    halves = {a.name: [PearsonAccumulator(a.n_features, b.n_features) for _ in range(2)] for a, b in pairs}
    n_active = {a.name: np.zeros((2, a.n_features), dtype=np.int64) for a, _ in pairs}  # per half
    for k, (lo, hi) in enumerate(tqdm(list(ctx.batches(cfg.batch_size)), desc="universality", disable=not progress)):
        tokens = torch.from_numpy(ctx.tokens[lo:hi])
        out = {}
        for m, model in models.items():
            acts, feats = dictionary_activations(model, model.hook_point(hook_name), saes[m], tokens)
            out[m] = {n: f.reshape(-1, f.shape[-1]) for n, f in feats.items()}
            out[m]["neurons"] = acts.reshape(-1, acts.shape[-1])
        for name, acc in halves.items():
            acc[k % 2].update(out[cfg.model][name], out[cfg.other][name])
            n_active[name][k % 2] += (out[cfg.model][name] > 0).sum(0).numpy()

    match_rows, summary_pairs = [], []
    for a, b in pairs:
        idx, r = best_matches(merged(*halves[a.name]).corr(), cfg.top_k)
        for i in range(len(idx)):
            for rank in range(idx.shape[1]):
                if idx[i, rank] >= 0:
                    match_rows.append({"dictionary_id": a.id, "feature": i, "other_dictionary_id": b.id, "rank": rank,
                                       "other_feature": int(idx[i, rank]), "corr": float(r[i, rank])})  # fmt: skip
        active = n_active[a.name].sum(0)
        best = live_best(r[:, 0], active)
        bands = density_bands(best, active / max(ctx.n_tokens, 1), list(cfg.density_edges), cfg.n_bins)
        # each half on its own tokens: its own live features and best matches
        by_half = [_half_median(h, n) for h, n in zip(halves[a.name], n_active[a.name], strict=True)]
        summary_pairs.append({"dictionary": a.name, "kind": a.kind, "n_features": a.n_features,
                              "n_live": int((active > 0).sum()), **distribution(best, cfg.n_bins),
                              "halves": by_half, "by_density": bands})  # fmt: skip
        conn.execute("DELETE FROM matches WHERE dictionary_id = ? AND other_dictionary_id = ?", (a.id, b.id))
    db.insert_rows(conn, "matches", match_rows)
    saes_a = [p for p in summary_pairs if p["kind"] == "sae"]
    summary = {
        "model": cfg.model,
        "other": cfg.other,
        "n_tokens": ctx.n_tokens,
        "largest": max(saes_a, key=lambda p: p["n_features"])["dictionary"],
        "pairs": summary_pairs,
        "paper": PAPER,
    }
    db.set_summary(conn, "universality", summary)
    conn.commit()
    return json.loads(db.dumps(summary))


def _half_median(acc: PearsonAccumulator, n_active: np.ndarray) -> float | None:
    """Median best-match r over the features live in one half's tokens (None when it has none)."""
    if acc.n == 0:
        return None
    corr = acc.corr()
    best = np.where(np.isnan(corr), -np.inf, corr).max(1, initial=-np.inf)
    return distribution(live_best(np.where(np.isinf(best), np.nan, best), n_active), 1)["median"]


def format_universality(summary: dict) -> str:
    """The headline (the largest dictionary's median best-match r over its live features, the neurons'
    median, the paper's 0.72 / 0.46), then one line per dictionary with the median per density band."""
    pairs = summary["pairs"]
    paper = summary["paper"]
    bands: list[dict] = next((p["by_density"] for p in pairs if "by_density" in p), [])  # absent before 2026-12-06
    by_name = {p["dictionary"]: p for p in pairs}
    lines = [
        f"universality (paper §8.12): each {summary['model']} feature's best match in {summary['other']} by "
        f"activation correlation, over {summary['n_tokens']:,} held-out tokens"
    ]
    largest, neurons = by_name.get(summary.get("largest", "")), by_name.get("neurons")
    for p, unit, ref in ((largest, "features", paper["features"]), (neurons, "neurons", paper["neurons"])):
        if p is None:
            continue
        halves = p.get("halves")
        half = f"; on each half of the tokens {_med(halves[0])} / {_med(halves[1])}" if halves else ""
        lines.append(
            f"  {p['dictionary']}: median {_med(p['median'])} over all {p.get('n_live', p['n_alive']):,} live "
            f"{unit} (paper {ref:.2f}){half}"
        )
    heads = "".join(f" {b['label']:>20}" for b in bands)
    lines.append(f"{'dictionary':<16} {'live':>6} {'median r':>9} {'mean r':>7} {'paper':>6}{heads}")
    for p in pairs:
        ref = paper["neurons" if p["kind"] == "neurons" else "features"]
        by = "".join(f" {_med(b['median']):>12} ({b['n_alive']:>5})" for b in p.get("by_density", []))
        live = p.get("n_live", p["n_alive"])
        lines.append(f"{p['dictionary']:<16} {live:>6} {_med(p['median']):>9} {_med(p['mean']):>7} {ref:>6.2f}{by}")
    return "\n".join(lines)


def _med(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
