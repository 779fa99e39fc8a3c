"""Held-out contexts and the activations of every dictionary on them: what each analysis reads.

    ctx = held_out_contexts(TokenStore(layout.tokens), ctx_len=256, n_tokens=1_000_000)
    for lo, hi in ctx.batches(64):
        neurons, feats = dictionary_activations(model, hooks.MLP_POST, saes, torch.from_numpy(ctx.tokens[lo:hi]))

Contexts are non-overlapping windows of the validation split (never seen in training), each
inside one shard, on a grid of `ctx_len` from each shard's start; `offsets` and `src` say where
each token came from, so an example can be re-run (ablations) and attributed to its corpus source.
By default they are spread evenly over the whole split (`order="spread"`): the split is many
documents from many sources, and its first tokens are a few whole documents, so a rare source
(Hebrew is a few tokens in a thousand) may be missing from them altogether. `order="stream"`
takes the first windows instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from monosemantic.activations.capture import capture
from monosemantic.data.tokens import TokenSplit, TokenStore
from monosemantic.errors import UserError
from monosemantic.sae.model import SparseAutoencoder


@dataclass(frozen=True)
class Contexts:
    """`n` contexts of `ctx_len` held-out tokens."""

    tokens: np.ndarray
    """int64 [n, ctx_len] token ids."""
    offsets: np.ndarray
    """int64 [n]: offset of each context's first token in the validation stream (shards concatenated)."""
    src: np.ndarray
    """int16 [n, ctx_len]: index of each token's corpus source in `sources`."""
    sources: tuple[str, ...]
    """Source names (the tokens folder's `sources`)."""

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def batches(self, batch_size: int, rows: tuple[int, int] | None = None) -> Iterator[tuple[int, int]]:
        """`(lo, hi)` row ranges of at most `batch_size` contexts, in order (of `rows` = (first, end) only)."""
        first, end = rows or (0, len(self.tokens))
        for lo in range(first, end, batch_size):
            yield lo, min(lo + batch_size, end)


def held_out_contexts(
    store: TokenStore, ctx_len: int, n_tokens: int, order: Literal["spread", "stream"] = "spread"
) -> Contexts:
    """`n_tokens` of the validation split (rounded down to whole contexts) as contexts, in stream order.

    `order="spread"`: contexts evenly strided over every window of the split (`context_offsets`),
    the first and the last window included, so the sample follows the split's mix of documents and
    sources; `"stream"`: the first windows. Both are deterministic; when the split holds fewer
    windows than asked for, both give all of them. Raises a UserError when the split holds less
    than one context.
    """
    grid = context_offsets(store.val, ctx_len)
    if len(grid) == 0:
        raise UserError(f"{store.folder}: the validation split is shorter than one context of {ctx_len} tokens")
    k = min(max(n_tokens // ctx_len, 0), len(grid))
    if order == "spread" and 1 < k < len(grid):
        # k evenly spaced indices from 0 to len(grid) - 1: the spacing is >= 1, so rounding keeps them distinct.
        picked = grid[np.round(np.linspace(0, len(grid) - 1, k)).astype(np.int64)]
    elif order in ("spread", "stream"):
        picked = grid[:k]
    else:
        raise ValueError(f"order must be 'spread' or 'stream', got {order!r}")
    if len(picked) == 0:
        raise UserError(f"held-out contexts: {n_tokens} tokens is less than one context of {ctx_len}")
    return contexts_at(store, ctx_len, picked)


def context_offsets(split: TokenSplit, ctx_len: int) -> np.ndarray:
    """int64 [n]: the offset (in the concatenated stream) of every window of `ctx_len` tokens that
    starts at a multiple of `ctx_len` from its shard's start and ends inside the shard."""
    bases = np.concatenate([[0], np.cumsum(split.shard_sizes)[:-1]]).astype(np.int64)
    per_shard = [base + np.arange(0, int(size) - ctx_len + 1, ctx_len, dtype=np.int64)
                 for base, size in zip(bases, split.shard_sizes, strict=True)]  # fmt: skip
    return np.concatenate(per_shard) if per_shard else np.zeros(0, dtype=np.int64)


def contexts_at(store: TokenStore, ctx_len: int, offsets: np.ndarray) -> Contexts:
    """The validation windows of `ctx_len` tokens starting at `offsets` (each inside one shard)."""
    split = store.val
    bases = np.concatenate([[0], np.cumsum(split.shard_sizes)]).astype(np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    shard = np.searchsorted(bases, offsets, side="right") - 1
    if len(offsets) and (shard.max() >= len(split.shards) or np.any(offsets + ctx_len > bases[shard + 1])):
        raise ValueError("contexts_at: a window runs past the end of its shard")
    rows = np.empty((len(offsets), ctx_len), dtype=np.int64)
    for i, (s, off) in enumerate(zip(shard, offsets, strict=True)):
        local = int(off - bases[s])
        rows[i] = split.shards[s][local : local + ctx_len]
    return Contexts(rows, offsets, _sources_at(split, offsets, ctx_len), tuple(store.sources))


def _sources_at(split: TokenSplit, offsets: np.ndarray, ctx_len: int) -> np.ndarray:
    """int16 [len(offsets), ctx_len]: the source index of each token of each window (0 outside documents).

    A token belongs to the last document starting at or before it, if that document reaches it.
    """
    bases = np.concatenate([[0], np.cumsum(split.shard_sizes)[:-1]]).astype(np.int64)
    docs = split.docs
    starts = bases[docs["shard"].astype(np.int64)] + docs["start"].astype(np.int64)
    order = np.argsort(starts, kind="stable")
    starts, ends, src = starts[order], starts[order] + docs["length"][order].astype(np.int64), docs["src"][order]
    pos = offsets[:, None] + np.arange(ctx_len, dtype=np.int64)  # [n, ctx_len]
    doc = np.searchsorted(starts, pos, side="right") - 1
    inside = (doc >= 0) & (pos < ends[np.maximum(doc, 0)])
    return np.where(inside, src[np.maximum(doc, 0)], 0).astype(np.int16)


@torch.inference_mode()
def dictionary_activations(
    model: nn.Module,
    hook_module: nn.Module,
    saes: Mapping[str, SparseAutoencoder],
    tokens: Tensor,
    which: Literal["output", "input"] = "output",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Neuron activations `[B, T, d]` at `hook_module` (its output, or its input) and each SAE's
    features `[B, T, n]` on them, float32 (also under bfloat16 autocast).

    The forward stops at the hook (`activations.capture`). SAEs map raw activations (a saved SAE
    has any input normalisation folded into its weights, `sae/normalize.py`).
    """
    acts = capture(model, tokens, hook_module, which).float()  # float32 whatever the subject's weights
    flat = acts.reshape(-1, acts.shape[-1])
    feats = {}
    for name, sae in saes.items():  # an SAE's device, where --device-map put the hooked layer elsewhere
        x = flat.to(next(sae.parameters()).device)
        feats[name] = sae.encode(x).float().view(*acts.shape[:-1], -1)
    return acts, feats
