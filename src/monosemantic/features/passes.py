"""The passes of the build over the held-out contexts, and the spill that lets pass 2 skip the SAEs.

A batch of one dictionary is its non-zeros `(tok, feat, value)` (row-major order, `tok` counted
from the batch's first token) plus a way to read activation windows around chosen entries. Pass 1
gets them from the dense activations `[n_ctx, ctx_len, F]`; it also appends each SAE's non-zeros
to a temporary file (`Spill`, 12 bytes per non-zero), so pass 2 reads them back instead of
encoding again (the encoders are most of the build's compute; docs/decisions.md 2026-11-25). The
neurons are not spilled: they are dense-ish (~10 % active) and cheap to recompute with the forward.

`run_passes` runs both passes for every dictionary's `Records` over this process's contexts
(`my_contexts`: all of them, or one torchrun rank's share in whole batches) and merges each
pass's records over the ranks (merge.py).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from monosemantic import distributed
from monosemantic.features import merge
from monosemantic.features.config import FeaturesConfig
from monosemantic.features.records import (
    BottomK,
    Samples,
    Stats,
    hist_edges,
    sparse_entries,
    sparse_windows,
    windows_of,
)
from monosemantic.features.stream import Contexts, dictionary_activations
from monosemantic.runtime import autocast
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.writers import temporary_folder


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


def _activations(d: Records, acts: Tensor | None, feats: dict[str, Tensor]) -> Tensor:
    """One dictionary's activations in a batch: the neurons' come from the forward, an SAE's from its encoder."""
    if d.kind == "neurons":
        assert acts is not None  # neurons are recorded only when the pass runs the forward
        return acts
    return feats[d.name]


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

    Lives in a temporary folder inside `parent` (removed by `close`, also on errors; one a killed
    build left is swept by the next writer of the run, writers.py)."""

    def __init__(self, parent: Path) -> None:
        self._scope = contextlib.ExitStack()
        self._dir = self._scope.enter_context(temporary_folder(parent, "spill"))
        self.counts: dict[str, list[int]] = {}

    def _path(self, name: str) -> Path:
        return self._dir / f"{name}.bin"

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
        self._scope.close()


class ActivationSource(Protocol):
    """Where a pass gets a batch's activations: a model's forward (`Forward`), or arrays (`features/arrays.py`)."""

    def activations(
        self, ctx: Contexts, lo: int, hi: int, saes: dict[str, SparseAutoencoder]
    ) -> tuple[Tensor, dict[str, Tensor]]: ...  # contexts lo..hi-1: (neurons [n, T, d], {sae: [n, T, F]})


@dataclass(frozen=True)
class Forward:
    """What a pass runs per batch: the subject model to its hook, in a compute dtype."""

    model: nn.Module
    hook_module: nn.Module
    which: Literal["output", "input"] = "output"
    dtype: str = "float32"
    """runtime.autocast: bfloat16 runs the forward and the encoders under autocast."""

    def activations(
        self, ctx: Contexts, lo: int, hi: int, saes: dict[str, SparseAutoencoder]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The model's activations at the hook on contexts `lo..hi-1`, and each SAE's features on them."""
        device = next(self.model.parameters()).device
        tokens = torch.from_numpy(ctx.tokens[lo:hi]).to(device)
        with torch.inference_mode(), autocast(device, self.dtype):
            return dictionary_activations(self.model, self.hook_module, saes, tokens, self.which)


