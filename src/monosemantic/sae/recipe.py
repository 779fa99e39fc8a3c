"""What every SAE training recipe shares: the settings, the interface `train_sae` uses, the table of recipes.

    TrainConfig        frozen base of every train config: optimiser, steps, step kind, dtype, logging;
                       `for_run` fits a recipe's published schedule to a shorter run
    TrainRecipe        what `train.train_sae` asks of a train config (a Protocol)
    TRAIN_CONFIGS      {"tm2023": tm2023.SAETrainConfig, "april2024": april.AprilTrainConfig, "topk": ...}
    configs_per_sae    `train_sae`'s configs, one per SAE, checked against the SAEs and each other
    check_batch        refuse a batch whose width is not the SAEs' d_in

A recipe is a `TrainConfig` subclass in its architecture's file that adds its own settings (λ,
resampling, AuxK) and the methods of `TrainRecipe`; it joins `TRAIN_CONFIGS` with `@register_recipe`.
The table runs one way, from the trainer side to the models: a model file never needs it, so loading
a saved SAE (`SparseAutoencoder.load`) imports no trainer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import Field, dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from torch import Tensor

from monosemantic.errors import UserError
from monosemantic.runtime import check_dtype
from monosemantic.sae.loss import LossTerms
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.sparse_step import MatmulDtype, StepMode

FIT_LR_MAX = 5e-3
"""`for_run` raises a learning rate to at most this (docs/decisions.md, "Recipes fit to the run")."""
MIN_FIT_STEPS = 50
"""`for_run` refuses runs shorter than this: too few steps for any warm-up to mean anything."""

T = TypeVar("T", bound="TrainConfig")


@dataclass(frozen=True)
class TrainConfig:
    """Settings every recipe has. The defaults are the 2023 paper's; a recipe re-declares a field to change it."""

    architecture: ClassVar[str]
    """The SAE class this recipe trains (its key in `registry.SAE_CLASSES` and `TRAIN_CONFIGS`)."""
    reference_steps: ClassVar[int] = 1_000_000
    """The run length (steps) the recipe's published settings are for (the 2023 paper: 1M steps)."""
    step_windows: ClassVar[tuple[str, ...]] = ()
    """Fields counted in steps or inputs (warm-ups, dead windows) that `for_run` scales with the run."""

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
    max_grad_norm: float | None = None
    """Clip the gradient's global norm (over all the SAE's parameters) to this before each step; None:
    no clipping, as in the paper (which does not mention clipping: paper.md §13). The norm is on the
    recipe's loss scale: with the paper's MSE (mean over d_in), SAELens's clip at 1 on its summed MSE
    is 1 / d_in. Clipping keeps the dense early steps from filling Adam's second moment with gradients
    hundreds of times larger than later ones (docs/decisions.md)."""
    normalize_inputs: bool = False
    """Scale inputs so that E‖x‖ = √d_in (the 2024 normalisation, paper.md §10.3), estimated on the first
    b_dec_init_n_inputs inputs and folded back at the end; off in the paper, which used raw activations."""
    step: StepMode = "auto"
    """Training step: `dense` (autograd), `sparse` (hand-written, over the active features only), or
    `auto` (dense while L0 is high early on, sparse once it is low; `sparse_step.py`)."""
    matmul_dtype: MatmulDtype = "auto"
    """`bfloat16` picks the sparse step's active set with a bfloat16 encoder product (values stay
    float32); `auto` does so with --dtype bfloat16 or where the hardware has native bfloat16
    (`sparse_step.resolve_matmul_dtype`)."""
    dtype: str = "float32"
    """Compute dtype: float32, or bfloat16 (autocast: the dense step's products in bfloat16, the sparse
    step's active set chosen in bfloat16; weights, gradients and Adam stay float32, runtime.autocast), or
    auto: bfloat16 where the device multiplies it natively, else float32 (`runtime.resolve_dtype`)."""
    log_every: int = 100
    """Steps between log rows (means over the interval); the last, partial interval is logged too."""
    progress: bool = False
    """Show a tqdm progress bar."""
    fit_to_run: bool = True
    """Fit the schedule to the run when it is shorter than the recipe's published one (`for_run`, applied
    by `sae train`): lr × (published steps / steps), at most 5e-3, so lr × steps stays as published up to
    that ceiling; warm-ups and dead windows counted in steps or inputs shrink in proportion (fractions
    already do). False: train exactly as configured."""

    @property
    def init_b_enc_density(self) -> float | None:
        """The sparse start's firing fraction (`data_init.py`), or None to keep the class's b_enc init."""
        return None

    def __post_init__(self) -> None:
        """Validate the shared fields; a recipe's own `__post_init__` calls this, then checks its fields."""
        self._require(self.lr > 0 and math.isfinite(self.lr), "lr", "must be finite and > 0")
        for name in ("batch_size", "n_steps", "log_every"):
            self._require_count(name)
        for name in ("adam_beta1", "adam_beta2"):
            self._require(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")
        self._require(self.adam_eps > 0, "adam_eps", "must be > 0")
        grad_norm = self.max_grad_norm
        ok = grad_norm is None or (grad_norm > 0 and math.isfinite(grad_norm))
        self._require(ok, "max_grad_norm", "must be finite and > 0, or None")
        check_dtype(self.dtype, auto=True)

    def for_run(self: T, n_steps: int) -> tuple[T, dict[str, tuple[Any, Any]]]:
        """This recipe for a run of `n_steps`: `(config, {field: (published, used)})` (docs/decisions.md,
        "Recipes fit to the run"). With `fit_to_run` and a run shorter than `reference_steps` by a
        ratio r: lr × r but at most FIT_LR_MAX (never below lr), each `step_windows` field ÷ r (at least
        1); the result has `fit_to_run` False, so it is not fitted twice. A run under MIN_FIT_STEPS is
        refused (UserError)."""
        cfg = dataclasses.replace(self, n_steps=n_steps)
        if not self.fit_to_run or n_steps >= self.reference_steps:
            return cfg, {}
        if n_steps < MIN_FIT_STEPS:
            raise UserError(
                f"--arch {self.architecture}: {n_steps} steps of {self.batch_size} inputs is too short to fit the "
                f"recipe's {self.reference_steps:,}-step schedule (at least {MIN_FIT_STEPS} steps); give more rows "
                "or a smaller --batch-size, or --no-fit-to-run to train exactly as configured"
            )
        ratio = self.reference_steps / n_steps
        changes: dict[str, Any] = {"lr": max(self.lr, min(self.lr * ratio, FIT_LR_MAX)), "fit_to_run": False}
        for name in self.step_windows:
            changes[name] = max(1, round(getattr(self, name) / ratio))
        fitted = dataclasses.replace(cfg, **changes)
        return fitted, {k: (getattr(self, k), v) for k, v in changes.items() if k != "fit_to_run"}

    def _require(self, ok: bool, name: str, what: str) -> None:
        """Raise a ValueError naming the field (`AprilTrainConfig.lr must be ...`) unless `ok`."""
        if not ok:
            raise ValueError(f"{type(self).__name__}.{name} {what}")

    def _require_count(self, name: str) -> None:
        """Raise a ValueError unless field `name` is an int >= 1 (not a bool)."""
        value = getattr(self, name)
        self._require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "must be an int >= 1"
        )


