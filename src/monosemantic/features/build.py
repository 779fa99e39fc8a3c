"""The `features build` stage: stream held-out tokens through the model and its dictionaries, and
write the feature database `runs/<name>/features/features.sqlite` (schema in db.py).

    path = build_features(RunLayout("runs/default"), FeaturesConfig(n_tokens=1 << 20))

The subject is the run's own model or any Hugging Face causal LM (`--model`, `--hook` as in
harvest and `sae eval`; `transformer/subject.py`). Two passes over the same held-out contexts
(stream.py), each one forward to the hook plus every SAE's encoder (paper.md §9 / paper.md §9 for
what the browser shows):
1. statistics: activation count, sum, max, smallest non-zero, activation mass per corpus source,
   and the top-k activating tokens with their activation windows;
2. with each feature's max known: a log-spaced activation histogram, the activation range split
   into `n_intervals` equal intervals with uniform samples from each (the paper's interval view),
   and uniform random non-zero samples.
Pass 1 also writes each SAE's non-zeros to a temporary file that pass 2 reads instead of encoding
again (passes.Spill; `spill=False` re-encodes). Memory is O(features × kept examples), independent
of `n_tokens`, apart from the held-out token ids themselves (10 bytes per token, needed to print
the example windows); the spill's disk use is O(non-zeros). The run's control model
(`<model>-shuffled`, paper §8.9), when it has SAEs, gets the same passes over the same contexts,
and its dictionaries are written beside the model's under its own name. Then logit weights
(logits.py), the rows, `summary['eval']` (a list of rows `{"dictionary": name, "l0": ..., ...}`,
the `sae eval` table; `dictionaries.metrics_json` has each full metrics.json), the `steps`
(later analyses, run on the open connection), and `db.finalize`. The file appears whole or not at
all: it is built under a temporary name and renamed; `config.json` is written last and marks
the stage complete.

Under torchrun the passes are sharded: each rank streams a contiguous share of the contexts, cut
at batch boundaries, and the records are merged (merge.py: sums, extremes, bottom-k merges); rank
0 alone computes the logit weights, writes the rows and runs the later analyses. The database is
the one a single process writes, up to float64 summation order in the sums (README "Scale").
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from monosemantic import __version__, distributed, paths, provenance
from monosemantic.activations.capture import capture
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.features import db, logits, passes, rows
from monosemantic.features.config import FeaturesConfig, Step
from monosemantic.features.stream import Contexts, held_out_contexts
from monosemantic.io import atomic_path, is_complete, read_json, write_config
from monosemantic.runtime import pick_device
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.subject import (
    LoadedSubject,
    ensure_tokens,
    hook_dirname,
    is_run_model,
    load_subject,
    subject_key,
    vocab_size,
)

log = logging.getLogger("monosemantic")
KIND = "monosemantic.features"
NEURONS = "neurons"


def find_saes(layout: paths.RunLayout, model: str, hook: str) -> dict[str, Path]:
    """The run's SAE folders for `model` (a run model or a Hugging Face one, `subject_key`) at `hook`,
    in natural order (tm2023-512 before tm2023-1024)."""
    root = layout.saes(subject_key(layout, model), hook_dirname(hook))
    found = [p for p in root.glob("*") if (p / paths.SAE_CONFIG).is_file()]
    found.sort(key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    return {p.name: p for p in found}


def build_features(
    layout: paths.RunLayout,
    cfg: FeaturesConfig,
    force: bool = False,
    progress: bool = True,
    steps: Sequence[Step] = (),
) -> Path:
    """The stage; returns the database's path. Skips (returns it) when complete unless `force`.

    `steps` (the caller picks them, e.g. `monosemantic.analyses.steps.selected`) run in order on the
    open connection after the core records; on a Hugging Face subject those that need the run's own
    model are skipped.
    Under torchrun every rank must call this: the passes are sharded and rank 0 writes.
    """
    out = layout.features
    path = layout.features_db
    ins = _inputs(layout, cfg)
    if distributed.broadcast_object(path.is_file() and provenance.reuse(out, ins, force)):  # rank 0 decides
        log.info("%s exists: skipping (use --force to rebuild)", path)
        return path
    saes = _select_saes(layout, cfg)
    t0 = time.perf_counter()
    found = _collect(layout, cfg, saes, progress and distributed.is_main())
    control = _collect_control(layout, cfg, progress and distributed.is_main())
    if not distributed.is_main():
        return path  # rank 0 writes the database and runs the analyses
    steps = _for_subject(steps, is_run_model(layout, cfg.model), found.subject.key)
    (out / paths.CONFIG).unlink(missing_ok=True)  # the old file, if any, is no longer vouched for
    with atomic_path(path) as tmp:
        conn = db.create(tmp)  # the empty temporary file atomic_path made (and holds against a sweep)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # the whole file is the unit of atomicity
            summary = _write_core(conn, layout, cfg, found, progress)
            if control is not None:  # paper §8.9: the control's dictionaries beside the model's
                _write_dicts(conn, layout, control[0], control[1], progress)
                summary["control"] = control[0].model
            timings = {"passes": time.perf_counter() - t0}
            for step in steps:
                log.info("features: %s", step.name)
                t_step = time.perf_counter()
                step.run(conn, layout, cfg, progress)
                timings[step.name] = time.perf_counter() - t_step
                log.info("features: %s took %.0f s", step.name, timings[step.name])
            db.finalize(conn)
        finally:
            conn.close()
    seconds = time.perf_counter() - t0
    step_seconds = {k: round(v, 1) for k, v in timings.items()}  # the passes, then each analysis
    provenance.record(out, ins)  # before config.json, which marks the stage complete
    write_config(
        out / paths.CONFIG, KIND, {"features": asdict(cfg), **summary, "seconds": seconds, "step_seconds": step_seconds}
    )
    log.info("features: wrote %s in %.0f s", path, seconds)
    return path


def _inputs(layout: paths.RunLayout, cfg: FeaturesConfig) -> provenance.Inputs:
    """Every stage folder the database reads or may read: the tokenizer and tokens, every model (the
    control and model B included), their SAEs and evaluations; a Hugging Face subject by name."""
    root = layout.root
    found = [layout.tokenizer, layout.tokens, *root.glob("tokens-*"), *root.glob("transformer/*")]
    found += [*root.glob("sae/*/*/*"), *root.glob("eval/*/*/*")]
    folders = sorted(f for f in found if f.is_dir() and not f.name.startswith("."))
    external = [] if is_run_model(layout, cfg.model) else [cfg.model]
    return provenance.inputs(layout.features, folders, external, root=root)


def _for_subject(steps: Sequence[Step], run_model: bool, key: str) -> list[Step]:
    """`steps` without those that need the run's own model when the subject is not one."""
    if run_model:
        return list(steps)
    skipped = [s.name for s in steps if not s.any_subject]
    if skipped:
        log.info("features: %s need the run's own model, not %s: skipped", ", ".join(skipped), key)
    return [s for s in steps if s.any_subject]


