"""Case studies (paper §8.1, §8.2, §8.6): for each proxy, the best features and neurons, measured alike.

    summary = run_proxies(conn, RunLayout(run), ProxyConfig())
    print(format_case_study(summary))

Over held-out contexts spread across the whole validation split (`stream.held_out_contexts`),
every feature of every SAE of the model and every neuron is correlated with every proxy
(`proxy_defs`), keeping only sums (`casestudy.Moments`), so memory does not grow with the token
count. Pass 1 runs the model to the hook and every SAE's encoder (one matmul per batch), and
yields, per proxy, dictionary and slice of the tokens (all; without the `synthetic/` sources,
whose generated DNA / base64 / hex strings make those proxies easy):
- the best feature and the best neuron by Pearson r (as the paper picks its neuron, footnote 18:
  "most activation-correlated");
- the family: the dictionary's features with r >= `family_min_r`.
Pass 2 needs only those columns, for the specificity by activation level of the best feature and
the best neuron (`casestudy.Levels`) and the Pearson r of the family's summed activation. A ReLU SAE
encodes them alone; TopK (and any other SAE whose `activation` is not ReLU) couples its features, as
which k win depends on all of them, so pass 1 keeps its codes' nonzeros in temporary files (`_Codes`)
and pass 2 reads the columns back from them instead of encoding every feature again. The best
feature's decoder row in the neuron basis comes from the weights (`casestudy.decoder_in_neurons`).
Last, each proxy's share of tokens in the sample is set beside its share in the whole split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic import paths
from monosemantic.activations.capture import capture
from monosemantic.analyses.casestudy import Levels, Moments, best_columns, decoder_in_neurons, families
from monosemantic.analyses.casestudy_report import SLICES, case_study_rows, format_case_study
from monosemantic.analyses.loader import DictRow, dictionaries, load_saes
from monosemantic.analyses.proxy_defs import BUILTIN, ProxySet, select
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.features.stream import Contexts, context_offsets, contexts_at, held_out_contexts
from monosemantic.features.tokentext import vocab_bytes
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.subject import ensure_tokens, load_subject, subject_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyConfig:
    """Which proxies, over how many tokens, and the case studies' thresholds."""

    proxies: tuple[str, ...] = tuple(BUILTIN)
    """Built-in proxies (arabic, hebrew, base64, dna, cyrillic, cjk, html, hex)."""
    custom: tuple[str, ...] = ()
    """Users' proxies: NAME=regex:PATTERN or NAME=py:module:function (one LLR per token string)."""
    model: str = "A"
    """The model whose dictionaries (all SAEs in the database, and its neurons) are correlated: a run model, or a
    Hugging Face one (path or hf:NAME, as --model; its tokens are the run's corpus in its tokenizer)."""
    ctx_len: int | None = None
    """Context length of a Hugging Face model (default 256, as the build's); a run model uses its own."""
    spill: bool = False
    """Keep pass 1's activations in a temporary float16 file (2·d bytes per token: 3.1 GB for 1M tokens of 1,536
    neurons) that pass 2 reads instead of running the model again; both passes then see the float16-rounded
    activations, as the harvest stores them. Worth it where the forward costs more than the disk (a deep model)."""
    n_tokens: int = 1_048_576
    """Held-out (validation) tokens, spread over the whole split, the correlations are taken over
    (the paper: 40,960,000); all of a smaller split."""
    sample_tokens: int = 2_000_000
    """Training tokens for the unigram p(t), the script tables and the proxies' base rates."""
    split_tokens: int = 16_777_216
    """Most validation tokens each proxy's share of the whole split is measured over (all of a smaller split)."""
    batch_size: int = 32
    """Contexts per forward pass."""
    n_levels: int = 10
    """Equal intervals of (0, max activation] for the specificity by activation level (the paper's plots)."""
    n_bins: int = 20
    """Bins of the sensitivity plot (proxy LLR)."""
    family_min_r: float = 0.2
    """A feature joins the proxy's family when its activation's Pearson r with the proxy is at least this."""
    decoder_min: float = 0.1
    """Decoder coefficients (unit decoder row in the neuron basis) counted when |c| is at least this (§8.6)."""

    def __post_init__(self) -> None:
        for f in ("n_tokens", "sample_tokens", "split_tokens", "batch_size", "n_levels", "n_bins"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        for f in ("family_min_r", "decoder_min"):
            if not 0 < getattr(self, f) <= 1:
                raise ValueError(f"{f} must be in (0, 1]")


def encoder(sae: SparseAutoencoder, columns: list[int] | None = None) -> Callable[..., Tensor]:
    """`enc(x [N, d_in], out=None)` → the activations `[N, len(columns)]` (all features when None), float32.

    A ReLU SAE (the paper's and April's) is one `addmm` and an in-place ReLU, over only the wanted
    columns of W_enc, written into `out` (a flat float32 buffer of at least N·n elements) when given:
    a fresh 128 MB result per batch costs as much in page faults as the reductions that read it.
    Others (TopK couples the features) encode everything and select (pass 2 reads `_Codes` instead).
    """
    if not _relu(sae):

        @torch.no_grad()  # the passes run outside inference mode: no graph through the SAE's parameters
        def select(x: Tensor, out: Tensor | None = None) -> Tensor:
            f = sae.encode(x).float()
            return f if columns is None else f[:, columns]

        return select
    W = sae.W_enc.detach().float()
    b = sae.b_enc.detach().float()
    if columns is not None:
        W, b = W[:, columns].contiguous(), b[columns].contiguous()
    b_dec = sae.b_dec.detach().float() if sae.pre_encoder_bias else None

    def enc(x: Tensor, out: Tensor | None = None) -> Tensor:
        x_bar = x if b_dec is None else x - b_dec
        buf = None if out is None else out[: len(x) * W.shape[1]].view(len(x), W.shape[1])
        return torch.relu_(torch.addmm(b, x_bar, W, out=buf))

    return enc


def _relu(sae: SparseAutoencoder) -> bool:
    """Whether `sae`'s activation is the base class's ReLU, so each feature can be encoded alone."""
    return type(sae).activation is SparseAutoencoder.activation


_REUSE_CODES = True
"""Pass 2 reads a non-ReLU SAE's columns from pass 1's codes; False encodes every feature again (the
parity test's reference)."""


class _Codes:
    """One SAE's pass-1 activations on disk as their nonzeros (CSR, batch after batch), for pass 2.

    A TopK SAE's columns cannot be encoded alone, and encoding all of them again costs pass 1's matmul
    (550 s for the SmolLM2 demo's three SAEs); its k nonzeros per token are 6·k bytes to read back
    (int16 column, float32 value; ~200 MB per SAE for 1M tokens at k = 32).
    """

    def __init__(self, stem: Path, n_features: int):
        self.files = {part: stem.with_name(f"{stem.name}.{part}") for part in ("counts", "index", "values")}
        self.n_features = n_features
        self.index = np.int16 if n_features <= 1 << 15 else np.int32  # the narrowest that holds a column
        self.rows: list[int] = []
        """Tokens of each batch written, in order."""

    def write(self, f: Tensor) -> None:
        """Append a batch's activations `f [N, n_features]`."""
        rows, cols = f.nonzero(as_tuple=True)  # row-major, so each row's entries lie together
        parts = {
            "counts": torch.bincount(rows, minlength=len(f)).numpy().astype(np.int32),
            "index": cols.numpy().astype(self.index),
            "values": f[rows, cols].numpy(),  # float32, as encoded: pass 2's values are bit-identical
        }
        for part, a in parts.items():
            with open(self.files[part], "ab") as fh:
                a.tofile(fh)
        self.rows.append(len(f))

    def read(self, columns: list[int]) -> Iterator[Tensor]:
        """Per batch written, in order: `[N, len(columns)]` float32, what `encoder(sae, columns)` gives."""
        pos = np.full(self.n_features, -1, dtype=np.int64)  # feature → its position in `columns`, -1 if unwanted
        pos[columns] = np.arange(len(columns))
        with open(self.files["counts"], "rb") as fc, open(self.files["index"], "rb") as fi, \
                open(self.files["values"], "rb") as fv:  # fmt: skip
            for n in self.rows:
                counts = np.fromfile(fc, np.int32, n)
                nnz = int(counts.sum())
                j = pos[np.fromfile(fi, self.index, nnz)]
                values = np.fromfile(fv, np.float32, nnz)
                keep = j >= 0
                out = np.zeros((n, len(columns)), dtype=np.float32)
                out[np.repeat(np.arange(n), counts)[keep], j[keep]] = values[keep]
                yield torch.from_numpy(out)


@dataclass
class _Inputs:
    """What both passes read: the model to its hook, the SAEs, the proxies and the contexts."""

    model: torch.nn.Module
    hook: torch.nn.Module
    which: Literal["output", "input"]
    """The hook module's output or input (`activations.capture`)."""
    d: int
    """Width of the hook's activation: the neurons."""
    saes: dict[str, SparseAutoencoder]
    pset: ProxySet
    ctx: Contexts
    member: np.ndarray
    """bool [S, n_tokens]: the tokens of each slice (SLICES order)."""
    spill: np.memmap | None = None
    """float16 [n_tokens, d]: pass 1's activations, which pass 2 reads (`ProxyConfig.spill`)."""
    spilled: bool = False
    codes: dict[str, _Codes] = dataclasses.field(default_factory=dict)
    """The non-ReLU SAEs' pass-1 activations, which pass 2 reads (`_Codes`)."""

    @torch.inference_mode()
    def batches(self, batch_size: int, desc: str, progress: bool) -> Iterator[tuple[Tensor, np.ndarray, Tensor]]:
        """`(neurons [N, d], llr [P, N], member [S, N])` per batch of contexts."""
        P, T = len(self.pset.proxies), self.ctx.tokens.shape[1]
        device = next(self.model.parameters()).device
        for lo, hi in tqdm(list(self.ctx.batches(batch_size)), desc=desc, disable=not progress):
            ids = self.ctx.tokens[lo:hi]
            if self.spilled:
                assert self.spill is not None
                acts = torch.from_numpy(self.spill[lo * T : hi * T].astype(np.float32))
            else:
                acts = capture(self.model, torch.from_numpy(ids).to(device), self.hook, self.which).float().cpu()
                if self.spill is not None:  # rounded once, so both passes see the same numbers
                    half = acts.reshape(-1, self.d).half()
                    self.spill[lo * T : hi * T] = half.numpy()
                    acts = half.float()
            yield (
                acts.reshape(-1, acts.shape[-1]),
                self.pset.llr(ids).reshape(P, -1),
                torch.from_numpy(self.member[:, lo * T : hi * T]),
            )


def run_proxies(conn: sqlite3.Connection, layout: paths.RunLayout, cfg: ProxyConfig, progress: bool = True) -> dict:
    """Correlate every proxy with every feature and neuron of `cfg.model`; write `proxies` and
    `summary['case_study']` (returned, as the database holds it)."""
    key = subject_key(layout, cfg.model)  # the database's name of the model (hf-<name> for a HF model)
    rows = dictionaries(conn, key)
    sae_rows = [r for r in rows if r.kind == "sae"]
    neuron_rows = [r for r in rows if r.kind == "neurons"]
    if not sae_rows:
        raise UserError(f"feature database: no SAE of model {key}; run `monosemantic features build` first")
    proxies = select(cfg.proxies, cfg.custom)
    s = load_subject(layout, cfg.model, sae_rows[0].hook, ctx_len=cfg.ctx_len)
    if s.tokenizer is None:
        raise UserError(f"{layout.tokenizer / paths.TOKENIZER_JSON}: no tokenizer; the proxies read token bytes")
    store = TokenStore(ensure_tokens(layout, s, progress=progress))
    pset = ProxySet(proxies, vocab_bytes(s.tokenizer), store.train.all_tokens(cfg.sample_tokens))
    s.model.eval()
    ctx = held_out_contexts(store, s.ctx_len, cfg.n_tokens)
    synthetic = np.array([src.startswith("synthetic/") for src in ctx.sources])[ctx.src].reshape(-1)
    member = np.stack([np.ones_like(synthetic) if sl else ~synthetic for sl in SLICES])
    saes = load_saes(layout, sae_rows)
    d = next(iter(saes.values())).cfg.d_in
    with tempfile.TemporaryDirectory(prefix=".proxies-", dir=layout.root) as tmp:
        spill = np.lib.format.open_memmap(Path(tmp) / "acts.npy", "w+", np.float16, (ctx.n_tokens, d)) \
            if cfg.spill else None  # fmt: skip
        codes = {n: _Codes(Path(tmp) / f"codes-{i}", sae.cfg.n_features)
                 for i, (n, sae) in enumerate(saes.items()) if _REUSE_CODES and not _relu(sae)}  # fmt: skip
        inputs = _Inputs(s.model, s.site.module, s.site.which, d, saes, pset, ctx, member, spill, codes=codes)
        return _run(conn, cfg, key, store, inputs, sae_rows, neuron_rows, proxies, progress)


def _run(
    conn: sqlite3.Connection,
    cfg: ProxyConfig,
    key: str,
    store: TokenStore,
    inputs: _Inputs,
    sae_rows: list[DictRow],
    neuron_rows: list[DictRow],
    proxies: list,
    progress: bool,
) -> dict:
    """Both passes, the shares and the decoders; writes `proxies` and the summary (run_proxies)."""
    ctx, member = inputs.ctx, inputs.member
    log.info("proxies: %s held-out tokens, %d contexts spread over the validation split of %s tokens",
             f"{ctx.n_tokens:,}", len(ctx.tokens), f"{store.val.n_tokens:,}")  # fmt: skip

    t0, c0 = time.perf_counter(), time.process_time()
    mom, held, llr_max = _pass1(inputs, cfg, progress)
    inputs.spilled = inputs.spill is not None
    t1, c1 = time.perf_counter(), time.process_time()
    corr = {d: mom.corr(d) for d in ["neurons", *inputs.saes]}  # [S, F, P] each
    best = {d: best_columns(c) for d, c in corr.items()}  # ([S, P], [S, P])
    fams = {d: [families(corr[d][s], cfg.family_min_r) for s in range(len(SLICES))] for d in inputs.saes}
    levels, fam_r = _pass2(inputs, cfg, mom, best, fams, llr_max, progress)
    t2, c2 = time.perf_counter(), time.process_time()
    shares = _shares(store, inputs, held[0], cfg)
    t3, c3 = time.perf_counter(), time.process_time()
    decoders = {(d, int(i)): decoder_in_neurons(sae.W_dec.detach()[int(i)].double().numpy(), cfg.decoder_min)
                for d, sae in inputs.saes.items() for i in np.unique(best[d][0]) if i >= 0}  # fmt: skip

    ids = {r.name: r.id for r in sae_rows}
    table, summary_rows = case_study_rows(proxies, ids, best, fams, fam_r, levels, decoders, held)
    names = [p.name for p in proxies]
    conn.execute(f"DELETE FROM proxies WHERE name IN ({','.join('?' * len(names))})", names)
    db.insert_rows(conn, "proxies", table)
    summary = {
        "model": key,
        "neurons_dictionary_id": neuron_rows[0].id if neuron_rows else None,
        "largest": max(inputs.saes, key=lambda n: inputs.saes[n].cfg.n_features),
        "dictionaries": [{"name": r.name, "id": r.id, "n_features": r.n_features} for r in sae_rows],
        "config": dataclasses.asdict(cfg),
        "sample": {
            "n_tokens": ctx.n_tokens,
            "n_contexts": len(ctx.tokens),
            "ctx_len": int(ctx.tokens.shape[1]),
            "order": "spread",
            "split_tokens": store.val.n_tokens,
        },
        "n_tokens": {SLICES[s]: int(member[k].sum()) for k, s in enumerate(SLICES)},
        "shares": shares,
        "rows": summary_rows,
        # Wall and CPU seconds (this process's, all threads): on a shared machine they differ.
        "seconds": {
            "pass1": round(t1 - t0, 2),
            "pass2": round(t2 - t1, 2),
            "split_share": round(t3 - t2, 2),
            "pass1_cpu": round(c1 - c0, 2),
            "pass2_cpu": round(c2 - c1, 2),
            "split_share_cpu": round(c3 - c2, 2),
        },
    }
    db.set_summary(conn, "case_study", summary)
    conn.commit()
    log.info("proxies: pass 1 %.1f s, pass 2 %.1f s, split shares %.1f s (CPU %.1f, %.1f, %.1f s)",
             t1 - t0, t2 - t1, t3 - t2, c1 - c0, c2 - c1, c3 - c2)  # fmt: skip
    return json.loads(db.dumps(summary))  # what the database holds: NaN (no correlation) as None


def _pass1(inputs: _Inputs, cfg: ProxyConfig, progress: bool) -> tuple[Moments, np.ndarray, np.ndarray]:
    """Moments of every column of every dictionary; proxy tokens per slice [S, P]; each proxy's max LLR [P]."""
    P, S = len(inputs.pset.proxies), len(SLICES)
    width = {"neurons": inputs.d, **{n: s.cfg.n_features for n, s in inputs.saes.items()}}
    mom = Moments(width, P, S)
    encoders = {n: encoder(s) for n, s in inputs.saes.items()}
    # Two buffers for the largest batch × dictionary, reused by every dictionary and batch.
    size = cfg.batch_size * inputs.ctx.tokens.shape[1] * max(width.values())
    acts, scratch = torch.empty(size), torch.empty(size)
    held, llr_max = np.zeros((S, P), dtype=np.int64), np.zeros(P)
    for x, llr, member in inputs.batches(cfg.batch_size, "proxies: correlate", progress):
        val = inputs.pset.values(llr)
        y = torch.from_numpy(np.ascontiguousarray(val.T))
        mom.batch(y, member)
        mom.add("neurons", x, scratch)
        for n, enc in encoders.items():
            f = enc(x, acts)
            mom.add(n, f, scratch)
            if n in inputs.codes:
                inputs.codes[n].write(f)
        held += (member.numpy()[:, None, :] & (val > 0)[None]).sum(-1)
        llr_max = np.maximum(llr_max, llr.max(1))
    return mom, held, llr_max


def _pass2(
    inputs: _Inputs,
    cfg: ProxyConfig,
    mom: Moments,
    best: dict[str, tuple[np.ndarray, np.ndarray]],
    fams: dict[str, list[list[list[tuple[int, float]]]]],
    llr_max: np.ndarray,
    progress: bool,
) -> tuple[dict[tuple[int, str, int], Levels], dict[tuple[int, str, int], float]]:
    """Levels of each best feature and best neuron, keyed (slice, dictionary or 'neurons', proxy);
    the family-sum r keyed (slice, dictionary, proxy)."""
    P, S = len(inputs.pset.proxies), len(SLICES)
    cols = {d: sorted({int(i) for i in best[d][0].ravel() if i >= 0}
                      | {i for s in range(S) for fam in fams[d][s] for i, _ in fam}) for d in inputs.saes}  # fmt: skip
    pos = {
        "neurons": {i: i for i in range(inputs.d)},
        **{d: {i: j for j, i in enumerate(c)} for d, c in cols.items()},
    }
    encoders = {d: encoder(inputs.saes[d], c) for d, c in cols.items() if c and d not in inputs.codes}
    stored = {d: inputs.codes[d].read(c) for d, c in cols.items() if c and d in inputs.codes}
    # Every family (dictionary, slice, proxy) is one column of the summed activations, one Moments for all.
    fam_keys = [(d, s, k) for d in inputs.saes for s in range(S) for k in range(P) if fams[d][s][k]]
    fam_matrix = {d: torch.zeros(len(c), len(fam_keys)) for d, c in cols.items() if c}
    for j, (d, s, k) in enumerate(fam_keys):
        fam_matrix[d][[pos[d][i] for i, _ in fams[d][s][k]], j] = 1.0
    fam_mom = Moments({"families": len(fam_keys)}, P, S)
    levels: dict[tuple[int, str, int], Levels] = {}
    for d in ["neurons", *inputs.saes]:
        for s in range(S):
            for k in range(P):
                i = int(best[d][0][s, k])
                if i >= 0:
                    levels[s, d, k] = Levels(float(mom.max[d][i]), llr_max[k], cfg.n_levels, cfg.n_bins)
    for x, llr, member in inputs.batches(cfg.batch_size, "proxies: levels, families", progress):
        val = inputs.pset.values(llr)
        y = torch.from_numpy(np.ascontiguousarray(val.T))
        keep = member.numpy()
        acts = {"neurons": x, **{d: enc(x) for d, enc in encoders.items()}, **{d: next(r) for d, r in stored.items()}}
        for (s, d, k), lv in levels.items():
            i = int(best[d][0][s, k])
            a = acts[d][:, pos[d][i]].numpy()[keep[s]]
            lv.add(a, val[k][keep[s]], None if d == "neurons" else llr[k][keep[s]])
        if fam_keys:
            fam_mom.batch(y, member)
            sums = torch.zeros(len(x), len(fam_keys))  # [N, families]: each family's summed activation
            for d, m in fam_matrix.items():
                sums.addmm_(acts[d], m)
            fam_mom.add("families", sums)
    r = fam_mom.corr("families") if fam_keys else np.zeros((S, 0, P))
    return levels, {(s, d, k): float(r[s, j, k]) for j, (d, s, k) in enumerate(fam_keys)}


def _shares(store: TokenStore, inputs: _Inputs, sample_held: np.ndarray, cfg: ProxyConfig) -> dict[str, dict]:
    """Per proxy: the share of tokens where it holds in the sample and in the validation split (all
    of its whole windows, or `split_tokens` of them spread evenly), and the tokens stage's content
    category share of the split where it measured one (data/categories.py)."""
    ctx, pset, L = inputs.ctx, inputs.pset, inputs.ctx.tokens.shape[1]
    grid = context_offsets(store.val, L)
    if len(grid) * L <= cfg.split_tokens:  # every window: the sample's counts plus the rest's
        rest, counts, n = np.setdiff1d(grid, ctx.offsets), sample_held.astype(np.int64), ctx.n_tokens
    else:
        rest, counts, n = held_out_contexts(store, L, cfg.split_tokens).offsets, np.zeros(len(pset.proxies), int), 0
    for lo in range(0, len(rest), 64):
        part = contexts_at(store, L, rest[lo : lo + 64])
        counts = counts + (pset.values(pset.llr(part.tokens)) > 0).sum((1, 2))
        n += part.n_tokens
    category = (getattr(store, "category_shares", None) or {}).get("val", {})
    out = {p.name: {"sample": float(sample_held[k] / ctx.n_tokens), "split": float(counts[k] / n), "split_tokens": n,
                    "category": category.get(p.name)} for k, p in enumerate(pset.proxies)}  # fmt: skip
    log.info(
        "proxies: share of tokens where each holds, sample of %s / validation split (%s tokens)%s: %s",
        f"{ctx.n_tokens:,}", f"{n:,}", " (tokens stage's category)" if category else "",
        ", ".join(f"{k} {v['sample']:.3%} / {v['split']:.3%}"
                  + (f" ({v['category']:.3%})" if v["category"] is not None else "") for k, v in out.items()),
    )  # fmt: skip
    return out


__all__ = ["ProxyConfig", "run_proxies", "format_case_study", "encoder", "DictRow"]