class TrainRecipe(Protocol):
    """What `train_sae` asks of a train config. `SAETrainConfig`, `AprilTrainConfig`, `TopKTrainConfig`."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # a dataclass: the ladder copies it with `replace`
    architecture: ClassVar[str]  # must equal the SAE's `architecture`
    lr: float
    batch_size: int
    n_steps: int
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    normalize_inputs: bool  # scale inputs to E‖x‖ = √d_in, estimated on the first n_init_inputs
    log_every: int
    progress: bool

    @property
    def n_init_inputs(self) -> int: ...  # inputs to peek for the data-dependent init (0: none)
    @property
    def init_b_dec(self) -> bool: ...  # set b_dec to the geometric median of those inputs
    @property
    def init_b_enc_density(self) -> float | None: ...  # the sparse start (data_init.py), None: keep b_enc
    @property
    def dead_window(self) -> int: ...  # dead = not fired in this many steps
    @property
    def resample_steps(self) -> list[int]: ...  # steps at which to resample (SAETrainConfig only)
    @property
    def max_grad_norm(self) -> float | None: ...
    def lr_at(self, step: int) -> float: ...
    def loss(self, sae: SparseAutoencoder, x: Tensor, step: int, dead: Tensor) -> LossTerms: ...
    def for_run(self, n_steps: int) -> tuple[Any, dict[str, tuple[Any, Any]]]: ...  # TrainConfig.for_run


TRAIN_CONFIGS: dict[str, type[TrainConfig]] = {}
"""Each architecture's train config by its tag; a recipe adds itself where it is defined (`register_recipe`)."""

C = TypeVar("C", bound=type[TrainConfig])  # the class decorator's argument


def register_recipe(cls: C) -> C:
    """Class decorator: add a train config to `TRAIN_CONFIGS` under its `architecture`."""
    if TRAIN_CONFIGS.setdefault(cls.architecture, cls) is not cls:
        raise ValueError(f"{cls.__name__}: architecture {cls.architecture!r} already has a train config")
    return cls


def configs_per_sae(saes: Sequence[SparseAutoencoder], cfg: TrainRecipe | Sequence[TrainRecipe]) -> list[TrainRecipe]:
    """`train_sae`'s configs, one per SAE, checked: each the recipe of its SAE's architecture, all sharing
    the stream's settings (batch size, steps, logging), all SAEs on one device."""
    if not saes:
        raise ValueError("train_sae: no SAEs given")
    cfgs = list(cfg) if isinstance(cfg, Sequence) else [cfg] * len(saes)
    if len(cfgs) != len(saes):
        raise ValueError(f"train_sae: {len(cfgs)} configs for {len(saes)} SAEs")
    for i, (sae, c) in enumerate(zip(saes, cfgs, strict=True)):
        if c.architecture != sae.architecture:
            raise ValueError(f"train_sae: SAE {i} is {sae.architecture!r} but its config is for {c.architecture!r}")
    for name in ("batch_size", "n_steps", "log_every", "progress"):
        if len({getattr(c, name) for c in cfgs}) > 1:
            raise ValueError(f"train_sae: {name} must be the same in the configs of SAEs that share a stream")
    if len({sae.W_dec.device for sae in saes}) > 1:
        raise ValueError("train_sae: all SAEs must be on one device")
    return cfgs


def check_batch(x: Tensor, saes: Sequence[SparseAutoencoder]) -> None:
    """Refuse a batch that is not `[batch, d_in]` for every SAE's d_in."""
    d_in = saes[0].cfg.d_in
    if x.ndim != 2 or x.shape[1] != d_in or any(s.cfg.d_in != d_in for s in saes):
        got = [s.cfg.d_in for s in saes]
        raise ValueError(f"train_sae: batch of shape {tuple(x.shape)} does not fit SAEs with d_in {got}")
