"""The paper's "finite state automata" view (paper.md §8.13): which features a feature feeds.

A feature's logit effect says which next tokens it upweights; another feature's top tokens say
where that one fires. Feature i feeds feature j when i upweights the tokens j fires on most:

    ℓ_i      = logit effect of i, shifted so its median over the vocabulary is 0      [vocab]
    p_j(v)   = share of j's top examples' max activation that falls on token v       [vocab]
    w(i → j) = Σ_v p_j(v) ℓ_i[v]        (in logits: how much i raises j's tokens, on average)

For each feature the `n_links` targets with the largest w go into `logit_links` (self-loops
included: the paper's base64 feature upweights its own tokens). Chains such as the paper's HTML
open-tag → tag-name → tag-close → whitespace can then be followed link by link.

`logit_effects` is the paper's path expansion (paper.md §8.3, "logit weights"), the same
function the core build uses for `features.logit_json` (`interp/logits.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from monosemantic.analyses.loader import Dictionary
from monosemantic.data.tokens import TokenStore
from monosemantic.features import db, logits
from monosemantic.features.stream import held_out_contexts
from monosemantic.paths import RunLayout
from monosemantic.transformer.model import Transformer, load_transformer
from monosemantic.transformer.subject import ensure_tokens, is_run_model, load_subject


def logit_effects(W_dec: Tensor, W_out: Tensor, ln_gain: Tensor, inv_sigma: float, W_U: Tensor) -> Tensor:
    """Each direction's logit weights `[n, vocab]` (`logits.logit_effects`: W_dec `[n, d_mlp]`, W_out
    `[d_mlp, d_model]`, ln_gain `[d_model]`, W_U `[d_model, vocab]`), each row shifted to median 0
    over the whole vocabulary (paper.md §8; every token counts here, rare ones too: they are targets)."""
    raw = logits.logit_effects(W_dec.float(), W_out.float(), ln_gain.float(), inv_sigma, W_U.float())
    return logits.median_shift(raw, torch.ones(raw.shape[1], dtype=torch.bool))


def mean_inv_sigma(model: Transformer, tokens: Tensor) -> float:
    """Mean over `tokens [B, T]` of 1/σ of the residual stream that ln_f normalises (`logits.ln_inv_scale`)."""
    return logits.ln_inv_scale(model, tokens)


def target_tokens(conn: sqlite3.Connection, dictionary_id: int, stream: np.ndarray, vocab: int, n: int) -> Tensor:
    """`p_j(v)` for every feature j: sparse `[n, vocab]`, from the max tokens of its top examples.

    `stream` is the validation token stream; an example's max token is `stream[ctx_offset + ctx_pos]`
    (token ids, exact, unlike the decoded `top_tokens` text). Rows of features with no examples are 0.
    """
    rows = np.array(
        conn.execute(
            "SELECT feature, ctx_offset + ctx_pos, max_act FROM examples WHERE dictionary_id = ? AND kind = 'top'",
            (dictionary_id,),
        ).fetchall(),
        dtype=np.float64,
    ).reshape(-1, 3)
    feats, where, w = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), np.maximum(rows[:, 2], 0)
    total = np.bincount(feats, weights=w, minlength=n)
    share = np.divide(w, total[feats], out=np.zeros_like(w), where=total[feats] > 0)
    idx = torch.from_numpy(np.stack([feats, stream[where]]))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(share).float(), (n, vocab), check_invariants=True).coalesce()


def link_weights(effects: Tensor, targets: Tensor) -> Tensor:
    """`w(i → j)` `[n_sources, n_targets]` from `effects [n_sources, vocab]` and sparse `targets [n_targets, vocab]`."""
    return torch.sparse.mm(targets, effects.T).T


def top_links(weights: Tensor, has_target: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The `k` largest weights of each row among columns with `has_target`: (values, indices) `[n, k']`."""
    masked = weights.masked_fill(~has_target[None, :], float("-inf"))
    k = min(k, int(has_target.sum()))
    return torch.topk(masked, k, dim=1)


