"""Train sparse autoencoders on a stream of activation batches (the paper's 2023 recipe).

    results = train_sae([sae], batches, SAETrainConfig(n_steps=20_000, batch_size=4096))

`batches` is any `Iterator[Tensor]` of shape `[batch, d_in]`, already shuffled; it is read once,
front to back, and never repeated (TM "sampling without replacement ... is important", ref §2).
The trainer does not know where activations come from (STYLE P6): it imports nothing from
`monosemantic.transformer` or `monosemantic.data`.

One pass over the stream can train several SAEs at once (a ladder of sizes, or an L1 sweep with one
config per SAE); each SAE has its own Adam and its own resampling generator, so training it in a
group gives the same result as training it alone on the same stream.

Per step, for each SAE (TM §3.4, §3.5): forward → loss (MSE mean over elements + λ·L1 summed over
features, §3.2) → backward → remove the gradient parallel to decoder rows → Adam at constant LR →
renormalise decoder rows. Once in a while: resample dead features (§4), log.

Choices the paper leaves open (ref §13), as defaults below: lr 1e-4; Adam (0.9, 0.999, 1e-8);
no weight decay, no gradient clipping; float32; b_dec from Weiszfeld on the first 16,384 inputs.
Section numbers (§n) refer to the method reference `towards-monosemanticity.md`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Literal, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.sae.constraints import normalize_rows_, remove_parallel_grad
from monosemantic.sae.geometric_median import geometric_median
from monosemantic.sae.loss import l1_penalty, per_example_loss, reconstruction_mse
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.resample import (
    PAPER_DEAD_WINDOW_FRACTION,
    PAPER_ENCODER_SCALE,
    PAPER_N_RESAMPLES,
    PAPER_RESAMPLE_EVERY_FRACTION,
    dead_mask,
    resample_dead_,
    resample_schedule,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SAETrainConfig:
    """How to train one SAE with the 2023 recipe. Defaults follow the paper where it gives a value."""

    l1_coeff: float = 0.004
    """λ, on the scale of §3.2 (MSE mean over d_in elements, L1 sum over features). The paper's A/0–A/5
    use 0.004 on raw MLP activations; λ depends on the data scale (λ on c·x ≡ λ/c on x)."""
    lr: float = 1e-4
    """Adam learning rate, constant (TM found annealing did not help). Not stated in the paper."""
    batch_size: int = 8192
    """Inputs per step (the paper: 8192). The stream is built with this size; a smaller last batch is fine."""
    n_steps: int = 1_000_000
    """Optimizer steps (the paper: 1M, ~8.19B inputs). Training stops early if the stream runs out."""
    adam_beta1: float = 0.9
    """Adam β1 (PyTorch default; not stated in the paper)."""
    adam_beta2: float = 0.999
    """Adam β2 (PyTorch default; not stated in the paper)."""
    adam_eps: float = 1e-8
    """Adam ε (PyTorch default; not stated in the paper)."""
    b_dec_init: Literal["geometric_median", "keep"] = "geometric_median"
    """`geometric_median` sets b_dec from the first inputs of the stream (TM §3.3); `keep` leaves it."""
    b_dec_init_n_inputs: int = 16_384
    """How many inputs the geometric median is computed on (not stated in the paper)."""
    n_resamples: int = PAPER_N_RESAMPLES
    """How many times to resample dead features (TM §4: 4; 0 turns resampling off)."""
    resample_every_fraction: float = PAPER_RESAMPLE_EVERY_FRACTION
    """Resample every this fraction of n_steps (TM §4: every 25,000 of 1M steps = 0.025)."""
    dead_window_fraction: float = PAPER_DEAD_WINDOW_FRACTION
    """Dead = not fired in this fraction of n_steps before a resample (the paper: 12,500 of 1M)."""
    resample_n_batches: int = 100
    """Batches whose per-input loss drives resampling (the paper: 100 × 8192 = 819,200 inputs)."""
    resample_encoder_scale: float = PAPER_ENCODER_SCALE
    """New encoder norm as a multiple of the mean alive encoder norm (the paper: 0.2)."""
    resample_direction: Literal["input", "centered"] = "input"
    """New decoder direction: the raw input x (the paper's words) or x − b_dec."""
    seed: int = 0
    """Seeds the resampling draws; weight init is seeded by the caller when it builds the SAE."""
    log_every: int = 100
    """Steps between log rows (means over the interval); the last, partial interval is logged too."""
    progress: bool = False
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        _require(self.l1_coeff >= 0 and math.isfinite(self.l1_coeff), "l1_coeff", "must be finite and >= 0")
        _require(self.lr > 0 and math.isfinite(self.lr), "lr", "must be finite and > 0")
        for name in ("batch_size", "n_steps", "b_dec_init_n_inputs", "resample_n_batches", "log_every"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, "must be an int >= 1")
        for name in ("adam_beta1", "adam_beta2"):
            _require(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")
        _require(self.adam_eps > 0, "adam_eps", "must be > 0")
        _require(self.b_dec_init in ("geometric_median", "keep"), "b_dec_init", "must be geometric_median or keep")
        _require(isinstance(self.n_resamples, int) and self.n_resamples >= 0, "n_resamples", "must be an int >= 0")
        _require(0 < self.resample_every_fraction <= 1, "resample_every_fraction", "must be in (0, 1]")
        _require(0 < self.dead_window_fraction <= 1, "dead_window_fraction", "must be in (0, 1]")
        _require(self.resample_encoder_scale > 0, "resample_encoder_scale", "must be > 0")
        _require(self.resample_direction in ("input", "centered"), "resample_direction", "must be input or centered")

    @property
    def n_activations(self) -> int:
        """Inputs a full run consumes: n_steps × batch_size."""
        return self.n_steps * self.batch_size


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise ValueError(f"SAETrainConfig.{name} {what}")


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
    """The logged rows: step, sae, loss, mse, l1, l0, dead_fraction (means over each interval)."""
    resampled: list[tuple[int, int]]
    """(step, number of dead features resampled) for each scheduled resample."""
    last_fired: Tensor
    """`[n_features]` int, last step on which each feature fired (0 = never)."""


@dataclass
class _Run:
    """Training state of one SAE: optimizer, dead-feature counter, running sums, log."""

    sae: SparseAutoencoder
    cfg: SAETrainConfig
    opt: torch.optim.Adam
    last_fired: Tensor  # (n_features,) long
    generator: torch.Generator
    resample_steps: set[int]
    window: int
    sums: Tensor  # (4,) running sums of loss, mse, l1, l0 since the last log
    n_summed: int = 0
    n_activations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def start(cls, sae: SparseAutoencoder, cfg: SAETrainConfig) -> _Run:
        device = sae.W_dec.device
        opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        steps, window = resample_schedule(
            cfg.n_steps, cfg.resample_every_fraction, cfg.n_resamples, cfg.dead_window_fraction
        )
        return cls(
            sae=sae,
            cfg=cfg,
            opt=opt,
            last_fired=torch.zeros(sae.cfg.n_features, dtype=torch.long, device=device),
            generator=torch.Generator(device).manual_seed(cfg.seed),
            resample_steps=set(steps),
            window=window,
            sums=torch.zeros(4, device=device),
        )

    @torch.no_grad()
    def track(self, step: int, f: Tensor, loss: Tensor, mse: Tensor, l1: Tensor) -> None:
        """Dead-feature counter and running means; no host sync, so it is cheap on a GPU."""
        fired = (f > 0).any(dim=0)  # (n_features,)
        self.last_fired.masked_fill_(fired, step)
        l0 = (f > 0).sum(dim=-1).float().mean()
        self.sums += torch.stack([loss, mse, l1, l0]).detach()
        self.n_summed += 1
        self.n_activations += f.shape[0]

    def log_row(self, step: int, index: int) -> dict[str, float]:
        loss, mse, l1, l0 = (self.sums / max(self.n_summed, 1)).tolist()
        dead = dead_mask(self.last_fired, step, self.window).float().mean().item()
        row = {"step": step, "sae": index, "loss": loss, "mse": mse, "l1": l1, "l0": l0, "dead_fraction": dead}
        self.sums.zero_()
        self.n_summed = 0
        self.history.append(row)
        return row


def train_sae(
    saes: Sequence[SparseAutoencoder],
    batches: Iterator[Tensor],
    cfg: SAETrainConfig | Sequence[SAETrainConfig],
    logger: Logger | None = None,
) -> list[TrainResult]:
    """Train every SAE in `saes` in place on one pass over `batches`.

    Args:
        saes: autoencoders on one device, all with the same d_in.
        batches: `[batch, d_in]` tensors (any device; moved to the SAEs' device and dtype).
        cfg: one config for all, or one per SAE (e.g. an L1 sweep). Configs must agree on
            batch_size, n_steps, log_every and progress, since they share the stream.
        logger: gets one row per SAE every `log_every` steps; the rows are also kept in the results.
    Returns:
        one `TrainResult` per SAE, in order.
    """
    cfgs = _per_sae_configs(saes, cfg)
    logger = logger or NullLogger()
    batches = iter(batches)
    batches = _init_b_dec(saes, cfgs, batches)  # TM §3.3: b_dec starts at the geometric median
    runs = [_Run.start(sae, c) for sae, c in zip(saes, cfgs, strict=True)]
    n_steps, log_every = cfgs[0].n_steps, cfgs[0].log_every

    step = 0
    for step in tqdm(range(1, n_steps + 1), disable=not cfgs[0].progress, desc="train_sae"):
        x = next(batches, None)
        if x is None:
            log.warning("train_sae: the stream ran out after %d of %d steps", step - 1, n_steps)
            step -= 1
            break
        _check_batch(x, saes)
        for r in runs:
            xr = x.to(r.sae.W_dec)  # (batch, d_in) on the SAE's device and dtype
            x_hat, f = r.sae(xr)
            mse, l1 = reconstruction_mse(xr, x_hat), l1_penalty(f)  # TM §3.2
            loss = mse + r.cfg.l1_coeff * l1
            r.opt.zero_grad(set_to_none=True)
            loss.backward()
            remove_parallel_grad(r.sae.W_dec)  # TM §3.4: no gradient along the decoder rows
            r.opt.step()
            normalize_rows_(r.sae.W_dec)  # TM §3.4: back onto the unit sphere
            r.track(step, f, loss, mse, l1)

        # once in a while: resample dead features from high-loss inputs (TM §4)
        due = [r for r in runs if step in r.resample_steps]
        if due:
            batches = _resample(due, batches, step)

        # once in a while: log
        if step % log_every == 0:
            _log(runs, step, logger)

    if runs[0].n_summed:  # the last, partial interval
        _log(runs, step, logger)
    return [TrainResult(step, r.n_activations, r.history, r.resampled, r.last_fired.cpu()) for r in runs]


def _log(runs: Sequence[_Run], step: int, logger: Logger) -> None:
    for i, r in enumerate(runs):
        row = r.log_row(step, i)
        logger.log(row)
        log.info("step %d sae %d: %s", step, i, " ".join(f"{k} {v:.4g}" for k, v in list(row.items())[2:]))


def _per_sae_configs(
    saes: Sequence[SparseAutoencoder], cfg: SAETrainConfig | Sequence[SAETrainConfig]
) -> list[SAETrainConfig]:
    if not saes:
        raise ValueError("train_sae: no SAEs given")
    cfgs = [cfg] * len(saes) if isinstance(cfg, SAETrainConfig) else list(cfg)
    if len(cfgs) != len(saes):
        raise ValueError(f"train_sae: {len(cfgs)} configs for {len(saes)} SAEs")
    for name in ("batch_size", "n_steps", "log_every", "progress"):
        if len({getattr(c, name) for c in cfgs}) > 1:
            raise ValueError(f"train_sae: SAETrainConfig.{name} must be the same for SAEs that share a stream")
    if len({sae.W_dec.device for sae in saes}) > 1:
        raise ValueError("train_sae: all SAEs must be on one device")
    return cfgs


def _check_batch(x: Tensor, saes: Sequence[SparseAutoencoder]) -> None:
    d_in = saes[0].cfg.d_in
    if x.ndim != 2 or x.shape[1] != d_in or any(s.cfg.d_in != d_in for s in saes):
        got = [s.cfg.d_in for s in saes]
        raise ValueError(f"train_sae: batch of shape {tuple(x.shape)} does not fit SAEs with d_in {got}")


def _init_b_dec(
    saes: Sequence[SparseAutoencoder], cfgs: Sequence[SAETrainConfig], batches: Iterator[Tensor]
) -> Iterator[Tensor]:
    """Set b_dec to the geometric median of the stream's first inputs (TM §3.3).

    The batches read for this are put back in front of the stream, so training still sees them.
    """
    wanted = [c.b_dec_init_n_inputs for c in cfgs if c.b_dec_init == "geometric_median"]
    if not wanted:
        return batches
    peeked: list[Tensor] = []
    while sum(b.shape[0] for b in peeked) < max(wanted) and (b := next(batches, None)) is not None:
        peeked.append(b)
    if not peeked:
        raise ValueError("train_sae: the batch stream is empty")
    X = torch.cat(peeked)  # (>= n, d_in)
    medians: dict[int, Tensor] = {}  # one Weiszfeld run per distinct sample size
    for sae, c in zip(saes, cfgs, strict=True):
        if c.b_dec_init == "geometric_median":
            n = c.b_dec_init_n_inputs
            if n not in medians:
                medians[n] = geometric_median(X[:n].to(sae.W_dec.device, torch.float32))
            with torch.no_grad():
                sae.b_dec.copy_(medians[n])
    return chain(peeked, batches)


@torch.no_grad()
def _resample(due: Sequence[_Run], batches: Iterator[Tensor], step: int) -> Iterator[Tensor]:
    """Peek the next batches, score them with each due SAE and resample its dead features (TM §4).

    The peeked batches go back in front of the stream and are trained on as usual.
    """
    peeked = list(islice(batches, max(r.cfg.resample_n_batches for r in due)))
    if not peeked:
        log.warning("step %d: no inputs left to resample from; skipped", step)
        return batches
    for r in due:
        dead = dead_mask(r.last_fired, step, r.window)
        n_dead = int(dead.sum())
        if n_dead:
            X = torch.cat(peeked[: r.cfg.resample_n_batches]).to(r.sae.W_dec)  # (N, d_in)
            chunks = X.split(r.cfg.batch_size)
            loss = torch.cat([per_example_loss(x, *r.sae(x), r.cfg.l1_coeff) for x in chunks])  # (N,)
            resample_dead_(
                r.sae,
                r.opt,
                dead,
                X,
                loss,
                generator=r.generator,
                encoder_scale=r.cfg.resample_encoder_scale,
                direction=r.cfg.resample_direction,
            )
        r.resampled.append((step, n_dead))
        log.info("step %d: resampled %d dead features of %d", step, n_dead, dead.numel())
    return chain(peeked, batches)
