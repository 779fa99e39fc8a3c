"""A feature database from arrays alone: token ids, their activations and SAEs, no run folder.

    path = build_from_arrays(token_ids, acts, {"topk-4096": sae}, tokenizer=tok, out="features.sqlite")
    server = monosemantic.browser.start(path)          # the browser over it, on a free port
    server.stop()

`token_ids [n_ctx, ctx_len]` (or a flat `[N]` stream, cut into contexts of `ctx_len`) and
`activations [n_ctx, ctx_len, d]` (or `[N, d]`, row i for token i) are what a notebook user has
after running a model with a hook. Each SAE encodes the activations; the same two passes as
`features build` (passes.py) fill the same tables: per-feature statistics, top examples,
interval samples, random samples and histograms, for every SAE and, unless `neurons=False`, for
the activations' own dimensions as the dictionary `neurons`. Without a model there are no logit
weights, no ablations and none of the later analyses: the browser shows what the arrays hold.

`tokenizer` turns ids into the text the browser shows: a `tokenizers.Tokenizer` (this project's
and Hugging Face's fast tokenizers), a `transformers` tokenizer (anything with
`convert_ids_to_tokens` and `decode`), a sequence of strings indexed by id, or None (ids shown as
`<id>`). The file appears whole or not at all (`io.atomic_path`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from monosemantic import __version__
from monosemantic.errors import UserError
from monosemantic.eval.activations import evaluate_on_activations
from monosemantic.features import db, passes, rows
from monosemantic.features.build import EVAL_COLUMNS, NEURONS, write_dictionary
from monosemantic.features.config import FeaturesConfig
from monosemantic.features.stream import Contexts
from monosemantic.io import atomic_path
from monosemantic.sae.model import SparseAutoencoder

log = logging.getLogger(__name__)

DEFAULT_CTX_LEN = 128
"""Context length a flat token stream is cut into."""


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """`passes.ActivationSource` over in-memory activations `[n_ctx, ctx_len, d]`."""

    acts: Tensor

    def activations(
        self, ctx: Contexts, lo: int, hi: int, saes: dict[str, SparseAutoencoder]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        acts = self.acts[lo:hi].float()
        flat = acts.reshape(-1, acts.shape[-1])
        with torch.inference_mode():
            feats = {name: sae.encode(flat).float().view(*acts.shape[:-1], -1) for name, sae in saes.items()}
        return acts, feats


def build_from_arrays(
    token_ids: Any,
    activations: Any,
    saes: Mapping[str, SparseAutoencoder] | Sequence[SparseAutoencoder] | SparseAutoencoder,
    tokenizer: Any = None,
    out: str | os.PathLike[str] = "features.sqlite",
    *,
    ctx_len: int | None = None,
    cfg: FeaturesConfig | None = None,
    neurons: bool = True,
    model: str = "arrays",
    hook: str = "activations",
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Write the feature database of `saes` on `activations` to `out`; returns its path.

    Args:
        token_ids: int `[n_ctx, ctx_len]`, or `[N]` cut into contexts of `ctx_len` (default 128; a
            shorter tail is dropped). A tensor, NumPy array or nested list.
        activations: float `[n_ctx, ctx_len, d]` or `[N, d]`, aligned with the token ids.
        saes: `{name: sae}`, a list (named `<architecture>-<n_features>`) or one SAE; each reads d dims.
        tokenizer: how ids become text (module docstring).
        out: the `.sqlite` file to write; an existing one is an error unless `force`.
        cfg: the record settings (`FeaturesConfig`: top_k, intervals, windows, ...); its `n_tokens`,
            `model`, `hook` and `neurons` are replaced by the arrays' and the arguments here.
        model, hook: the names the browser shows for the subject and the activation site (a hook name
            or MODULE.PATH, as `--hook` takes).
    Raises:
        UserError naming the problem for mismatched shapes, an empty input or an existing `out`.
    """
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out}: exists; pass force=True to replace it")
    tokens, acts = _contexts(token_ids, activations, ctx_len)
    named = _named(saes)
    n_ctx, T, d = acts.shape
    for name, sae in named.items():
        if sae.cfg.d_in != d:
            raise UserError(f"SAE {name}: reads {sae.cfg.d_in} dims, the activations have {d}")
    named = {name: sae.float().eval() for name, sae in named.items()}
    base = cfg or FeaturesConfig()
    try:
        cfg = dataclasses.replace(
            base, n_tokens=n_ctx * T, model=model, hook=hook, neurons=neurons, saes=tuple(named), analyses=()
        )
    except ValueError as e:
        raise UserError(f"build_from_arrays: {e}") from None
    ctx = Contexts(tokens, np.arange(n_ctx, dtype=np.int64) * T, np.zeros((n_ctx, T), np.int16), ("all",))
    vocab = vocabulary(tokenizer, int(tokens.max()) + 1)

    dicts = [passes.new_records(NEURONS, NEURONS, None, torch.eye(d), 1, cfg)] if neurons else []
    for name, sae in named.items():
        dicts.append(passes.new_records(name, "sae", sae.architecture, sae.W_dec.detach().float().cpu(), 1, cfg))
    log.info("features from arrays: %s tokens, %s", f"{ctx.n_tokens:,}", ", ".join(x.name for x in dicts))
    out.parent.mkdir(parents=True, exist_ok=True)
    passes.run_passes(dicts, ctx, ArraySource(acts), named, out.parent, cfg, progress, (0, n_ctx))
    evals = {name: _metrics(sae, acts) for name, sae in named.items()}

    with atomic_path(out) as tmp:
        tmp.unlink()  # db.create wants a fresh path
        conn = db.create(tmp)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # the whole file is the unit of atomicity
            for x in dicts:
                write_dictionary(conn, x, model, None, torch.ones(0), vocab, ctx, cfg, evals.get(x.name))
            summary = {"model": model, "n_tokens": ctx.n_tokens, "ln_inv_scale": None, "source": "arrays"}
            db.set_meta(conn, "features", {"config": dataclasses.asdict(cfg), **summary, "sources": list(ctx.sources)})
            db.set_meta(conn, "monosemantic_version", __version__)
            table = [{"dictionary": n, **{c: m.get(c) for c in EVAL_COLUMNS}} for n, m in evals.items()]
            db.set_summary(conn, "eval", table)
            conn.commit()
            db.finalize(conn)
        finally:
            conn.close()
    return out