def run_automata(
    conn: sqlite3.Connection,
    layout: RunLayout,
    model_name: str,
    dicts: list[Dictionary],
    n_links: int,
    progress: bool = True,
    hook: str = "",
) -> int:
    """`logit_links` for each dictionary (targets in the same dictionary); returns the row count.

    A Hugging Face subject (`model_name` a path or hf:NAME, with its `hook`) takes the direct path of
    `logits.logit_path` (its hooked activation's map into the residual stream, the final norm, the
    unembedding; later layers left out), and is skipped where that path is not found."""
    if not is_run_model(layout, model_name):
        return _run_automata_hf(conn, layout, model_name, hook, dicts, n_links, progress)
    model = load_transformer(layout.transformer(model_name)).eval()
    store = TokenStore(layout.tokens)
    ctx = held_out_contexts(store, model.cfg.ctx_len, 16 * model.cfg.ctx_len)
    with torch.inference_mode():
        inv_sigma = mean_inv_sigma(model, torch.from_numpy(ctx.tokens))
    mlp = model.block(0).mlp

    def effects(W_dec: Tensor) -> Tensor:
        return logit_effects(W_dec, mlp.W_out.detach(), model.ln_f.weight.detach(), inv_sigma, model.W_U.detach())

    return _write_links(conn, store, dicts, effects, model.cfg.vocab_size, n_links, progress)


def _run_automata_hf(
    conn: sqlite3.Connection, layout: RunLayout, spec: str, hook: str, dicts: list[Dictionary], n_links: int,
    progress: bool,
) -> int:  # fmt: skip
    s = load_subject(layout, spec, hook)
    store = TokenStore(ensure_tokens(layout, s, progress=progress))
    ctx = held_out_contexts(store, s.ctx_len, 16 * s.ctx_len)
    d = dicts[0].W_dec.shape[1] if dicts else 0
    with torch.inference_mode():
        path = logits.logit_path(s.model, s.site, d, torch.from_numpy(ctx.tokens), store.vocab_size)
    if path is None:
        return 0  # logit_path said why

    def effects(W_dec: Tensor) -> Tensor:
        raw = path.effects(W_dec.float())
        return logits.median_shift(raw, torch.ones(raw.shape[1], dtype=torch.bool))

    return _write_links(conn, store, dicts, effects, store.vocab_size, n_links, progress)


def _write_links(
    conn: sqlite3.Connection,
    store: TokenStore,
    dicts: list[Dictionary],
    effects: Callable[[Tensor], Tensor],
    vocab: int,
    n_links: int,
    progress: bool,
) -> int:
    """The `logit_links` rows of every dictionary, from `effects(W_dec) -> [n, vocab]` median-shifted weights."""
    stream = store.val.all_tokens()  # the offsets' frame: shards concatenated
    n_rows = 0
    for d in tqdm(dicts, desc="automata", disable=not progress):
        conn.execute("DELETE FROM logit_links WHERE dictionary_id = ?", (d.id,))
        targets = target_tokens(conn, d.id, stream, vocab, d.n_features)
        has_target = torch.zeros(d.n_features, dtype=torch.bool)
        has_target[targets.indices()[0]] = True
        alive = [
            r[0] for r in conn.execute("SELECT feature FROM features WHERE dictionary_id = ? AND n_active > 0", (d.id,))
        ]
        if not alive or not has_target.any():
            continue
        src = torch.tensor(sorted(alive))
        with torch.inference_mode():
            values, idx = top_links(link_weights(effects(d.W_dec[src]), targets), has_target, n_links)
        rows = (
            {
                "dictionary_id": d.id,
                "feature": int(src[s]),
                "rank": r,
                "target_feature": int(idx[s, r]),
                "weight": round(float(values[s, r]), 5),
            }
            for s in range(len(src))
            for r in range(idx.shape[1])
        )
        n_rows += db.insert_rows(conn, "logit_links", rows)
    conn.commit()
    return n_rows
