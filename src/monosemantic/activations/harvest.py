"""Harvest the activation dataset: a model's activations at one hook, sampled and shuffled (paper.md §2).

    run(RunLayout(Path("runs/demo")), "A", HarvestConfig())           # the stage
    harvest(model, split, model.hook_point(hook), ctx_len, cfg, out)   # the function it calls

[TM] appendix "Autoencoder Dataset": "evaluate the transformers on 40 million contexts ... collect
the MLP activation vectors after the ReLU ... sample activation vectors from 250 tokens in each
context and shuffle these together so that samples within a batch come from diverse contexts";
the SAE then samples "without replacement". Choices the paper leaves open (paper.md §2), made here:

- contexts are non-overlapping windows of `ctx_len` tokens cut from each shard of the training
  split (a window may span document boundaries, as the LM's training windows do), drawn in a
  seeded random order without replacement, so no context is used twice;
- the positions of a context are drawn uniformly without replacement (`positions_per_context`,
  clipped with a warning to `ctx_len` when the context is shorter);
- the global shuffle has two levels: contexts arrive in random order, and each shard of
  `shard_rows` rows is filled in a random row order, so one shard mixes about
  `shard_rows / positions_per_context` contexts; the reader (`store.py`) shuffles again across
  shards. Memory is bounded by two shard buffers (one filling while the other is written),
  whatever the corpus size.

On disk (`runs/<name>/activations/<model>/<hook>/`):

    config.json     kind monosemantic.activations: model, tokens, hook, d, dtype (storage), compute_dtype, n_rows,
                    shards [{acts, rows, n_rows}], ctx_len, positions_per_context, n_contexts,
                    seed, tokens_per_s, rows_per_s, seconds, config (the HarvestConfig)
    acts_0000.npy   float32 (or float16) [n_rows_0, d]: one activation vector per row
    rows_0000.npy   structured [n_rows_0], row i describing row i of acts_0000.npy:
                      doc      int64  index into the split's documents (tokens/train_docs.npy)
                      pos      int32  position in that document (0 is the document's EOT)
                      token    int32  token id at that position
                      ctx_pos  int32  position in the context window (the window starts
                                      ctx_pos tokens earlier), needed to recompute the row
    acts_0001.npy, rows_0001.npy, ...

The folder is built under a temporary name and renamed when complete (`io.stage_dir`), so an
interrupted harvest leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from monosemantic import distributed, paths, provenance
from monosemantic.activations import parallel
from monosemantic.activations.capture import capture
from monosemantic.activations.store import ACTS_FILE, KIND, ROW_DTYPE, ROWS_FILE
from monosemantic.data.tokens import TokenSplit, TokenStore
from monosemantic.errors import UserError
from monosemantic.io import read_config, save_npy, stage_dir, write_config
from monosemantic.runtime import autocast, check_dtype, check_subject_dtype, pick_device
from monosemantic.transformer import hooks
from monosemantic.transformer.subject import (
    ensure_tokens,
    hook_dirname,
    is_run_model,
    load_subject,
    subject_key,
    vocab_size,
)
from monosemantic.writers import lock_temporary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HarvestConfig:
    """Which activations to harvest, how many, and how they are stored (paper.md §2)."""

    hook: str = hooks.MLP_POST
    """Hook name to read (transformer/hooks.py); the paper's SAE input is the MLP after the ReLU (paper.md §1). For a
    Hugging Face model: MODULE.PATH[:input|:output], e.g. transformer.h.1.mlp.c_proj:input (GPT-2's neurons)."""
    n_tokens: int = 4_000_000
    """Activation rows to store, one per sampled token: 4M rows of 512 in float16 = 4.1 GB on disk (the demo's
    training split holds about 14M tokens, 57k contexts of 256)."""
    positions_per_context: int = 250
    """Positions sampled per context, uniformly without replacement ([TM]: 250). Clipped, with a
    warning, to the context length when contexts are shorter."""
    batch_contexts: int = 64
    """Contexts per forward pass."""
    store_dtype: Literal["float32", "float16"] = "float16"
    """Storage dtype. float16 (default) halves the disk (4M rows of 512 = 4.1 GB) at about 3 significant
    digits, far below an SAE's reconstruction error; float32 stores exactly what the model computed."""
    dtype: str = "float32"
    """Compute dtype of the forward passes: float32, or bfloat16 (autocast, runtime.autocast; faster on GPUs
    and on CPUs with AVX-512 BF16, the activations then carry bfloat16 rounding of the products)."""
    shard_rows: int = 131_072
    """Rows per shard file; also the harvest's shuffle buffer (256 MB at d 512 in float32)."""
    seed: int = 0
    """Seed of the context order, the sampled positions and the row shuffle."""
    device: str = "auto"
    """Device of the forward passes: auto (CUDA, then MPS, then CPU), cpu, cuda, mps."""
    subject_dtype: str = "float32"
    """The subject model's weight dtype: float32, bfloat16 or float16 (the weights themselves are cast, unlike
    --dtype's autocast; half the memory and the fastest forward on a GPU). The SAEs keep their own dtype."""
    device_map: str = ""
    """A Hugging Face subject larger than one device: accelerate's device_map (auto, balanced, sequential)
    spreads its layers over every GPU, then the CPU; empty puts the whole model on --device."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "positions_per_context", "batch_contexts", "shard_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.store_dtype not in ("float32", "float16"):
            raise ValueError(f"store_dtype must be float32 or float16, got {self.store_dtype!r}")
        check_dtype(self.dtype)
        check_subject_dtype(self.subject_dtype)


class _Contexts:
    """A split cut into non-overlapping windows of `ctx_len` tokens, numbered shard by shard."""

    def __init__(self, split: TokenSplit, ctx_len: int):
        self.split, self.ctx_len = split, ctx_len
        self.first = np.concatenate([[0], np.cumsum(split.shard_sizes // ctx_len)])  # first window of each shard
        self.n = int(self.first[-1])
        self.shard_offset = np.concatenate([[0], np.cumsum(split.shard_sizes)[:-1]])  # stream offset of each shard
        docs = split.docs
        self.doc_start = self.shard_offset[docs["shard"].astype(np.int64)] + docs["start"].astype(np.int64)
        if len(docs) == 0 or np.any(np.diff(self.doc_start) <= 0) or self.doc_start[0] != 0:
            raise UserError(f"{_name(split)}: the document index is not in stream order")

    def starts(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard and start offset in that shard of windows `k`."""
        shard = np.searchsorted(self.first, k, side="right") - 1
        return shard, (k - self.first[shard]) * self.ctx_len

    def tokens(self, k: np.ndarray) -> np.ndarray:
        """int64 [len(k), ctx_len]: the tokens of windows `k`."""
        shard, start = self.starts(k)
        out = np.empty((len(k), self.ctx_len), dtype=np.int64)
        for i, (s, b) in enumerate(zip(shard, start, strict=True)):
            out[i] = self.split.shards[s][b : b + self.ctx_len]
        return out

    def rows(self, k: np.ndarray, ctx_pos: np.ndarray, token: np.ndarray) -> np.ndarray:
        """The ROW_DTYPE index of the tokens at `ctx_pos` in windows `k` (arrays of one length)."""
        shard, start = self.starts(k)
        g = self.shard_offset[shard] + start + ctx_pos  # offset in the split's token stream
        doc = np.searchsorted(self.doc_start, g, side="right") - 1
        rows = np.empty(len(k), dtype=ROW_DTYPE)
        rows["doc"], rows["pos"], rows["token"], rows["ctx_pos"] = doc, g - self.doc_start[doc], token, ctx_pos
        return rows


class _ShardWriter:
    """Fills each shard in a random row order, then saves it: a shuffle buffer of one shard.

    Saving runs on a background thread while the next shard fills, so the forward passes never
    wait for the disk (writes of a few GB are throttled to disk speed, measured about 230 MB/s
    here, about a third of the harvest's time when written inline). Memory: two shard buffers.
    """

    def __init__(self, folder: Path, n_rows: int, shard_rows: int, dtype: str, rng: np.random.Generator):
        self.folder, self.dtype, self.rng = folder, np.dtype(dtype), rng
        self.sizes = [min(shard_rows, n_rows - i) for i in range(0, n_rows, shard_rows)]
        self.buffers: list[tuple[np.ndarray, np.ndarray]] = []  # allocated on use, when d is known
        self.shard, self.filled, self.slots = 0, 0, rng.permutation(self.sizes[0])
        self.written: list[dict[str, Any]] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harvest-writer")
        self.saving: Future[None] | None = None

    def add(self, acts: np.ndarray, rows: np.ndarray) -> None:
        i = 0
        while i < len(acts):
            if len(self.buffers) <= self.shard % 2:
                shape = (self.sizes[0], acts.shape[1])
                self.buffers.append((np.empty(shape, self.dtype), np.empty(self.sizes[0], ROW_DTYPE)))
            buf_acts, buf_rows = self.buffers[self.shard % 2]
            m = min(len(acts) - i, self.sizes[self.shard] - self.filled)
            slots = self.slots[self.filled : self.filled + m]
            buf_acts[slots], buf_rows[slots] = acts[i : i + m], rows[i : i + m]
            self.filled, i = self.filled + m, i + m
            if self.filled == self.sizes[self.shard]:
                self._flush()

    def _flush(self) -> None:
        size, names = self.sizes[self.shard], (ACTS_FILE.format(self.shard), ROWS_FILE.format(self.shard))
        buf_acts, buf_rows = self.buffers[self.shard % 2]
        self.wait()  # the other buffer's save is done, so the next shard may fill it
        self.saving = self.pool.submit(self._save, names, buf_acts[:size], buf_rows[:size])
        self.written.append({"acts": names[0], "rows": names[1], "n_rows": size})
        self.shard, self.filled = self.shard + 1, 0
        if self.shard < len(self.sizes):
            self.slots = self.rng.permutation(self.sizes[self.shard])

    def _save(self, names: tuple[str, str], acts: np.ndarray, rows: np.ndarray) -> None:
        save_npy(self.folder / names[0], acts)
        save_npy(self.folder / names[1], rows)

    def wait(self) -> None:
        """Wait for the save in flight, raising its error."""
        if self.saving is not None:
            saving, self.saving = self.saving, None
            saving.result()

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self.saving is not None:
                futures.wait([self.saving])  # already failing: let the write end before the folder goes
        finally:
            self.pool.shutdown()


def positions_per_context(cfg: HarvestConfig, ctx_len: int) -> int:
    """The configured positions per context, clipped (with a warning) to the context length."""
    if cfg.positions_per_context > ctx_len:
        log.warning(
            "positions_per_context %d > context length %d: taking all %d positions of each context",
            cfg.positions_per_context,
            ctx_len,
            ctx_len,
        )
        return ctx_len
    return cfg.positions_per_context


def harvest(
    model: nn.Module,
    split: TokenSplit,
    module: nn.Module,
    ctx_len: int,
    cfg: HarvestConfig,
    out: Path,
    progress: bool = True,
    force: bool = False,
    extra: Mapping[str, Any] | None = None,
    which: Literal["output", "input"] = "output",
    share: tuple[int, int] = (0, 1),
    inputs: provenance.Inputs | None = None,
) -> dict[str, Any]:
    """Write `cfg.n_tokens` activation rows of `module`'s output (or input) to the stage folder `out`.

    Args:
        model: called as `model(tokens int64 [batch, ctx_len])` on its own device, in its dtype.
        split: the token stream the contexts come from (the training split, as in [TM]).
        module: the submodule whose output is harvested (`model.hook_point(cfg.hook)`).
        ctx_len: tokens per context (the model's context length).
        extra: more entries for config.json (the model and tokens folders).
        which: read the module's "output" or its first positional "input" (`capture`).
        share: (rank, world size): harvest only this rank's disjoint share of the contexts
            (`distributed.shard_range` of the seeded context order) into `out`; positions and
            shard shuffles then draw from a generator seeded by (seed, rank). `harvest_sharded`
            merges the shares into one store.
        inputs: the model and tokens folders' stamps, recorded in `out/provenance.json`.

    Returns:
        The body of config.json (see the module docstring), with `tokens_per_s`: tokens run
        through the model per second, writing included.
    """
    ppc = positions_per_context(cfg, ctx_len)
    contexts = _Contexts(split, ctx_len)
    n_ctx = math.ceil(cfg.n_tokens / ppc)
    if n_ctx > contexts.n:
        raise UserError(
            f"{_name(split)}: {cfg.n_tokens:,} rows need {n_ctx:,} contexts of {ctx_len} tokens at {ppc} per context; "
            f"the split holds {contexts.n:,} ({contexts.n * ppc:,} rows)"
        )
    device = next(model.parameters(), torch.empty(0)).device
    rng = np.random.default_rng(cfg.seed)
    order = rng.choice(contexts.n, size=n_ctx, replace=False)  # without replacement: no context twice
    n_rows = cfg.n_tokens
    if share[1] > 1:  # this rank's contexts (a contiguous slice of the order) and their rows
        lo, hi = distributed.shard_range(n_ctx, *share)
        order, n_rows = order[lo:hi], min(cfg.n_tokens, hi * ppc) - lo * ppc
        rng = np.random.default_rng([cfg.seed, share[0]])
    log.info("harvest %s: %d rows from %d contexts of %d tokens -> %s", cfg.hook, cfg.n_tokens, n_ctx, ctx_len, out)
    model.eval()
    with stage_dir(out, force) as tmp, _ShardWriter(tmp, n_rows, cfg.shard_rows, cfg.store_dtype, rng) as writer:
        bar = tqdm(total=n_rows, desc="harvest", unit="row", unit_scale=True, disable=not progress)
        t0, done, d = time.perf_counter(), 0, 0
        for i in range(0, len(order), cfg.batch_contexts):
            k = order[i : i + cfg.batch_contexts]
            tokens = contexts.tokens(k)  # (B, T)
            # Uniform positions without replacement in each context (paper.md §2); the last batch stops at n_tokens.
            ctx_pos = rng.random((len(k), ctx_len)).argsort(axis=1)[:, :ppc]  # (B, ppc)
            ci = np.repeat(np.arange(len(k)), ppc)[: n_rows - done]
            p = ctx_pos.ravel()[: len(ci)]
            with torch.inference_mode(), autocast(device, cfg.dtype):
                acts = capture(model, torch.from_numpy(tokens).to(device), module, which)  # (B, T, d)
                a = _pick(acts, ci, p, cfg.store_dtype)  # (rows, d)
            if not np.isfinite(a).all():
                raise UserError(f"{out}: the model produced NaN/inf activations at {cfg.hook} (or float16 overflow)")
            writer.add(a, contexts.rows(k[ci], p, tokens[ci, p]))
            done, d = done + len(ci), a.shape[1]
            bar.update(len(ci))
        writer.wait()  # the last shard is on disk
        bar.close()
        seconds = time.perf_counter() - t0
        body = {
            **(extra or {}),
            "hook": cfg.hook,
            "d": d,
            "dtype": cfg.store_dtype,
            "compute_dtype": cfg.dtype,
            "n_rows": done,
            "shards": writer.written,
            "ctx_len": ctx_len,
            "positions_per_context": ppc,
            "n_contexts": len(order),
            "seed": cfg.seed,
            "tokens_per_s": len(order) * ctx_len / max(seconds, 1e-9),
            "rows_per_s": done / max(seconds, 1e-9),
            "seconds": seconds,
            "config": asdict(cfg),
        }
        write_config(tmp / paths.CONFIG, KIND, body)
        if inputs is not None:
            provenance.record(tmp, inputs)
    log.info("harvest: %.0f tokens/s, %.0f rows/s (%.1f s)", body["tokens_per_s"], body["rows_per_s"], seconds)
    return body


def harvest_sharded(
    model: nn.Module,
    split: TokenSplit,
    module: nn.Module,
    ctx_len: int,
    cfg: HarvestConfig,
    out: Path,
    progress: bool = True,
    force: bool = False,
    extra: Mapping[str, Any] | None = None,
    which: Literal["output", "input"] = "output",
    inputs: provenance.Inputs | None = None,
) -> dict[str, Any]:
    """`harvest` split across the ranks of the process group; every rank returns the merged config body.

    Each rank harvests its share into `parallel.rank_folder`, then rank 0 merges them (`parallel.merge`)."""
    rank, world = distributed.rank(), distributed.world_size()
    n_ctx = math.ceil(cfg.n_tokens / positions_per_context(cfg, ctx_len))
    if n_ctx < world:
        raise UserError(f"{out}: {n_ctx} contexts cannot be shared by {world} processes; harvest more rows")
    mine = parallel.rank_folder(out, rank)
    body = harvest(model, split, module, ctx_len, cfg, mine, progress and rank == 0, True, extra, which, (rank, world))
    held = lock_temporary(mine)  # until the merge: a sweep (rank 0's, in `merge`) removes only unheld ones
    try:
        bodies: list[Any] = [None] * world
        dist.all_gather_object(bodies, body)
        if rank == 0:
            parallel.merge(out, bodies, force, inputs)
        distributed.barrier()  # the store is complete
    finally:
        os.close(held)
    return read_config(out / paths.CONFIG, KIND)


def _pick(acts: torch.Tensor, ci: np.ndarray, p: np.ndarray, dtype: str) -> np.ndarray:
    """`acts (B, T, d)` at (context `ci`, position `p`) pairs -> NumPy `[len(ci), d]` in `dtype`."""
    if acts.dim() != 3:
        raise ValueError(f"expected activations [batch, pos, d], got shape {tuple(acts.shape)}")
    picked = acts[torch.from_numpy(ci).to(acts.device), torch.from_numpy(p).to(acts.device)]
    return picked.float().cpu().numpy().astype(dtype, copy=False)


def run(
    layout: paths.RunLayout,
    model_name: str = "A",
    cfg: HarvestConfig = HarvestConfig(),
    force: bool = False,
    progress: bool = True,
    ctx_len: int | None = None,
    tokens_cfg: Any = None,
) -> dict[str, Any]:
    """The stage: harvest model `model_name` at `cfg.hook` over the run's training tokens.

    `model_name` is a run model (`transformer/<name>/`) or a Hugging Face model, whose tokens are
    the run's corpus in its own tokenizer (`tokens-<key>/`, written first when missing; see
    `transformer/subject.py`). [TM] builds the SAE dataset from the transformer's training text,
    so the train split is used. Skips when `activations/<key>/<hook>/` is complete, unless `force`.
    """
    key = subject_key(layout, model_name)
    out = layout.activations(key, hook_dirname(cfg.hook))
    if provenance.reuse(out, _inputs(layout, model_name, key, out), force):
        log.info("%s exists: skipping (use --force to harvest again)", out)
        return read_config(out / paths.CONFIG, KIND)
    force = force or out.exists()  # built from another model or other tokens: redone
    device = str(pick_device(cfg.device))
    s = load_subject(layout, model_name, cfg.hook, device, ctx_len, cfg.subject_dtype, cfg.device_map)
    store = TokenStore(ensure_tokens(layout, s, tokens_cfg, progress))
    ins = _inputs(layout, model_name, key, out)  # the tokens of a Hugging Face model may be new
    vocab = vocab_size(s.model)
    if store.vocab_size > vocab:
        raise UserError(f"{store.folder}: vocabulary {store.vocab_size} is larger than the {vocab} of {s.source}")
    extra = {
        "model": s.source,
        "model_name": s.key,
        "tokens": str(store.folder),
        "split": "train",
        "which": s.site.which,
    }
    if distributed.is_enabled():  # under torchrun: each rank harvests its share of the contexts
        return harvest_sharded(
            s.model, store.train, s.site.module, s.ctx_len, cfg, out, progress, force, extra, s.site.which, ins
        )
    return harvest(
        s.model, store.train, s.site.module, s.ctx_len, cfg, out, progress, force, extra, s.site.which, inputs=ins
    )


def _inputs(layout: paths.RunLayout, model: str, key: str, out: Path) -> provenance.Inputs:
    """A run model's folder and the run's tokens; a Hugging Face model by name and its own tokens folder."""
    if is_run_model(layout, model):
        return provenance.inputs(out, [layout.transformer(model), layout.tokens], root=layout.root)
    return provenance.inputs(out, [layout.root / f"tokens-{key}"], external=[model], root=layout.root)


def _name(split: TokenSplit) -> str:
    """The split's folder, for messages."""
    return str(Path(str(split.shards[0].filename)).parent) if split.shards else "token split"