def vocabulary(tokenizer: Any, size: int) -> list[str]:
    """Display strings for token ids 0 .. size−1 from any `tokenizer` the module docstring lists."""
    if tokenizer is None:
        return [f"<{i}>" for i in range(size)]
    if isinstance(tokenizer, Sequence) and not isinstance(tokenizer, str):
        if len(tokenizer) < size:
            raise UserError(f"tokenizer: {len(tokenizer)} strings for token ids up to {size - 1}")
        return [str(t) for t in tokenizer]
    ids = [[i] for i in range(size)]
    if hasattr(tokenizer, "decode_batch") and hasattr(tokenizer, "id_to_token"):  # tokenizers.Tokenizer
        return rows.display_tokens(
            tokenizer.decode_batch(ids, skip_special_tokens=False), [tokenizer.id_to_token(i) for i in range(size)]
        )
    if hasattr(tokenizer, "convert_ids_to_tokens") and hasattr(tokenizer, "decode"):  # transformers
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        return rows.display_tokens([tokenizer.decode(i) for i in ids], list(pieces))
    if callable(tokenizer):
        decode: Callable[[int], str] = tokenizer
        return [decode(i) for i in range(size)]
    raise UserError(f"tokenizer: a {type(tokenizer).__name__} is not a tokenizer, a list of strings or a function")


def _contexts(token_ids: Any, activations: Any, ctx_len: int | None) -> tuple[np.ndarray, Tensor]:
    """(tokens int64 `[n_ctx, T]`, activations float32 `[n_ctx, T, d]`), checked against each other."""
    tokens = np.asarray(token_ids.cpu() if isinstance(token_ids, Tensor) else token_ids)
    acts = activations if isinstance(activations, Tensor) else torch.as_tensor(np.asarray(activations))
    acts = acts.detach().cpu()
    if tokens.size == 0 or acts.numel() == 0:
        raise UserError("build_from_arrays: no tokens or no activations")
    if not np.issubdtype(tokens.dtype, np.integer) or tokens.min() < 0:
        raise UserError(f"build_from_arrays: token ids must be non-negative integers, got {tokens.dtype}")
    if not acts.is_floating_point():
        raise UserError(f"build_from_arrays: activations must be floating point, got {acts.dtype}")
    if tokens.ndim == 1:
        T = ctx_len or min(DEFAULT_CTX_LEN, len(tokens))
        n_ctx = len(tokens) // T
        tokens = tokens[: n_ctx * T].reshape(n_ctx, T)
        if acts.ndim == 2:
            acts = acts[: n_ctx * T]
    if tokens.ndim != 2:
        raise UserError(f"build_from_arrays: token ids of shape {tokens.shape}; expected [n_ctx, ctx_len] or [N]")
    n_ctx, T = tokens.shape
    if acts.ndim == 2 and acts.shape[0] == n_ctx * T:
        acts = acts.reshape(n_ctx, T, -1)
    if acts.ndim != 3 or tuple(acts.shape[:2]) != (n_ctx, T):
        raise UserError(
            f"build_from_arrays: activations of shape {tuple(acts.shape)} do not match token ids {tokens.shape}"
        )
    if not torch.isfinite(acts).all():
        raise UserError("build_from_arrays: NaN or inf in the activations")
    return tokens.astype(np.int64), acts.float()


def _named(saes: Any) -> dict[str, SparseAutoencoder]:
    if isinstance(saes, SparseAutoencoder):
        saes = [saes]
    if isinstance(saes, Mapping):
        named = dict(saes)
    else:
        named = {}
        for sae in saes:
            name = f"{sae.architecture}-{sae.cfg.n_features}"
            named[name if name not in named else f"{name}-{len(named)}"] = sae
    if not all(isinstance(s, SparseAutoencoder) for s in named.values()):
        raise UserError("build_from_arrays: saes must be SparseAutoencoder instances (monosemantic.sae)")
    return named


def _metrics(sae: SparseAutoencoder, acts: Tensor) -> dict[str, Any]:
    """The `sae eval` numbers the arrays allow (no model: no loss recovered)."""
    m = evaluate_on_activations(sae, acts.reshape(-1, acts.shape[-1]))
    return {**m, "eval_tokens": m["n_rows"]}
