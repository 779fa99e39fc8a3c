"""Train the one-layer transformer: `train_transformer(model, tokens, cfg)` and the stage `run`.

The loop has nanoGPT's shape: learning rate for the step, forward, backward, clip, step; then,
once in a while, validate, log and checkpoint. [TM] says only "Adam"; the rest (AdamW with
linear warm-up and cosine decay to 10 %, clipping at 1.0, weight decay 0.1 on matrices) is the
usual GPT recipe, recorded in docs/decisions.md (2026-11-25).

Run as a stage: `monosemantic lm train --run runs/demo --model A --seed 0`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from monosemantic import distributed, paths, provenance
from monosemantic.checkpoint import read_meta as read_checkpoint_meta
from monosemantic.data import ngram
from monosemantic.data.tokens import TokenSplit, TokenStore
from monosemantic.errors import UserError
from monosemantic.io import (
    read_config,
    save_tensors,
    stage_dir,
    write_config,
    write_json,
)
from monosemantic.runtime import autocast, check_dtype, pick_device, resolve_dtype, seed_everything
from monosemantic.transformer.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from monosemantic.transformer.model import KIND, Transformer, TransformerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMTrainConfig:
    """How the subject model is trained; the defaults fit the demo's 10-minute CPU budget."""

    n_steps: int = 1500
    """Optimizer steps; tokens seen = n_steps * batch_size * ctx_len (12.3M by default, ~8 min on 2 cores)."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    min_lr_frac: float = 0.1
    """The cosine schedule decays to lr * min_lr_frac."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to matrices only (not to biases, gains or embeddings)."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    seed: int = 0
    """Seeds the weight initialisation, and the data order unless `data_seed` is set."""
    data_seed: int | None = None
    """Seeds the data order (which training windows each step reads); None: `seed`. Model B of the demo
    takes both seeds + 1, so it differs from A in its initialisation and in the order it reads the data."""
    eval_every: int = 250
    """Validate every this many steps (and at the end)."""
    eval_tokens: int = 65_536
    """Validation tokens scored at each validation step; the final evaluation scores 16x this."""
    checkpoint_every: int = 250
    """Save a crash-safe checkpoint every this many steps."""
    device: str = "auto"
    """cpu, cuda, mps, or auto."""
    dtype: str = "auto"
    """Compute dtype for training: bfloat16 autocast (weights and Adam stay float32; 1.5x the tokens/s of
    float32 on CPUs with AVX-512 BF16, 30x slower where bfloat16 is emulated), float32, or auto: bfloat16 where
    the device has it natively (`runtime.native_bf16`), else float32. The final validation loss is always
    float32."""

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "eval_every", "eval_tokens", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        check_dtype(self.dtype, auto=True)

    @property
    def order_seed(self) -> int:
        """The seed of the data order: `data_seed`, or `seed` when it is None."""
        return self.seed if self.data_seed is None else self.data_seed


@dataclass
class TrainResult:
    step: int
    train_loss: float
    val_loss: float
    tokens_per_s: float
    seconds: float
    log: list[dict] = field(default_factory=list)


def get_lr(step: int, cfg: LMTrainConfig) -> float:
    # 1) linear warm-up, 2) cosine decay to min_lr_frac * lr at the last step
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.n_steps - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * coeff)


def batch_for_step(split: TokenSplit, seed: int, step: int, batch_size: int, length: int) -> torch.Tensor:
    """The training batch of `step`: a pure function of (seed, step), so resuming needs only the step."""
    rng = np.random.default_rng([seed, step])
    return torch.from_numpy(split.sample_windows(rng, batch_size, length))


def make_optimizer(model: Transformer, cfg: LMTrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith(("W_E", "W_pos"))]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


@torch.no_grad()
def evaluate(model: Transformer, windows: torch.Tensor, batch_size: int, dtype: str) -> float:
    """Mean next-token loss (nats) over `windows [n, ctx+1]`, every target weighted equally."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size].to(device)
        with autocast(device, dtype):
            total += model.loss(w).item() * len(w)
    model.train()
    return total / len(windows)


def train_transformer(
    model: Transformer,
    store: TokenStore,
    cfg: LMTrainConfig,
    ckpt_dir: Path | None = None,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    ckpt_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` in place on `store.train`, validating on `store.val`.

    With `ckpt_dir`, saves a checkpoint every `cfg.checkpoint_every` steps and resumes from the
    one it finds there (the result then equals an uninterrupted run's). `ckpt_meta` is stored in
    each checkpoint and must match on resume (the run stores its tokens' stamp there).

    Data parallel under torchrun (`monosemantic.distributed`): every rank draws the same global
    batch, computes on its own slice of sequences, and the gradients are averaged before clipping
    and the step; only rank 0 saves checkpoints and shows progress.
    """
    device = next(model.parameters()).device
    dtype = resolve_dtype(cfg.dtype, device)
    log.info("lm train: %s compute on %s", dtype, device)
    length = model.cfg.ctx_len + 1
    val = torch.from_numpy(store.val.windows(length, cfg.eval_tokens))
    opt = make_optimizer(model, cfg)
    step, history = 0, []
    if ckpt_dir is not None and has_checkpoint(ckpt_dir):
        expected = {"train_config": asdict(cfg), "model_config": model.cfg.to_dict(), **(ckpt_meta or {})}
        meta = load_checkpoint(ckpt_dir, model, opt, expected)
        step, history = meta["step"], meta["history"]
        log.info("resuming from step %d (%s)", step, ckpt_dir)

    progress = progress and distributed.is_main()
    bar = tqdm(total=cfg.n_steps, initial=step, desc="lm train", unit="step", disable=not progress)
    t0, start_step, loss = time.perf_counter(), step, float("nan")
    while step < cfg.n_steps:
        for group in opt.param_groups:
            group["lr"] = get_lr(step, cfg)
        batch = batch_for_step(store.train, cfg.order_seed, step, cfg.batch_size, length)
        x = distributed.shard(batch).to(device)  # this rank's sequences (all of them in one process)
        with autocast(device, dtype):  # bfloat16: autocast, float32 weights and Adam (runtime.py)
            loss_t = model.loss(x)
        loss_t.backward()
        distributed.average_grads_(model.parameters(), x.shape[0] / batch.shape[0])
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss = loss_t.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

        # once in a while: validate and log, then checkpoint
        if step % cfg.eval_every == 0 or step == cfg.n_steps:
            row = {
                "step": step,
                "train_loss": loss,
                "val_loss": evaluate(model, val, cfg.batch_size, dtype),
                "lr": get_lr(step - 1, cfg),
                "tokens": step * cfg.batch_size * model.cfg.ctx_len,
            }
            history.append(row)
            if on_log:
                on_log(row)
            log.debug("%s", row)
        if ckpt_dir is not None and step % cfg.checkpoint_every == 0 and step < cfg.n_steps and distributed.is_main():
            extra = {"train_config": asdict(cfg), "model_config": model.cfg.to_dict(), "history": history}
            extra.update(ckpt_meta or {})
            save_checkpoint(ckpt_dir, model, opt, step, extra)
    bar.close()
    seconds = time.perf_counter() - t0
    tokens = (step - start_step) * cfg.batch_size * model.cfg.ctx_len
    val_loss = history[-1]["val_loss"] if history else float("nan")
    return TrainResult(step, loss, val_loss, tokens / max(seconds, 1e-9), seconds, history)


