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
Pass 1 also writes each SAE's non-zeros to a temporary file that pass 2 reads instead of encoding
again (passes.Spill; `spill=False` re-encodes). Memory is O(features × kept examples), independent
of `n_tokens`, apart from the held-out token ids themselves (10 bytes per token, needed to print
the example windows); the spill's disk use is O(non-zeros). Then logit weights
(logits.py), the rows, `summary['eval']` (a list of rows `{"dictionary": name, "l0": ..., ...}`,
the `sae eval` table; `dictionaries.metrics_json` has each full metrics.json), the `steps`
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
from monosemantic.interp import db, logits, passes, rows
from monosemantic.interp.records import BottomK, Samples, Stats, hist_edges
from monosemantic.interp.stream import Contexts, held_out_contexts
from monosemantic.io import atomic_path, is_complete, read_json, write_config
from monosemantic.runtime import pick_device
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer
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
    analyses: str = "all"
    """The analyses to run after the core records (`interp/analyses.py`): all, none, or a
    comma-separated subset such as ablations,split,map."""
    spill: bool = True
    """Keep pass 1's SAE non-zeros in a temporary file (about 12 bytes each) so pass 2 need not
    encode again; --no-spill re-encodes instead (no extra disk)."""

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


Step = Callable[[sqlite3.Connection, paths.RunLayout, FeaturesConfig, bool], None]
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
        from monosemantic.interp.analyses import selected

        try:
            steps = selected(cfg.analyses)
        except ValueError as e:
            raise UserError(f"--analyses: {e}") from None
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
                step(conn, layout, cfg, progress)
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
    vocab = rows.display_tokens(
        tok.decode_batch([[i] for i in range(store.vocab_size)], skip_special_tokens=False),
        [tok.id_to_token(i) for i in range(store.vocab_size)],
    )
    d_mlp = model.cfg.d_mlp
    dicts: list[_Dictionary] = []
    n_src = len(ctx.sources)
    if cfg.neurons:
        dicts.append(_new(NEURONS, NEURONS, None, torch.eye(d_mlp), n_src, cfg))
    for name, sae in saes.items():
        dicts.append(_new(name, "sae", sae.architecture, sae.W_dec.detach().float().cpu(), n_src, cfg))
    log.info(
        "features: %s tokens through %s (%s features)",
        f"{ctx.n_tokens:,}",
        ", ".join(d.name for d in dicts),
        f"{sum(d.n_features for d in dicts):,}",
    )
    spill_mb = _passes(dicts, ctx, model, saes, layout, cfg, progress)

    # Logit weights (logits.py): the LN scale from the first contexts, rare tokens left out.
    inv_scale = logits.ln_inv_scale(model, torch.from_numpy(ctx.tokens[:64]).to(device))
    counts = torch.from_numpy(logits.token_counts(store.train, store.vocab_size))
    include = counts >= cfg.logit_min_count
    if int(include.sum()) < 2 * cfg.logit_top:
        include = torch.ones_like(include)  # a tiny run: show every token rather than none
    metrics = _eval_metrics(layout, cfg, list(saes))
    summary = {
        "n_tokens": ctx.n_tokens,
        "ln_inv_scale": inv_scale,
        "dictionaries": [d.name for d in dicts],
        "spill_mb": spill_mb,
    }
    db.set_meta(conn, "features", {"config": asdict(cfg), **summary, "sources": list(ctx.sources)})
    db.set_meta(conn, "monosemantic_version", __version__)
    for d in tqdm(dicts, desc="features: writing", disable=not progress, unit="dict"):
        _write(conn, d, model, inv_scale, include, vocab, ctx, cfg, metrics.get(d.name))
    db.set_summary(conn, "eval", _eval_table(metrics))
    conn.commit()
    return summary


