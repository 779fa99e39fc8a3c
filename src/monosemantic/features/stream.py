"""Held-out contexts and the activations of every dictionary on them: what each analysis reads.

    ctx = held_out_contexts(TokenStore(layout.tokens), ctx_len=256, n_tokens=1_000_000)
    for lo, hi in ctx.batches(64):
        neurons, feats = dictionary_activations(model, hooks.MLP_POST, saes, torch.from_numpy(ctx.tokens[lo:hi]))

Contexts are non-overlapping windows of the validation split (never seen in training), each
inside one shard, in stream order; `offsets` and `src` say where each token came from, so an
example can be re-run (ablations) and attributed to its corpus source.
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


def held_out_contexts(store: TokenStore, ctx_len: int, n_tokens: int) -> Contexts:
    """The first `n_tokens` (rounded down to whole contexts) of the validation split as contexts.

    Raises a UserError when the split holds less than one context.
    """
    split = store.val
    src_stream = _src_per_token(split)
    rows, offsets, srcs = [], [], []
    base, budget = 0, n_tokens
    for shard, size in zip(split.shards, split.shard_sizes, strict=True):
        for b in range(0, int(size) - ctx_len + 1, ctx_len):
            if budget < ctx_len:
                break
            rows.append(np.asarray(shard[b : b + ctx_len], dtype=np.int64))
            offsets.append(base + b)
            srcs.append(src_stream[base + b : base + b + ctx_len])
            budget -= ctx_len
        base += int(size)
    if not rows:
        raise UserError(f"{store.folder}: the validation split is shorter than one context of {ctx_len} tokens")
    return Contexts(np.stack(rows), np.array(offsets, dtype=np.int64), np.stack(srcs), tuple(store.sources))


def _src_per_token(split: TokenSplit) -> np.ndarray:
    """int16 [split.n_tokens]: the source index of every token of the concatenated stream."""
    out = np.zeros(split.n_tokens, dtype=np.int16)
    bases = np.concatenate([[0], np.cumsum(split.shard_sizes)[:-1]])
    for doc in split.docs:
        start = int(bases[int(doc["shard"])] + int(doc["start"]))
        out[start : start + int(doc["length"])] = int(doc["src"])
    return out


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
    acts = capture(model, tokens, hook_module, which).float()
    flat = acts.reshape(-1, acts.shape[-1])
    feats = {name: sae.encode(flat).float().view(*acts.shape[:-1], -1) for name, sae in saes.items()}
    return acts, feats