def _select_saes(layout: paths.RunLayout, cfg: FeaturesConfig) -> dict[str, Path]:
    found = find_saes(layout, cfg.model, cfg.hook)
    root = layout.saes(subject_key(layout, cfg.model), hook_dirname(cfg.hook))
    if cfg.saes:
        wanted = list(cfg.saes)
        missing = [s for s in wanted if s not in found]
        if missing:
            raise UserError(f"{root}: no SAE {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        found = {s: found[s] for s in wanted}
    if not found and not cfg.neurons:
        raise UserError(f"{root}: no SAEs, and --no-neurons: nothing to build")
    return found


def control_model(layout: paths.RunLayout, cfg: FeaturesConfig) -> str | None:
    """The paper's control for the build's model (§8.9): the run model `<model>-shuffled` (a copy with each
    weight matrix's entries shuffled, transformer/shuffle.py) when it has SAEs at the build's hook."""
    if not is_run_model(layout, cfg.model):
        return None
    name = f"{cfg.model}-shuffled"
    return name if is_complete(layout.transformer(name)) and find_saes(layout, name, cfg.hook) else None


def _collect_control(
    layout: paths.RunLayout, cfg: FeaturesConfig, progress: bool
) -> tuple[FeaturesConfig, _Collected] | None:
    """The control model's SAEs (not its neurons) over the same held-out contexts, or None without one.

    Its dictionaries are written with model `<model>-shuffled`, so the analyses, which select by model,
    never take them for the model's own; automated interpretability scores them beside it."""
    name = control_model(layout, cfg)
    if name is None:
        return None
    control = dataclasses.replace(cfg, model=name, saes=(), neurons=False)
    return control, _collect(layout, control, find_saes(layout, name, cfg.hook), progress)


@dataclass
class _Collected:
    """What both passes found: the records merged over the ranks (complete on rank 0)."""

    subject: LoadedSubject
    store: TokenStore
    ctx: Contexts
    dicts: list[passes.Records]
    spill_mb: float


def _collect(layout: paths.RunLayout, cfg: FeaturesConfig, sae_folders: dict[str, Path], progress: bool) -> _Collected:
    """Load the subject and its SAEs, run both passes over this rank's contexts, merge the records."""
    device = pick_device(cfg.device)
    s = load_subject(layout, cfg.model, cfg.hook, str(device), cfg.ctx_len, cfg.subject_dtype, cfg.device_map)
    s.model.eval()
    if s.tokenizer is None:
        raise UserError(f"{layout.tokenizer}: no tokenizer; run `monosemantic tokenize --run {layout.root}`")
    store = TokenStore(distributed.main_first(lambda: ensure_tokens(layout, s, progress=progress)))
    vocab = vocab_size(s.model)
    if store.vocab_size > vocab:
        raise UserError(f"{store.folder}: vocabulary {store.vocab_size} is larger than the {vocab} of {s.source}")
    saes = {name: SparseAutoencoder.load(f, device=device).float().eval() for name, f in sae_folders.items()}
    ctx = held_out_contexts(store, s.ctx_len, cfg.n_tokens)
    if ctx.n_tokens < cfg.n_tokens:
        log.warning("the validation split holds only %s of the %s tokens asked for", ctx.n_tokens, cfg.n_tokens)
    with torch.inference_mode():
        d = capture(s.model, torch.from_numpy(ctx.tokens[:1]).to(device), s.site.module, s.site.which).shape[-1]
    for name, sae in saes.items():  # before the long passes, naming the folder
        if sae.cfg.d_in != d:
            raise UserError(f"{sae_folders[name]}: the SAE reads {sae.cfg.d_in} dims but {cfg.hook} has {d}")
    dicts: list[passes.Records] = []
    n_src = len(ctx.sources)
    if cfg.neurons:
        dicts.append(passes.new_records(NEURONS, NEURONS, None, torch.eye(d), n_src, cfg))
    for name, sae in saes.items():
        dicts.append(passes.new_records(name, "sae", sae.architecture, sae.W_dec.detach().float().cpu(), n_src, cfg))
    log.info(
        "features: %s tokens through %s (%s features)%s",
        f"{ctx.n_tokens:,}",
        ", ".join(x.name for x in dicts),
        f"{sum(x.n_features for x in dicts):,}",
        f" on {distributed.world_size()} processes" if distributed.is_enabled() else "",
    )
    forward = passes.Forward(s.model, s.site.module, s.site.which, cfg.dtype)
    share = passes.my_contexts(len(ctx.tokens), cfg.batch_size)
    spill_mb = passes.run_passes(dicts, ctx, forward, saes, layout.features, cfg, progress, share)
    return _Collected(s, store, ctx, dicts, spill_mb)


def _write_core(
    conn: sqlite3.Connection, layout: paths.RunLayout, cfg: FeaturesConfig, c: _Collected, progress: bool
) -> dict[str, Any]:
    """The logit weights and all rows of the core tables (rank 0); returns what config.json records."""
    path, metrics = _write_dicts(conn, layout, cfg, c, progress)
    summary = {
        "model": c.subject.key,
        "n_tokens": c.ctx.n_tokens,
        "ctx_len": int(c.ctx.tokens.shape[1]),
        "ln_inv_scale": path.inv_scale if path is not None else None,
        "dictionaries": [x.name for x in c.dicts],
        "spill_mb": c.spill_mb,
        "n_processes": distributed.world_size(),
    }
    db.set_meta(conn, "features", {"config": asdict(cfg), **summary, "sources": list(c.ctx.sources)})
    db.set_meta(conn, "monosemantic_version", __version__)
    db.set_summary(conn, "eval", _eval_table(metrics))
    conn.commit()
    return summary


def _write_dicts(
    conn: sqlite3.Connection, layout: paths.RunLayout, cfg: FeaturesConfig, c: _Collected, progress: bool
) -> tuple[logits.LogitPath | None, dict[str, dict[str, Any]]]:
    """Every dictionary of `c` with its logit weights (rank 0); returns the logit path and the eval metrics."""
    s, store, ctx = c.subject, c.store, c.ctx
    assert s.tokenizer is not None
    vocab = rows.display_tokens(
        s.tokenizer.decode_batch([[i] for i in range(store.vocab_size)], skip_special_tokens=False),
        [s.tokenizer.id_to_token(i) for i in range(store.vocab_size)],
    )
    # Logit weights (logits.py): the final norm's scale from the first contexts, rare tokens left out.
    d = c.dicts[0].directions.shape[1]
    path = logits.logit_path(s.model, s.site, d, torch.from_numpy(ctx.tokens[:64]), store.vocab_size)
    counts = torch.from_numpy(logits.token_counts(store.train, store.vocab_size))
    include = counts >= cfg.logit_min_count
    if int(include.sum()) < 2 * cfg.logit_top:
        include = torch.ones_like(include)  # a tiny run: show every token rather than none
    metrics = _eval_metrics(layout, cfg, s.key, [x.name for x in c.dicts if x.kind == "sae"])
    for x in tqdm(c.dicts, desc="features: writing", disable=not progress, unit="dict"):
        write_dictionary(conn, x, s.key, path, include, vocab, ctx, cfg, metrics.get(x.name))
    return path, metrics


EVAL_COLUMNS = (
    "n_features", "l0", "fvu", "normalized_mse", "dead_frac", "dense_frac", "ultralow_frac",
    "loss_recovered", "loss_recovered_vs_mean", "kl_sae", "eval_tokens",
)  # fmt: skip
"""The columns of `summary['eval']` (the `sae eval` table, eval/report.py)."""


def _eval_metrics(
    layout: paths.RunLayout, cfg: FeaturesConfig, key: str, names: list[str]
) -> dict[str, dict[str, Any]]:
    """name -> the eval stage's metrics.json, for the SAEs that have one."""
    out = {}
    for name in names:
        f = layout.eval(key, hook_dirname(cfg.hook)) / name / paths.METRICS
        if f.is_file():
            out[name] = read_json(f)
    return out


def _eval_table(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`summary['eval']`: one row per evaluated SAE, `{"dictionary": name, <EVAL_COLUMNS>...}`."""
    return [{"dictionary": name, **{c: m.get(c) for c in EVAL_COLUMNS}} for name, m in metrics.items()]


def write_dictionary(
    conn: sqlite3.Connection,
    d: passes.Records,
    model: str,
    path: logits.LogitPath | None,
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
        model=model,
        hook=cfg.hook,
        kind=d.kind,
        n_features=d.n_features,
        n_tokens=ctx.n_tokens,
        architecture=d.architecture,
        metrics=metrics,
    )
    logit_json: list[dict[str, Any] | None] = [None] * d.n_features  # None: no generic logit path
    if path is not None:
        logit_json = []
        for lo in range(0, d.n_features, 1024):
            w = logits.median_shift(path.effects(d.directions[lo : lo + 1024]), include)
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
