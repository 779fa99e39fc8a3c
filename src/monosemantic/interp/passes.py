"""The passes of the build over the held-out contexts, and the spill that lets pass 2 skip the SAEs.

A batch of one dictionary is its non-zeros `(tok, feat, value)` (row-major order, `tok` counted
from the batch's first token) plus a way to read activation windows around chosen entries. Pass 1
gets them from the dense activations `[n_ctx, ctx_len, F]`; it also appends each SAE's non-zeros
to a temporary file (`Spill`, 12 bytes per non-zero), so pass 2 reads them back instead of
encoding again (the encoders are most of the build's compute; docs/LOG.md 2026-11-25). The
neurons are not spilled: they are dense-ish (~10 % active) and cheap to recompute with the forward.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from monosemantic.interp.records import sparse_entries, sparse_windows, windows_of
from monosemantic.interp.stream import Contexts, dictionary_activations
from monosemantic.runtime import autocast
from monosemantic.sae.model import SparseAutoencoder


@dataclass
class Batch:
    """One dictionary's non-zeros on contexts `first ... first + n_ctx - 1`."""

    first: int
    ctx_len: int
    tok: Tensor  # int64 [nnz], token index inside the batch
    feat: Tensor  # int64 [nnz]
    value: Tensor  # float32 [nnz]
    window: Callable[[Tensor], Tensor]  # sel [n] -> activations [n, width] around those entries

    @property
    def global_tok(self) -> Tensor:
        """Token index over all contexts: `row * ctx_len + pos`."""
        return self.tok + self.first * self.ctx_len

    def src(self, ctx: Contexts) -> Tensor:
        """Corpus source index of each entry's token."""
        n_ctx = int(self.tok.max()) // self.ctx_len + 1 if len(self.tok) else 0
        flat = ctx.src[self.first : self.first + n_ctx].reshape(-1).astype(np.int64)
        return torch.from_numpy(flat)[self.tok]


def dense_batch(f3: Tensor, first: int, before: int, after: int) -> Batch:
    """From activations `f3 [n_ctx, ctx_len, F]` (any device; entries come back on the CPU)."""
    _, T, F = f3.shape
    tok, feat, val = (t.cpu() for t in sparse_entries(f3.reshape(-1, F)))

    def window(sel: Tensor) -> Tensor:
        t = tok[sel].to(f3.device)
        return windows_of(f3, t // T, t % T, feat[sel].to(f3.device), before, after).cpu()

    return Batch(first, T, tok, feat, val, window)


def sparse_batch(
    tok: Tensor, feat: Tensor, val: Tensor, first: int, ctx_len: int, n_features: int, before: int, after: int
) -> Batch:
    """From non-zeros read back from a `Spill` (windows by binary search, no dense block)."""

    def window(sel: Tensor) -> Tensor:
        return sparse_windows(tok, feat, val, sel, ctx_len, n_features, before, after)

    return Batch(first, ctx_len, tok, feat, val, window)


class Spill:
    """Append-only files of each dictionary's non-zeros, read back in the same batch order.

    Lives in a temporary folder inside `parent` (removed by `close`, also on errors)."""

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self._dir = tempfile.TemporaryDirectory(prefix=".spill.", dir=parent)
        self.counts: dict[str, list[int]] = {}

    def _path(self, name: str) -> Path:
        return Path(self._dir.name) / f"{name}.bin"

    def write(self, name: str, b: Batch) -> None:
        with open(self._path(name), "ab") as f:
            b.tok.to(torch.int32).numpy().tofile(f)
            b.feat.to(torch.int32).numpy().tofile(f)
            b.value.float().numpy().tofile(f)
        self.counts.setdefault(name, []).append(len(b.tok))

    def read(self, name: str) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """`(tok, feat, value)` of each batch written, in order."""
        with open(self._path(name), "rb") as f:
            for n in self.counts.get(name, []):
                tok = torch.from_numpy(np.fromfile(f, np.int32, n).astype(np.int64))
                feat = torch.from_numpy(np.fromfile(f, np.int32, n).astype(np.int64))
                yield tok, feat, torch.from_numpy(np.fromfile(f, np.float32, n))

    def nbytes(self) -> int:
        return sum(os.path.getsize(self._path(n)) for n in self.counts)

    def close(self) -> None:
        self._dir.cleanup()


@dataclass(frozen=True)
class Forward:
    """What a pass runs per batch: the subject model to its hook, in a compute dtype."""

    model: nn.Module
    hook_module: nn.Module
    which: Literal["output", "input"] = "output"
    dtype: str = "float32"
    """runtime.autocast: bfloat16 runs the forward and the encoders under autocast."""


def stream(
    ctx: Contexts,
    forward: Forward | None,
    saes: dict[str, SparseAutoencoder],
    batch_size: int,
    progress: bool,
    desc: str,
    fn: Callable[[int, Tensor | None, dict[str, Tensor]], None],
    rows: tuple[int, int] | None = None,
) -> None:
    """One pass over the contexts in batches: `fn(first, neurons [n, T, d] | None, {sae: [n, T, F]})`.

    `rows` = (first, end) restricts the pass to those contexts (one rank's share under torchrun);
    `first` stays the global context index. With `forward=None` nothing is computed
    (`fn(first, None, {})`): pass 2 when every dictionary comes from the spill. The per-batch
    records run with one torch thread (see docs/LOG.md 2026-11-25: a second OpenMP thread only
    spin-waits on their small ops); the forward and the encoders keep every thread."""
    threads = torch.get_num_threads()
    first, end = rows or (0, len(ctx.tokens))
    total = (end - first) * ctx.tokens.shape[1]
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="tok", unit_scale=True)
    try:
        for lo, hi in ctx.batches(batch_size, (first, end)):
            acts, feats = None, {}
            if forward is not None:
                device = next(forward.model.parameters()).device
                tokens = torch.from_numpy(ctx.tokens[lo:hi]).to(device)
                f = forward
                with torch.inference_mode(), autocast(device, f.dtype):
                    acts, feats = dictionary_activations(f.model, f.hook_module, saes, tokens, f.which)
            torch.set_num_threads(1)
            fn(lo, acts, feats)
            torch.set_num_threads(threads)
            bar.update((hi - lo) * ctx.tokens.shape[1])
    finally:
        torch.set_num_threads(threads)
        bar.close()
