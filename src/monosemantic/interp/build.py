"""The `features build` stage: stream held-out tokens through the model and its dictionaries, and
write the feature database `runs/<name>/features/features.sqlite` (schema in db.py).

    path = build_features(RunLayout("runs/default"), FeaturesConfig(n_tokens=1 << 20))

Two passes over the same held-out contexts (stream.py), each one forward to the hook plus every
SAE's encoder ([TM] §8 / reference §9 for what the browser shows):
1. statistics: activation count, sum, max, smallest non-zero, activation mass per corpus source,
   and the top-k activating tokens with their activation windows;
2. with each feature's max known: a log-spaced activation histogram, the activation range split
   into `n_intervals` equal intervals with uniform samples from each (the paper's interval view),
   and uniform random non-zero samples.
Memory is O(features × kept examples), independent of `n_tokens`, apart from the held-out token
ids themselves (10 bytes per token, needed to print the example windows). Then logit weights
(logits.py), the rows, `summary['eval']` (name -> the eval stage's scalar metrics), the `steps`
(later analyses, run on the open connection), and `db.finalize`. The file appears whole or not at
all: it is built under a temporary name and renamed; `config.json` is written last and marks
the stage complete.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from monosemantic import __version__, paths
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.interp import db, logits, rows
from monosemantic.interp.records import BottomK, Samples, Stats, hist_edges, sparse_entries, windows_of
from monosemantic.interp.stream import Contexts, dictionary_activations, held_out_contexts
from monosemantic.io import atomic_path, is_complete, read_json, write_config
from monosemantic.runtime import pick_device
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.train import load_transformer

log = logging.getLogger("monosemantic")
KIND = "monosemantic.features"
NEURONS = "neurons"


@dataclass(frozen=True)
class FeaturesConfig:
    """What the feature database holds and how it is computed ([TM] §8, reference §9)."""

    n_tokens: int = 1_048_576
    """Held-out (validation) tokens streamed through the model, in whole contexts."""
    top_k: int = 20
    """Top activating examples kept per feature."""
    window_before: int = 10
    """Tokens shown before an example's max token."""
    window_after: int = 4
    """Tokens shown after an example's max token."""
    n_intervals: int = 10
    """The activation range (0, max] is split into this many equal intervals."""
    interval_samples: int = 5
    """Uniform samples kept from each interval."""
    random_samples: int = 10
    """Uniform samples kept from all of a feature's non-zero activations."""
    hist_bins: int = 40
    """Bins of the log-spaced activation histogram."""
    hist_decades: float = 4.0
    """The histogram spans at most this many powers of ten below the max (lower values go to bin 0)."""
    logit_top: int = 10
    """Top and bottom tokens kept per feature's logit weights."""
    logit_bins: int = 40
    """Bins of the logit-weight histogram."""
    logit_min_count: int = 10
    """Tokens seen fewer times than this in the training split are left out of the logit weights."""
    batch_size: int = 16
    """Contexts per forward pass; memory grows with batch_size × ctx_len × features."""
    model: str = "A"
    """Model name under RUN/transformer."""
    hook: str = hooks.MLP_POST
    """Activation site of the dictionaries (the neurons are the activations at this hook)."""
    saes: str = ""
    """Comma-separated SAE folder names under RUN/sae/MODEL/HOOK to include; empty = all."""
    neurons: bool = True
    """Also write the same records for the model's neurons (dictionary 'neurons')."""
    seed: int = 0
    """Seed of the interval and random samples."""
    device: str = "cpu"
    """Device of the forward and encoders (cpu, cuda, mps, auto); records are kept on the CPU."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "top_k", "n_intervals", "hist_bins", "logit_bins", "batch_size", "logit_top"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeaturesConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("window_before", "window_after", "interval_samples", "random_samples", "logit_min_count"):
            if getattr(self, name) < 0:
                raise ValueError(f"FeaturesConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.hist_decades <= 0:
            raise ValueError(f"FeaturesConfig.hist_decades must be positive, got {self.hist_decades}")
        if self.hook not in hooks.ALL:
            raise ValueError(f"FeaturesConfig.hook {self.hook!r} is not one of {', '.join(hooks.ALL)}")

    @property
    def width(self) -> int:
        return self.window_before + 1 + self.window_after


Step = Callable[[sqlite3.Connection, paths.RunLayout, FeaturesConfig], None]
"""A later analysis (ablations, proxies, ...): reads and writes the open database before finalize."""


@dataclass
class _Dictionary:
    """One dictionary while it is built: its records from both passes."""

    name: str
    kind: str
    architecture: str | None
    n_features: int
    directions: Tensor  # [n_features, d_mlp] decoder rows (the identity for neurons)
    stats: Stats
    top: BottomK
    samples: Samples | None = None


def find_saes(layout: paths.RunLayout, model: str, hook: str) -> dict[str, Path]:
    """The run's SAE folders for `model` at `hook`, in natural order (tm2023-512 before tm2023-1024)."""
    root = layout.saes(model, hook)
    found = [p for p in root.glob("*") if (p / paths.SAE_CONFIG).is_file()]
    found.sort(key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    return {p.name: p for p in found}


def build_features(
    layout: paths.RunLayout,
    cfg: FeaturesConfig = FeaturesConfig(),
    force: bool = False,
    progress: bool = True,
    steps: Sequence[tuple[str, Step]] | None = None,
) -> Path:
    """The stage; returns the database's path. Skips (returns it) when complete unless `force`.

    `steps` (default `analyses.STEPS`) run in order on the open connection after the core records.
    """
    out = layout.features
    path = out / db.FILENAME
    if is_complete(out) and path.is_file() and not force:
        log.info("%s exists: skipping (use --force to rebuild)", path)
        return path
    if steps is None:
        from monosemantic.interp.analyses import STEPS

        steps = STEPS
    saes = _select_saes(layout, cfg)
    for folder, what in ((layout.transformer(cfg.model), "lm train"), (layout.tokens, "tokenize")):
        if not (folder / paths.CONFIG).is_file():
            raise UserError(f"{folder}: not found; run `monosemantic {what} --run {layout.root}`")
    t0 = time.perf_counter()
    (out / paths.CONFIG).unlink(missing_ok=True)  # the old file, if any, is no longer vouched for
    with atomic_path(path) as tmp:
        tmp.unlink()  # db.create wants a fresh path
        conn = db.create(tmp)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # the whole file is the unit of atomicity
            conn.execute("PRAGMA synchronous = OFF")
            summary = _core(conn, layout, cfg, saes, progress)
            for name, step in steps:
                log.info("features: %s", name)
                step(conn, layout, cfg)
            db.finalize(conn)
        finally:
            conn.close()
    seconds = time.perf_counter() - t0
    write_config(out / paths.CONFIG, KIND, {"features": asdict(cfg), **summary, "seconds": seconds})
    log.info("features: wrote %s in %.0f s", path, seconds)
    return path


def _select_saes(layout: paths.RunLayout, cfg: FeaturesConfig) -> dict[str, Path]:
    found = find_saes(layout, cfg.model, cfg.hook)
    if cfg.saes:
        wanted = [s.strip() for s in cfg.saes.split(",") if s.strip()]
        missing = [s for s in wanted if s not in found]
        if missing:
            raise UserError(
                f"{layout.saes(cfg.model, cfg.hook)}: no SAE {', '.join(missing)} (found: {', '.join(found) or 'none'})"
            )
        found = {s: found[s] for s in wanted}
    if not found and not cfg.neurons:
        raise UserError(f"{layout.saes(cfg.model, cfg.hook)}: no SAEs, and --no-neurons: nothing to build")
    return found


def _core(
    conn: sqlite3.Connection, layout: paths.RunLayout, cfg: FeaturesConfig, sae_folders: dict[str, Path], progress: bool
) -> dict[str, Any]:
    """Both passes, the logit weights and all rows of the core tables; returns what config.json records."""
    device = pick_device(cfg.device)
    model = load_transformer(layout.transformer(cfg.model), device=str(device)).eval()
    saes = {name: SparseAutoencoder.load(f, device=device).float().eval() for name, f in sae_folders.items()}
    store = TokenStore(layout.tokens)
    ctx = held_out_contexts(store, model.cfg.ctx_len, cfg.n_tokens)
    if ctx.n_tokens < cfg.n_tokens:
        log.warning("the validation split holds only %s of the %s tokens asked for", ctx.n_tokens, cfg.n_tokens)
    tok = load_tokenizer(layout.tokenizer / paths.TOKENIZER_JSON)
    vocab = tok.decode_batch([[i] for i in range(store.vocab_size)], skip_special_tokens=False)
    d_mlp = model.cfg.d_mlp
    dicts: list[_Dictionary] = []
    n_src = len(ctx.sources)
    if cfg.neurons:
        dicts.append(_new(NEURONS, "neurons", None, torch.eye(d_mlp), n_src, cfg))
    for name, sae in saes.items():
        dicts.append(_new(name, "sae", sae.architecture, sae.W_dec.detach().float().cpu(), n_src, cfg))
    log.info(
        "features: %s tokens through %s (%s features)",
        f"{ctx.n_tokens:,}",
        ", ".join(d.name for d in dicts),
        f"{sum(d.n_features for d in dicts):,}",
    )
    hook_module = model.hook_point(cfg.hook)

    def stats_pass(d: _Dictionary, f3: Tensor, first: int) -> None:
        tok_l, feat, val, gtok, src, window = _entries(f3, first, ctx, cfg)
        d.stats.add(feat, val, src)
        d.top.offer(feat, -val.double(), gtok, val, window)

    _stream(ctx, model, hook_module, saes, dicts, cfg, progress, "features pass 1/2 (stats, top-k)", stats_pass)
    for d in dicts:
        d.samples = Samples(
            edges=hist_edges(d.stats.min_nonzero, d.stats.max, cfg.hist_bins, cfg.hist_decades),
            hist=torch.zeros(d.n_features, cfg.hist_bins, dtype=torch.int64),
            interval_count=torch.zeros(d.n_features, cfg.n_intervals, dtype=torch.int64),
            intervals=BottomK(d.n_features * cfg.n_intervals, cfg.interval_samples, cfg.width),
            random=BottomK(d.n_features, cfg.random_samples, cfg.width),
        )
    gen = torch.Generator().manual_seed(cfg.seed)

    def sample_pass(d: _Dictionary, f3: Tensor, first: int) -> None:
        tok_l, feat, val, gtok, src, window = _entries(f3, first, ctx, cfg)
        assert d.samples is not None
        d.samples.add(gtok, feat, val, d.stats.max, gen, window)

    _stream(ctx, model, hook_module, saes, dicts, cfg, progress, "features pass 2/2 (intervals, samples)", sample_pass)

    # Logit weights (logits.py): the LN scale from the first contexts, rare tokens left out.
    inv_scale = logits.ln_inv_scale(model, torch.from_numpy(ctx.tokens[:64]).to(device))
    counts = torch.from_numpy(logits.token_counts(store.train, store.vocab_size))
    include = counts >= cfg.logit_min_count
    if int(include.sum()) < 2 * cfg.logit_top:
        include = torch.ones_like(include)  # a tiny run: show every token rather than none
    metrics = _eval_metrics(layout, cfg, list(saes))
    summary = {"n_tokens": ctx.n_tokens, "ln_inv_scale": inv_scale, "dictionaries": [d.name for d in dicts]}
    db.set_meta(conn, "features", {"config": asdict(cfg), **summary, "sources": list(ctx.sources)})
    db.set_meta(conn, "monosemantic_version", __version__)
    for d in tqdm(dicts, desc="features: writing", disable=not progress, unit="dict"):
        _write(conn, d, model, inv_scale, include, vocab, ctx, cfg, metrics.get(d.name))
    db.set_summary(conn, "eval", metrics)
    conn.commit()
    return summary


def _new(name: str, kind: str, arch: str | None, directions: Tensor, n_src: int, cfg: FeaturesConfig) -> _Dictionary:
    n = directions.shape[0]
    return _Dictionary(name, kind, arch, n, directions, Stats.zeros(n, n_src), BottomK(n, cfg.top_k, cfg.width))


def _entries(f3: Tensor, first: int, ctx: Contexts, cfg: FeaturesConfig) -> tuple:
    """A batch's non-zeros with global token indices, sources, and a window getter for BottomK.

    `f3 [n_ctx, ctx_len, F]` holds the contexts `first, first + 1, ...`."""
    n_ctx, T, F = f3.shape
    tok_l, feat, val = sparse_entries(f3.reshape(-1, F))
    tok_l, feat, val = tok_l.cpu(), feat.cpu(), val.cpu()
    gtok = tok_l + first * T
    src = torch.from_numpy(ctx.src[first : first + n_ctx].reshape(-1).astype("int64"))[tok_l]

    def window(sel: Tensor) -> Tensor:
        t = tok_l[sel].to(f3.device)
        w = windows_of(f3, t // T, t % T, feat[sel].to(f3.device), cfg.window_before, cfg.window_after)
        return w.cpu()

    return tok_l, feat, val, gtok, src, window


def _stream(
    ctx: Contexts,
    model: torch.nn.Module,
    hook_module: torch.nn.Module,
    saes: dict[str, SparseAutoencoder],
    dicts: list[_Dictionary],
    cfg: FeaturesConfig,
    progress: bool,
    desc: str,
    fn: Callable[[_Dictionary, Tensor, int], None],
) -> None:
    """One pass: every batch of contexts through the model and SAEs, `fn(dictionary, f3, first)`."""
    device = next(model.parameters()).device
    threads = torch.get_num_threads()
    bar = tqdm(total=ctx.n_tokens, desc=desc, disable=not progress, unit="tok", unit_scale=True)
    try:
        for lo, hi in ctx.batches(cfg.batch_size):
            tokens = torch.from_numpy(ctx.tokens[lo:hi]).to(device)
            with torch.inference_mode():
                acts, feats = dictionary_activations(model, hook_module, saes, tokens)
            # The records' ops are small (sort, bincount, gather over ~10^5 non-zeros): a second
            # OpenMP thread only spin-waits there and made them 10-60x slower on the shared
            # 2-core machine (docs/LOG.md 2026-11-25); the matmuls above keep every thread.
            torch.set_num_threads(1)
            for d in dicts:
                fn(d, acts if d.kind == "neurons" else feats[d.name], lo)
            torch.set_num_threads(threads)
            bar.update(tokens.numel())
    finally:
        torch.set_num_threads(threads)
        bar.close()


def _eval_metrics(layout: paths.RunLayout, cfg: FeaturesConfig, names: list[str]) -> dict[str, dict[str, Any]]:
    """name -> the scalar entries of the eval stage's metrics.json, for the SAEs that have one."""
    out = {}
    for name in names:
        f = layout.eval(cfg.model, cfg.hook) / name / paths.METRICS
        if f.is_file():
            out[name] = {k: v for k, v in read_json(f).items() if not isinstance(v, dict | list)}
    return out


def _write(
    conn: sqlite3.Connection,
    d: _Dictionary,
    model: torch.nn.Module,
    inv_scale: float,
    include: Tensor,
    vocab: list[str],
    ctx: Contexts,
    cfg: FeaturesConfig,
    metrics: dict[str, Any] | None,
) -> None:
    """All rows of one dictionary: dictionaries, features (with logit weights), examples, intervals."""
    assert d.samples is not None
    dict_id = db.add_dictionary(
        conn,
        name=d.name,
        model=cfg.model,
        hook=cfg.hook,
        kind=d.kind,
        n_features=d.n_features,
        n_tokens=ctx.n_tokens,
        architecture=d.architecture,
        metrics=metrics,
    )
    mlp = model.blocks[0].mlp
    W_out, gain, W_U = (t.detach().float().cpu() for t in (mlp.W_out, model.ln_f.weight, model.W_U))
    logit_json: list[dict[str, Any]] = []
    for lo in range(0, d.n_features, 1024):
        w = logits.logit_effects(d.directions[lo : lo + 1024], W_out, gain, inv_scale, W_U)
        w = logits.median_shift(w, include)
        logit_json += logits.logit_records(w, include, vocab, cfg.logit_top, cfg.logit_bins)
    words = rows.top_tokens(d.top, ctx, vocab)
    db.insert_rows(
        conn, "features", rows.feature_rows(dict_id, d.stats, d.samples, ctx.n_tokens, ctx.sources, words, logit_json)
    )
    b = cfg.window_before
    db.insert_rows(conn, "examples", rows.example_rows(dict_id, d.top, "top", ctx, vocab, b))
    db.insert_rows(
        conn, "examples", rows.example_rows(dict_id, d.samples.intervals, "interval", ctx, vocab, b, cfg.n_intervals)
    )
    db.insert_rows(conn, "examples", rows.example_rows(dict_id, d.samples.random, "random", ctx, vocab, b))
    db.insert_rows(conn, "intervals", rows.interval_rows(dict_id, d.stats.max, d.samples.interval_count))
    conn.commit()