def stream(
    ctx: Contexts,
    forward: ActivationSource | None,
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
    records run with one torch thread (see docs/decisions.md 2026-11-25: a second OpenMP thread only
    spin-waits on their small ops); the forward and the encoders keep every thread."""
    threads = torch.get_num_threads()
    first, end = rows or (0, len(ctx.tokens))
    total = (end - first) * ctx.tokens.shape[1]
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="tok", unit_scale=True)
    try:
        for lo, hi in ctx.batches(batch_size, (first, end)):
            acts: Tensor | None = None
            feats: dict[str, Tensor] = {}
            if forward is not None:
                acts, feats = forward.activations(ctx, lo, hi, saes)
            torch.set_num_threads(1)
            fn(lo, acts, feats)
            torch.set_num_threads(threads)
            bar.update((hi - lo) * ctx.tokens.shape[1])
    finally:
        torch.set_num_threads(threads)
        bar.close()


@dataclass
class Records:
    """One dictionary (an SAE, or the neurons) while the database is built: its records from both passes."""

    name: str
    kind: str
    architecture: str | None
    n_features: int
    directions: Tensor  # [n_features, d_mlp] decoder rows (the identity for neurons)
    stats: Stats
    top: BottomK
    samples: Samples | None = None


def my_contexts(n_ctx: int, batch_size: int) -> tuple[int, int]:
    """This rank's contexts `[lo, hi)`: whole batches of a one-process build (`distributed.shard_range`
    over the batches), so that every batch, and with it every activation, is the one-process one."""
    lo, hi = distributed.shard_range(math.ceil(n_ctx / batch_size))
    return min(lo * batch_size, n_ctx), min(hi * batch_size, n_ctx)


def run_passes(
    dicts: list[Records],
    ctx: Contexts,
    forward: ActivationSource,
    saes: dict[str, SparseAutoencoder],
    spill_dir: Path,
    cfg: FeaturesConfig,
    progress: bool,
    share: tuple[int, int],
) -> float:
    """Pass 1 (stats, top-k) and pass 2 (histogram, samples) over the contexts `share` into `dicts`,
    each merged over the ranks (merge.py); returns this rank's spill's MB."""
    b, a = cfg.window_before, cfg.window_after
    spill = Spill(spill_dir) if cfg.spill and saes else None
    try:

        def stats_pass(first: int, acts: Tensor | None, feats: dict[str, Tensor]) -> None:
            for d in dicts:
                batch = dense_batch(_activations(d, acts, feats), first, b, a)
                d.stats.add(batch.feat, batch.value, batch.src(ctx))
                d.top.offer(batch.feat, -batch.value.double(), batch.global_tok, batch.value, batch.window)
                if spill is not None and d.kind == "sae":
                    spill.write(d.name, batch)

        desc = "features pass 1/2 (stats, top-k)"
        stream(ctx, forward, saes, cfg.batch_size, progress, desc, stats_pass, share)
        merge.merge_stats_([d.stats for d in dicts])  # every rank needs the global max for pass 2
        for d in dicts:
            d.top = merge.merge_keeper(d.top)
            d.samples = _samples(d, cfg)
        spilled = {d.name: spill.read(d.name) for d in dicts if d.kind == "sae"} if spill is not None else {}
        T = ctx.tokens.shape[1]

        def sample_pass(first: int, acts: Tensor | None, feats: dict[str, Tensor]) -> None:
            for d in dicts:
                if d.name in spilled:
                    tok, feat, val = next(spilled[d.name])
                    batch = sparse_batch(tok, feat, val, first, T, d.n_features, b, a)
                else:
                    batch = dense_batch(_activations(d, acts, feats), first, b, a)
                assert d.samples is not None
                d.samples.add(batch.global_tok, batch.feat, batch.value, d.stats.max, batch.window)

        # Pass 2 runs the forward only for the neurons, and the encoders only without a spill.
        again = forward if cfg.neurons or spill is None else None
        desc = "features pass 2/2 (intervals, samples)"
        stream(ctx, again, {} if spill is not None else saes, cfg.batch_size, progress, desc, sample_pass, share)
        for d in dicts:
            assert d.samples is not None
            merge.merge_samples_(d.samples)
        return spill.nbytes() / 1e6 if spill is not None else 0.0
    finally:
        if spill is not None:
            spill.close()


def _samples(d: Records, cfg: FeaturesConfig) -> Samples:
    """Empty pass-2 records of `d`, with histogram edges from its pass-1 extremes."""
    return Samples(
        edges=hist_edges(d.stats.min_nonzero, d.stats.max, cfg.hist_bins, cfg.hist_decades),
        hist=torch.zeros(d.n_features, cfg.hist_bins, dtype=torch.int64),
        interval_count=torch.zeros(d.n_features, cfg.n_intervals, dtype=torch.int64),
        intervals=BottomK(d.n_features * cfg.n_intervals, cfg.interval_samples, cfg.width),
        random=BottomK(d.n_features, cfg.random_samples, cfg.width),
        seed=cfg.seed,
    )


def new_records(name: str, kind: str, arch: str | None, directions: Tensor, n_src: int, cfg: FeaturesConfig) -> Records:
    n = directions.shape[0]
    return Records(name, kind, arch, n, directions, Stats.zeros(n, n_src), BottomK(n, cfg.top_k, cfg.width))