def _remove_checkpoint(ckpt: Path) -> None:
    """Delete a finished model's checkpoint, and RUN/checkpoints/ with its last one."""
    shutil.rmtree(ckpt, ignore_errors=True)
    if ckpt.parent.exists() and not any(ckpt.parent.iterdir()):
        ckpt.parent.rmdir()


def run(
    layout: paths.RunLayout,
    model_cfg: TransformerConfig,
    cfg: LMTrainConfig,
    model_name: str = "A",
    force: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """The stage: train model `model_name` on the run's tokens; writes `transformer/<model>/`.

    A checkpoint left by an interrupted run is resumed (`resume` makes one required); `force`
    discards it, and so do tokens that changed since it was made. Under torchrun every rank trains
    and evaluates, and rank 0 writes.
    """
    out, ckpt = layout.transformer(model_name), layout.checkpoints(f"transformer-{model_name}")
    ins = provenance.inputs(out, [layout.tokens], root=layout.root)
    if provenance.reuse(out, ins, force):
        log.info("%s exists: skipping (use --force to retrain)", out)
        if ckpt.exists() and distributed.is_main():  # a kill between the rename and this cleanup left it
            _remove_checkpoint(ckpt)
        return read_config(out / paths.CONFIG, KIND)
    store = TokenStore(layout.tokens)
    tokens_stamp = {"inputs": provenance.inputs(ckpt, [layout.tokens]).stamps}  # kept in the checkpoint
    stale = has_checkpoint(ckpt) and read_checkpoint_meta(ckpt).get("inputs") != tokens_stamp["inputs"]
    if stale:
        log.warning("%s: made from other tokens than now: discarded", ckpt)
    if (force or stale) and ckpt.exists() and distributed.is_main():
        shutil.rmtree(ckpt)
    distributed.barrier()
    if resume and not has_checkpoint(ckpt):
        raise UserError(f"--resume: no checkpoint in {ckpt}")
    model_cfg = replace(model_cfg, vocab_size=store.vocab_size)
    seed_everything(cfg.seed)
    model = Transformer(model_cfg).to(pick_device(cfg.device))
    result = train_transformer(model, store, cfg, ckpt_dir=ckpt, progress=progress, ckpt_meta=tokens_stamp)

    # Final evaluation on more validation tokens, and the n-gram baselines on the same targets.
    length = model_cfg.ctx_len + 1
    val = torch.from_numpy(store.val.windows(length, 16 * cfg.eval_tokens))
    val_loss = evaluate(model, val, cfg.batch_size, "float32")
    base = ngram.baselines(store.train.all_tokens(), val.numpy(), store.vocab_size)
    metrics = {
        "val_loss": val_loss,
        **base,
        "beats_bigram": val_loss < base["bigram_loss"],
        "val_tokens": int(val.shape[0] * (length - 1)),
        "train_tokens": cfg.n_steps * cfg.batch_size * model_cfg.ctx_len,
        "train_loss": result.train_loss,
        "tokens_per_s": result.tokens_per_s,
        "train_seconds": result.seconds,
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    body = {"model": model_cfg.to_dict(), "train": asdict(cfg), "name": model_name}
    if not distributed.is_main():
        distributed.barrier()  # rank 0 writes the model
        return {**body, "metrics": metrics}
    with stage_dir(out, force=force or out.exists()) as tmp:  # an existing one was built from other tokens
        save_tensors(tmp / paths.MODEL_WEIGHTS, model.state_dict())
        write_json(tmp / paths.METRICS, metrics)
        (tmp / paths.TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in result.log))
        write_config(tmp / paths.CONFIG, KIND, body)
        provenance.record(tmp, ins)
    _remove_checkpoint(ckpt)
    distributed.barrier()
    log.info(
        "model %s: val loss %.3f (bigram %.3f, unigram %.3f), %.0f tokens/s",
        model_name,
        val_loss,
        base["bigram_loss"],
        base["unigram_loss"],
        result.tokens_per_s,
    )
    return {**body, "metrics": metrics}
