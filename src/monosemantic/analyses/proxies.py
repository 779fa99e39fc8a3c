"""Case studies (TM §5): for each proxy, the best-matching feature and neuron, specificity, sensitivity.

    summary = run_proxies(conn, RunLayout(run), ProxyConfig())
    print(format_case_study(summary))

Over held-out tokens (`stream.held_out_contexts`), every feature of every SAE of the model and
every neuron is correlated with every proxy (`proxy_defs`), keeping only sums (`correlate`), so
memory does not grow with the token count. The best feature per proxy is the most correlated one
(as the paper picks its neuron, footnote 18: "most activation-correlated"). A second pass bins
the best features' activations for the paper's two plots:
- specificity: the activation histogram coloured by the proxy, i.e. per activation bin the tokens
  and the activation mass where the proxy holds ("Arabic ... 81% of tokens where the feature is
  active: 25% when barely active, 98% above activation 5"); scalar: the share of the feature's
  activation mass on proxy tokens;
- sensitivity: per proxy (LLR) bin, the share of tokens where the feature fires; scalar: the share
  of the proxy's mass Σ proxy·1[feature fires] / Σ proxy.
Both are computed over all held-out tokens and again without the `synthetic/` sources, whose
generated DNA / base64 / hex strings make those proxies easy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from monosemantic import paths
from monosemantic.analyses.correlate import PearsonAccumulator
from monosemantic.analyses.loader import DictRow, dictionaries, load_saes
from monosemantic.analyses.proxy_defs import BUILTIN, ProxySet, select
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.features.tokentext import vocab_bytes
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.model import load_transformer

log = logging.getLogger(__name__)

SLICES = {1: "all tokens", 0: "without synthetic/"}


@dataclass(frozen=True)
class ProxyConfig:
    """Which proxies, over how many tokens."""

    proxies: str = ",".join(BUILTIN)
    """Comma-separated built-in proxies (arabic, hebrew, base64, dna, cyrillic, cjk, html, hex)."""
    custom: tuple[str, ...] = ()
    """Users' proxies: NAME=regex:PATTERN or NAME=py:module:function (one LLR per token string)."""
    model: str = "A"
    """The model whose dictionaries (all SAEs in the database, and its neurons) are correlated."""
    n_tokens: int = 1_000_000
    """Held-out (validation) tokens the correlations are taken over (the paper: ~40M)."""
    sample_tokens: int = 2_000_000
    """Training tokens for the unigram p(t), the script tables and the proxies' base rates."""
    batch_size: int = 32
    """Contexts per forward pass."""
    n_bins: int = 20
    """Bins of the specificity (activation) and sensitivity (proxy LLR) plots."""

    def __post_init__(self) -> None:
        for f in ("n_tokens", "sample_tokens", "batch_size", "n_bins"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")


class _Plot:
    """Streaming histograms for one (feature, proxy) pair; `edges` fixed from pass 1's maxima."""

    def __init__(self, act_max: float, llr_max: float, n_bins: int):
        self.act_edges = np.linspace(0.0, max(act_max, 1e-9), n_bins + 1)
        self.llr_edges = np.linspace(0.0, max(llr_max, 1e-9), n_bins + 1)
        self.spec = np.zeros((4, n_bins))  # tokens, tokens with proxy, activation, activation with proxy
        self.sens = np.zeros((3, n_bins))  # proxy tokens, of which the feature fires, activation sum
        self.mass = np.zeros(2)  # Σ proxy, Σ proxy · 1[fires]

    def add(self, act: np.ndarray, value: np.ndarray, llr: np.ndarray) -> None:
        n = self.spec.shape[1]
        on, held = act > 0, value > 0
        i = np.clip(np.searchsorted(self.act_edges, act[on], side="left") - 1, 0, n - 1)
        for row, w in enumerate((np.ones(on.sum()), held[on], act[on], act[on] * held[on])):
            self.spec[row] += np.bincount(i, weights=w, minlength=n)
        j = np.clip(np.searchsorted(self.llr_edges, llr[held], side="left") - 1, 0, n - 1)
        for row, w in enumerate((np.ones(held.sum()), on[held], act[held])):
            self.sens[row] += np.bincount(j, weights=w, minlength=n)
        self.mass += (value.sum(), (value * on).sum())

    def specificity(self) -> float:
        return float(self.spec[3].sum() / self.spec[2].sum()) if self.spec[2].sum() else float("nan")

    def sensitivity(self) -> float:
        return float(self.mass[1] / self.mass[0]) if self.mass[0] else float("nan")

    def to_json(self) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = {
            "edges": self.act_edges.tolist(),
            "tokens": self.spec[0].tolist(),
            "proxy_tokens": self.spec[1].tolist(),
            "act": self.spec[2].tolist(),
            "proxy_act": self.spec[3].tolist(),
            "specificity": self.specificity(),
        }
        sens = {"edges": self.llr_edges.tolist(), "tokens": self.sens[0].tolist(), "fires": self.sens[1].tolist(),
                "act": self.sens[2].tolist(), "sensitivity": self.sensitivity()}  # fmt: skip
        return spec, sens


def _best(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per proxy (column): the row with the highest correlation, and that correlation (-1, NaN if none)."""
    filled = np.where(np.isnan(corr), -np.inf, corr)
    idx = filled.argmax(0)
    val = corr[idx, np.arange(corr.shape[1])]
    return np.where(np.isnan(val), -1, idx), val


def run_proxies(conn: sqlite3.Connection, layout: paths.RunLayout, cfg: ProxyConfig, progress: bool = True) -> dict:
    """Correlate every proxy with every feature and neuron of `cfg.model`; write `proxies` and
    `summary['case_study']` (returned)."""
    rows = dictionaries(conn, cfg.model)
    sae_rows = [r for r in rows if r.kind == "sae"]
    neuron_rows = [r for r in rows if r.kind == "neurons"]
    if not sae_rows:
        raise UserError(f"feature database: no SAE of model {cfg.model}; run `monosemantic features build` first")
    proxies = select(cfg.proxies, cfg.custom)
    store = TokenStore(layout.tokens)
    tok_bytes = vocab_bytes(load_tokenizer(layout.tokenizer / paths.TOKENIZER_JSON))
    pset = ProxySet(proxies, tok_bytes, store.train.all_tokens(cfg.sample_tokens))
    model = load_transformer(layout.transformer(cfg.model)).eval()
    saes = load_saes(layout, sae_rows)
    hook = model.hook_point(sae_rows[0].hook)
    ctx = held_out_contexts(store, model.cfg.ctx_len, cfg.n_tokens)
    synthetic = np.array([s.startswith("synthetic/") for s in ctx.sources])[ctx.src]  # bool [n, T]
    P = len(proxies)
    dicts = ["neurons", *saes]
    width = {"neurons": model.cfg.d_mlp, **{n: s.cfg.n_features for n, s in saes.items()}}

    def batches(desc: str, columns: dict[str, list[int]] | None = None):
        for lo, hi in tqdm(list(ctx.batches(cfg.batch_size)), desc=desc, disable=not progress):
            ids = ctx.tokens[lo:hi]
            if columns is None:
                acts, feats = dictionary_activations(model, hook, saes, torch.from_numpy(ids))
            else:  # pass 2 needs only the best features: encode just those columns
                acts, _ = dictionary_activations(model, hook, {}, torch.from_numpy(ids))
                feats = {n: encode_columns(saes[n], acts, c) for n, c in columns.items()}
            llr = pset.llr(ids).reshape(P, -1)
            out = {n: f.reshape(-1, f.shape[-1]) for n, f in feats.items()}
            out["neurons"] = acts.reshape(-1, acts.shape[-1])
            yield out, llr, pset.values(llr), synthetic[lo:hi].reshape(-1)

    # Pass 1: correlation sums per slice and dictionary; maxima for the plots' bins.
    acc = {(s, d): PearsonAccumulator(width[d], P) for s in SLICES for d in dicts}
    act_max = {d: np.zeros(width[d]) for d in dicts}
    llr_max, held = np.zeros(P), {s: np.zeros(P, dtype=np.int64) for s in SLICES}
    for out, llr, val, syn in batches("proxies: correlate"):
        y = torch.from_numpy(val.T)
        nz = {d: out[d].nonzero() if d in saes else None for d in dicts}  # SAE features are sparse
        for s in SLICES:
            keep = torch.from_numpy(~syn) if s == 0 else None
            held[s] += ((y if keep is None else y[keep]) > 0).sum(0).numpy()
            for d in dicts:
                acc[s, d].update(out[d], y, keep, nz[d])
        for d in dicts:
            act_max[d] = np.maximum(act_max[d], out[d].amax(0).numpy())
        llr_max = np.maximum(llr_max, llr.max(1))
    best = {(s, d): _best(acc[s, d].corr()) for s in SLICES for d in dicts}

    # Pass 2: the plots of each SAE's best feature per proxy and slice.
    plots = {(s, d, k): _Plot(act_max[d][best[s, d][0][k]], llr_max[k], cfg.n_bins)
             for s in SLICES for d in saes for k in range(P) if best[s, d][0][k] >= 0}  # fmt: skip
    columns = {d: sorted({int(best[s, d][0][k]) for s in SLICES for k in range(P)} - {-1}) for d in saes}
    for out, llr, val, syn in batches("proxies: plots", columns):
        for (s, d, k), plot in plots.items():
            keep = ~syn if s == 0 else np.ones_like(syn)
            a = out[d][:, columns[d].index(int(best[s, d][0][k]))].numpy()
            plot.add(a[keep], val[k][keep], llr[k][keep])

    ids = {r.name: r.id for r in sae_rows}
    neurons_id = neuron_rows[0].id if neuron_rows else None
    table, summary_rows = [], []
    for s in SLICES:
        n_idx, n_corr = best[s, "neurons"]
        for d in saes:
            f_idx, f_corr = best[s, d]
            for k, p in enumerate(proxies):
                spec, sens = plots[s, d, k].to_json() if (s, d, k) in plots else (None, None)
                row = {"name": p.name, "description": p.description, "with_synthetic": s, "dictionary_id": ids[d],
                       "feature": _int(f_idx[k]), "feature_corr": float(f_corr[k]), "neuron": _int(n_idx[k]),
                       "neuron_corr": float(n_corr[k]), "paper_corr": p.paper_corr, "n_tokens": int(held[s][k]),
                       "specificity_json": spec, "sensitivity_json": sens}  # fmt: skip
                table.append(row)
                summary_rows.append({**{c: row[c] for c in ("name", "with_synthetic", "feature", "feature_corr",
                                                            "neuron", "neuron_corr", "paper_corr", "n_tokens")},
                                     "dictionary": d, "specificity": spec and spec["specificity"],
                                     "sensitivity": sens and sens["sensitivity"]})  # fmt: skip
    names = [p.name for p in proxies]
    conn.execute(f"DELETE FROM proxies WHERE name IN ({','.join('?' * P)})", names)
    db.insert_rows(conn, "proxies", table)
    summary = {
        "model": cfg.model,
        "neurons_dictionary_id": neurons_id,
        "n_tokens": {SLICES[s]: int(ctx.n_tokens if s else (~synthetic).sum()) for s in SLICES},
        "largest": max(saes, key=lambda n: width[n]),
        "config": {k: v for k, v in dataclasses.asdict(cfg).items()},
        "rows": summary_rows,
    }
    db.set_summary(conn, "case_study", summary)
    conn.commit()
    return json.loads(db.dumps(summary))  # what the database holds: NaN (no correlation) as None


@torch.inference_mode()
def encode_columns(sae: SparseAutoencoder, acts: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """Activations `[..., len(columns)]` of some features of `sae` on neuron activations `acts [..., d]`.

    For an SAE whose nonlinearity is elementwise (ReLU: the paper's and April's) only those columns
    of the encoder are multiplied; for others (TopK needs every pre-activation) all are encoded.
    """
    x = acts.reshape(-1, acts.shape[-1])
    if type(sae).activation is SparseAutoencoder.activation:
        x_bar = x - sae.b_dec if sae.pre_encoder_bias else x
        f = torch.relu(x_bar @ sae.W_enc[:, columns] + sae.b_enc[columns])
    else:
        f = sae.encode(x)[:, columns]
    return f.view(*acts.shape[:-1], len(columns))


def _int(i: Any) -> int | None:
    return None if int(i) < 0 else int(i)


def format_case_study(summary: dict, dictionary: str | None = None) -> str:
    """The demo's table: proxy, best feature and correlation, best neuron and correlation, the paper's."""
    d = dictionary or summary["largest"]
    lines = [f"case studies (TM §5), model {summary['model']}, dictionary {d}; r = Pearson with the proxy",
             f"{'proxy':<10} {'tokens':<18} {'feature':>8} {'r':>6} {'neuron':>7} {'r':>6} {'paper r':>8} "
             f"{'spec':>6} {'sens':>6}"]  # fmt: skip
    for r in summary["rows"]:
        if r["dictionary"] != d:
            continue
        lines.append(
            f"{r['name']:<10} {SLICES[r['with_synthetic']]:<18} {_fmt(r['feature'], 'd'):>8}"
            f" {_fmt(r['feature_corr']):>6} {_fmt(r['neuron'], 'd'):>7} {_fmt(r['neuron_corr']):>6}"
            f" {_fmt(r['paper_corr']):>8}"
            f" {_fmt(r['specificity']):>6} {_fmt(r['sensitivity']):>6}"
        )
    return "\n".join(lines)


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return format(x, spec)


__all__ = ["ProxyConfig", "run_proxies", "format_case_study", "DictRow"]