def _passes(
    dicts: list[_Dictionary],
    ctx: Contexts,
    model: Transformer,
    saes: dict[str, SparseAutoencoder],
    layout: paths.RunLayout,
    cfg: FeaturesConfig,
    progress: bool,
) -> float:
    """Pass 1 (stats, top-k) and pass 2 (histogram, samples) into `dicts`; returns the spill's MB."""
    hook_module = model.hook_point(cfg.hook)
    b, a = cfg.window_before, cfg.window_after
    spill = passes.Spill(layout.features) if cfg.spill and saes else None
    try:

        def stats_pass(first: int, acts: Tensor | None, feats: dict[str, Tensor]) -> None:
            for d in dicts:
                batch = passes.dense_batch(acts if d.kind == NEURONS else feats[d.name], first, b, a)
                d.stats.add(batch.feat, batch.value, batch.src(ctx))
                d.top.offer(batch.feat, -batch.value.double(), batch.global_tok, batch.value, batch.window)
                if spill is not None and d.kind == "sae":
                    spill.write(d.name, batch)

        passes.stream(
            ctx, model, hook_module, saes, cfg.batch_size, progress, "features pass 1/2 (stats, top-k)", stats_pass
        )
        for d in dicts:
            d.samples = _samples(d, cfg)
        gen = torch.Generator().manual_seed(cfg.seed)
        spilled = {d.name: spill.read(d.name) for d in dicts if d.kind == "sae"} if spill is not None else {}
        T = model.cfg.ctx_len

        def sample_pass(first: int, acts: Tensor | None, feats: dict[str, Tensor]) -> None:
            for d in dicts:
                if d.name in spilled:
                    tok, feat, val = next(spilled[d.name])
                    batch = passes.sparse_batch(tok, feat, val, first, T, d.n_features, b, a)
                else:
                    batch = passes.dense_batch(acts if d.kind == NEURONS else feats[d.name], first, b, a)
                assert d.samples is not None
                d.samples.add(batch.global_tok, batch.feat, batch.value, d.stats.max, gen, batch.window)

        # Pass 2 runs the forward only for the neurons, and the encoders only without a spill.
        forward = cfg.neurons or spill is None
        passes.stream(
            ctx,
            model if forward else None,
            hook_module if forward else None,
            {} if spill is not None else saes,
            cfg.batch_size,
            progress,
            "features pass 2/2 (intervals, samples)",
            sample_pass,
        )
        return spill.nbytes() / 1e6 if spill is not None else 0.0
    finally:
        if spill is not None:
            spill.close()


def _samples(d: _Dictionary, cfg: FeaturesConfig) -> Samples:
    """Empty pass-2 records of `d`, with histogram edges from its pass-1 extremes."""
    return Samples(
        edges=hist_edges(d.stats.min_nonzero, d.stats.max, cfg.hist_bins, cfg.hist_decades),
        hist=torch.zeros(d.n_features, cfg.hist_bins, dtype=torch.int64),
        interval_count=torch.zeros(d.n_features, cfg.n_intervals, dtype=torch.int64),
        intervals=BottomK(d.n_features * cfg.n_intervals, cfg.interval_samples, cfg.width),
        random=BottomK(d.n_features, cfg.random_samples, cfg.width),
    )


def _new(name: str, kind: str, arch: str | None, directions: Tensor, n_src: int, cfg: FeaturesConfig) -> _Dictionary:
    n = directions.shape[0]
    return _Dictionary(name, kind, arch, n, directions, Stats.zeros(n, n_src), BottomK(n, cfg.top_k, cfg.width))


EVAL_COLUMNS = (
    "n_features", "l0", "fvu", "normalized_mse", "dead_frac", "dense_frac", "ultralow_frac",
    "loss_recovered", "loss_recovered_vs_mean", "kl_sae", "eval_tokens",
)  # fmt: skip
"""The columns of `summary['eval']` (the `sae eval` table, eval/report.py)."""


def _eval_metrics(layout: paths.RunLayout, cfg: FeaturesConfig, names: list[str]) -> dict[str, dict[str, Any]]:
    """name -> the eval stage's metrics.json, for the SAEs that have one."""
    out = {}
    for name in names:
        f = layout.eval(cfg.model, cfg.hook) / name / paths.METRICS
        if f.is_file():
            out[name] = read_json(f)
    return out


def _eval_table(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`summary['eval']`: one row per evaluated SAE, `{"dictionary": name, <EVAL_COLUMNS>...}`."""
    return [{"dictionary": name, **{c: m.get(c) for c in EVAL_COLUMNS}} for name, m in metrics.items()]


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
    if d.directions.shape[1] != W_out.shape[0]:  # a residual-stream hook: the direction is written as is
        W_out = torch.eye(W_out.shape[1])
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
