"""Train sparse autoencoders on a stream of activation batches: one loop for every architecture.

    results = train_sae([sae], batches, SAETrainConfig(n_steps=20_000, batch_size=4096))

`batches` is any `Iterator[Tensor]` of shape `[batch, d_in]`, already shuffled; it is read once,
front to back, and never repeated (TM "sampling without replacement ... is important", paper.md §2).
The trainer does not know where activations come from (STYLE P6): it imports nothing from
`monosemantic.transformer` or `monosemantic.data`.

One pass over the stream can train several SAEs at once (a ladder of sizes, an L1 sweep with one
config per SAE, or different architectures); each SAE has its own Adam and its own resampling
generator, so training it in a group gives the same result as training it alone on the same stream.

What differs between architectures is in the train config, the *recipe* (`recipe.TrainRecipe`):
`SAETrainConfig` (tm2023.py, re-exported here) is the paper's 2023 recipe and the default;
`AprilTrainConfig` is in april.py, `TopKTrainConfig` in topk.py (STYLE P14: one file per variant). A
recipe gives the loss, the learning rate at each step, gradient clipping, the data-dependent init, the
resampling schedule and its loss terms for the sparse step (`sparse_terms`); the decoder constraint
follows the SAE class (`constraints.optimizer_step_`). The settings every recipe shares are
`recipe.TrainConfig`'s.

Per step, for each SAE: loss (recipe) → backward → learning rate for the step → optimizer step
with the decoder constraint → dead-feature counter. Once in a while: resample dead features (the
2023 recipe, §4), log. At the end each SAE is brought to its saved form (`standardize_`) and, if
its inputs were normalised, the scale is folded back so the SAE takes raw activations.
Section numbers (§n) refer to the method reference `docs/reference/paper.md`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic import distributed
from monosemantic.sae.constraints import adam, optimizer_step_
from monosemantic.sae.data_init import init_from_data
from monosemantic.sae.loss import LossTerms
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.normalize import Normalizer
from monosemantic.sae.recipe import TrainRecipe, check_batch, configs_per_sae
from monosemantic.sae.resample import Kept, dead_mask, resample_dead_, resample_losses
from monosemantic.sae.sparse_step import Stepper, firing
from monosemantic.sae.tm2023 import SAETrainConfig

__all__ = ["SAETrainConfig", "TrainResult", "n_resample_batches", "train_sae"]

log = logging.getLogger(__name__)


class Checkpointer(Protocol):
    """Saves and restores the whole training state (`sae/checkpoint.py`'s `SAECheckpointer`)."""

    def restore(self, runs: Sequence[_Run]) -> int: ...  # the step to continue after (0: a fresh start)
    def after_step(self, runs: Sequence[_Run], step: int) -> None: ...  # save when due


class Logger(Protocol):
    """Receives one flat row of numbers per SAE every `log_every` steps."""

    def log(self, row: dict[str, float]) -> None: ...


class NullLogger:
    """The logger used when none is given (nanochat's DummyWandb)."""

    def log(self, row: dict[str, float]) -> None:
        pass


@dataclass(frozen=True)
class TrainResult:
    """What training one SAE produced besides its weights (which are updated in place)."""

    n_steps: int
    """Steps taken (fewer than configured if the stream ran out)."""
    n_activations: int
    """Inputs trained on."""
    history: list[dict[str, float]]
    """The logged rows: step, sae, loss, the recipe's parts (mse, l1 or auxk), l0, dead_fraction."""
    resampled: list[tuple[int, int]]
    """(step, number of dead features resampled) for each scheduled resample."""
    last_fired: Tensor
    """`[n_features]` int, last step on which each feature fired (0 = never)."""
    input_scale: float = 1.0
    """The normalising factor the SAE was trained with (1 = raw inputs); already folded into the SAE."""


@dataclass
class _Run:
    """Training state of one SAE: optimizer, dead-feature counter, input scale, running sums, log."""

    sae: SparseAutoencoder
    cfg: TrainRecipe
    opt: torch.optim.Adam
    last_fired: Tensor  # (n_features,) long
    resample_steps: set[int]
    window: int
    stepper: Stepper  # dense or sparse gradients (sparse_step.py)
    scale: float = 1.0  # inputs are multiplied by this (normalize_inputs)
    generator: torch.Generator | None = None  # resampling draws, made at the first resample
    sums: dict[str, Tensor] = field(default_factory=dict)  # running sums since the last log
    n_summed: int = 0
    n_activations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)
    kept: Kept | None = None  # resampling scored from the training steps (resample_scores "training")

    @classmethod
    def start(cls, sae: SparseAutoencoder, cfg: TrainRecipe) -> _Run:
        opt = adam(sae.parameters(), cfg.lr, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
        last_fired = torch.zeros(sae.cfg.n_features, dtype=torch.long, device=sae.W_dec.device)
        run = cls(sae, cfg, opt, last_fired, set(cfg.resample_steps), cfg.dead_window, Stepper.for_recipe(sae, cfg))
        if isinstance(cfg, SAETrainConfig) and cfg.resample_scores == "training" and run.resample_steps:
            run.kept = Kept(cfg.resample_n_batches) if distributed.world_size() == 1 else None
        return run

    def inputs(self, x: Tensor) -> Tensor:
        """The batch on the SAE's device and dtype, in the units it trains in: `[batch, d_in]`."""
        x = x.to(self.sae.W_dec)
        return x * self.scale if self.scale != 1.0 else x

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def track(self, step: int, terms: LossTerms) -> None:
        """Dead-feature counter and running means; no host sync, so it is cheap on a GPU."""
        fired, l0 = firing(terms.f)  # (n_features,) bool, scalar; f is dense or sparse CSR
        self.last_fired.masked_fill_(fired, step)
        for name, value in {"loss": terms.loss, **terms.parts, "l0": l0}.items():
            self.sums[name] = self.sums[name] + value.detach() if name in self.sums else value.detach()
        self.n_summed += 1
        self.n_activations += terms.f.shape[0]

    def log_row(self, step: int, index: int) -> dict[str, float]:
        means = {name: (total / max(self.n_summed, 1)).item() for name, total in self.sums.items()}
        dead = dead_mask(self.last_fired, step, self.window).float().mean().item()
        row = {"step": step, "sae": index, **means, "dead_fraction": dead}
        self.sums.clear()
        self.n_summed = 0
        self.history.append(row)
        return row

    @torch.no_grad()
    def finish(self, n_steps: int) -> TrainResult:
        """Bring the SAE to its saved form (unit-norm rows) in raw-activation units; the run's result."""
        self.sae.standardize_()
        if self.scale != 1.0:
            Normalizer(self.scale).fold_into_(self.sae)
        return TrainResult(n_steps, self.n_activations, self.history, self.resampled, self.last_fired.cpu(), self.scale)


def train_sae(
    saes: Sequence[SparseAutoencoder],
    batches: Iterator[Tensor],
    cfg: TrainRecipe | Sequence[TrainRecipe],
    logger: Logger | None = None,
    checkpoint: Checkpointer | None = None,
) -> list[TrainResult]:
    """Train every SAE in `saes` in place on one pass over `batches`.

    Args:
        saes: autoencoders on one device, all with the same d_in, of any architecture.
        batches: `[batch, d_in]` tensors (any device; moved to the SAEs' device and dtype).
        cfg: one recipe for all, or one per SAE (an L1 sweep, or mixed architectures); each must be
            the recipe of its SAE's architecture, and all must agree on batch_size, n_steps,
            log_every and progress, since they share the stream.
        logger: gets one row per SAE every `log_every` steps; the rows are also kept in the results.
        checkpoint: saves the state every so often and restores it at the start; when it restores
            step s, `batches` must start at the stream's batch s + 1 (the data position).

    Data parallel (`monosemantic.distributed`, under torchrun): every rank passes the same global
    batches, computes on its own slice of rows, and the gradients are averaged before the step.
    Returns:
        one `TrainResult` per SAE, in order. The SAEs are left in their saved form, taking raw inputs.
    """
    cfgs = configs_per_sae(saes, cfg)
    logger = logger or NullLogger()
    runs = [_Run.start(sae, c) for sae, c in zip(saes, cfgs, strict=True)]
    if getattr(cfgs[0], "dtype", None) == "auto":
        log.info("train_sae: dtype auto -> %s dense steps", runs[0].stepper.dtype)
    start = checkpoint.restore(runs) if checkpoint else 0
    batches = iter(batches)
    if not start:
        batches = init_from_data(runs, batches)  # input scale (paper.md §10.5); b_dec at the geometric median (§3.3)
    n_steps, log_every = cfgs[0].n_steps, cfgs[0].log_every

    step = start
    progress = cfgs[0].progress and distributed.is_main()
    for step in tqdm(
        range(start + 1, n_steps + 1), initial=start, total=n_steps, disable=not progress, desc="train_sae"
    ):
        x = next(batches, None)
        if x is None:
            log.warning("train_sae: the stream ran out after %d of %d steps", step - 1, n_steps)
            step -= 1
            break
        check_batch(x, saes)
        xs = distributed.shard(x)  # this rank's rows of the global batch (all of them in one process)
        scaled: dict[float, Tensor] = {}  # a ladder's SAEs share one input scale: scale the batch once
        for r in runs:
            dead = dead_mask(r.last_fired, step - 1, r.window)  # (n_features,) before this step (TopK's AuxK)
            xr = scaled[r.scale] if r.scale in scaled else scaled.setdefault(r.scale, r.inputs(xs))
            if r.kept is not None and (added := r.kept.next_rows(xs)).shape[0]:
                xr = torch.cat([xr, r.inputs(added)])  # seed inputs handed back after a resampling
            terms = r.stepper.gradients(r.sae, r.cfg, xr, step, dead)  # loss, .grad set (sparse_step.py)
            if r.kept is not None and terms.per_input is not None:
                r.kept.keep(xs, added, terms.per_input)
            distributed.average_grads_(r.sae.parameters(), xs.shape[0] / x.shape[0])
            r.set_lr(r.cfg.lr_at(step))
            optimizer_step_(r.opt, r.sae, r.cfg.max_grad_norm)  # paper.md §3.4 unit-norm rows where the SAE has them
            if (after := getattr(r.cfg, "after_step", None)) is not None:
                after(r.sae, terms, step)  # BatchTopK's θ estimate, JumpReLU's θ ≥ 0
            r.track(step, terms)
            r.n_activations += x.shape[0] - xs.shape[0]  # the other ranks' rows
        distributed.max_(r.last_fired for r in runs)  # a feature is alive if it fired on any rank

        # once in a while: resample dead features from high-loss inputs (paper.md §4; the 2023 recipe only)
        due = [r for r in runs if step in r.resample_steps]
        if due:
            batches = _resample(due, batches, step)

        # once in a while: log
        if step % log_every == 0:
            _log(runs, step, logger)
        if checkpoint:
            checkpoint.after_step(runs, step)

    if runs[0].n_summed:  # the last, partial interval
        _log(runs, step, logger)
    return [r.finish(step) for r in runs]


def _log(runs: Sequence[_Run], step: int, logger: Logger) -> None:
    for i, r in enumerate(runs):
        distributed.mean_(r.sums.values())  # means over the global batch, not this rank's slice
        row = r.log_row(step, i)
        logger.log(row)
        log.info("step %d sae %d: %s", step, i, " ".join(f"{k} {v:.4g}" for k, v in list(row.items())[2:]))


@torch.no_grad()
def _resample(due: Sequence[_Run], batches: Iterator[Tensor], step: int) -> Iterator[Tensor]:
    """Score inputs with each due SAE and resample its dead features (paper.md §4).

    Only `SAETrainConfig` schedules resampling. Each SAE scores as many batches as its dead count calls
    for (`n_resample_batches`): with `resample_scores="training"` the last batches it trained on, with the
    losses their steps computed, its seeds then handed back over the next batches (`Kept`); else, or
    where too few were kept (a resumed run), the next batches of the stream, peeked (one peek shared by
    the SAEs due), scored now and put back in front of the stream to be trained on as usual.
    """
    cfgs = [c for c in (r.cfg for r in due) if isinstance(c, SAETrainConfig)]
    assert len(cfgs) == len(due)  # SAETrainConfig is the only recipe with resample_steps
    deads = [dead_mask(r.last_fired, step, r.window) for r in due]
    wanted = [n_resample_batches(c, int(d.sum())) for c, d in zip(cfgs, deads, strict=True)]
    kept = [r.kept is not None and r.kept.ready(n) for r, n in zip(due, wanted, strict=True)]
    peeked = list(islice(batches, max((n for n, k in zip(wanted, kept, strict=True) if not k), default=0)))
    if not peeked and any(n and not k for n, k in zip(wanted, kept, strict=True)):
        log.warning("step %d: no inputs left to resample from; skipped", step)
        return batches
    inputs: dict[tuple[float, int], Tensor] = {}  # a ladder's SAEs share the scaled inputs
    for r, cfg, dead, n_batches, from_kept in zip(due, cfgs, deads, wanted, kept, strict=True):
        n_dead = int(dead.sum())
        if n_dead:
            if r.generator is None:
                r.generator = torch.Generator(r.sae.W_dec.device).manual_seed(cfg.seed)
            store = r.kept if from_kept else None
            if store is not None:
                raw, loss = store.scored(n_batches)  # (N, d_in), (N,)
                X = r.inputs(raw)
            else:
                if (r.scale, n_batches) not in inputs:
                    inputs[r.scale, n_batches] = r.inputs(torch.cat(peeked[:n_batches]))
                X = inputs[r.scale, n_batches]  # (N, d_in)
                dtype, l1 = r.stepper.matmul_dtype, cfg.l1_for(X.shape[1])
                loss = torch.cat([resample_losses(r.sae, x, l1, dtype) for x in X.split(cfg.batch_size)])  # (N,)
            picked = resample_dead_(
                r.sae,
                r.opt,
                dead,
                X,
                loss,
                generator=r.generator,
                encoder_scale=cfg.resample_encoder_scale,
                direction=cfg.resample_direction,
            )
            if store is not None:
                store.hand_back(raw[picked], r.generator)
            distributed.broadcast_(r.sae.parameters())  # ranks resampled alike; rank 0's copy makes sure
            r.stepper.resampled(r.sae, n_dead, cfg.batch_size)
        r.resampled.append((step, n_dead))
        log.info("step %d: resampled %d dead features of %d", step, n_dead, dead.numel())
    return chain(peeked, batches)


def n_resample_batches(cfg: SAETrainConfig, n_dead: int) -> int:
    """Batches to score for `n_dead` dead features: all `resample_n_batches` (the paper), or with
    `resample_inputs_per_dead` enough for that many inputs per dead feature (0 dead: none)."""
    if not n_dead:
        return 0
    if not cfg.resample_inputs_per_dead:
        return cfg.resample_n_batches
    return min(cfg.resample_n_batches, max(1, math.ceil(cfg.resample_inputs_per_dead * n_dead / cfg.batch_size)))
