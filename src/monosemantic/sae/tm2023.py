"""The 2023 paper's training recipe (paper.md §3.2, §3.4, §3.5, §4): `SAETrainConfig`, the default.

MSE mean over elements + λ·L1 summed over features → remove the gradient parallel to decoder rows
(`constraints.optimizer_step_`) → Adam at constant LR → renormalise decoder rows; dead features
resampled from high-loss inputs (`resample.py`, run by the trainer, `train.py`). Choices the paper leaves
open (paper.md §13), as defaults below: lr 1e-4; Adam (0.9, 0.999, 1e-8); no weight decay, no
gradient clipping (`max_grad_norm` adds it); float32; b_dec from Weiszfeld on the first 16,384 inputs.
Its loss on the sparse step is `sparse_terms` (sparse_step.py). Later recipes are in their own files
(april.py, topk.py, batchtopk.py, jumprelu_train.py). Section numbers (§n) refer to the method
reference `docs/reference/paper.md`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from monosemantic.sae.loss import LossTerms, per_input_terms
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.recipe import TrainConfig, register_recipe
from monosemantic.sae.resample import (
    PAPER_DEAD_WINDOW_FRACTION,
    PAPER_ENCODER_SCALE,
    PAPER_N_RESAMPLES,
    PAPER_RESAMPLE_EVERY_FRACTION,
    resample_schedule,
)
from monosemantic.sae.sparse_step import SparseForward, SparseTerms


@register_recipe
@dataclass(frozen=True)
class SAETrainConfig(TrainConfig):
    """How to train one SAE with the 2023 recipe. Defaults follow the paper where it gives a value.

    The optimiser, step and logging settings, with the paper's defaults, are `TrainConfig`'s.
    """

    architecture: ClassVar[str] = "tm2023"

    l1_coeff: float = 0.004
    """λ, on the scale of §3.2 (MSE mean over d_in elements, L1 sum over features). The paper's A/0–A/5
    use 0.004 on raw MLP activations; λ depends on the data scale (λ on c·x ≡ λ/c on x). With
    normalize_inputs (E‖x‖ = √d_in) the scale is fixed and λ ≈ 4 / d_in gave L0 ≈ 20 on the demo's 512
    neurons (the CLI's default preset: 0.0085; docs/decisions.md)."""
    l1_coeff_d_in: int | None = None
    """The width λ was chosen for (the presets: 512); d_in-wide inputs use λ·l1_coeff_d_in/d_in, as the MSE
    is a mean over d_in (docs/decisions.md). None: λ as is."""
    b_dec_init: Literal["geometric_median", "keep"] = "geometric_median"
    """`geometric_median` sets b_dec from the first inputs of the stream (paper.md §3.3); `keep` leaves it."""
    b_dec_init_n_inputs: int = 16_384
    """How many inputs the geometric median is computed on (not stated in the paper)."""
    b_enc_init: Literal["zero", "sparse"] = "zero"
    """`zero` (the common replication choice; the paper does not say, paper.md §13) or `sparse`: each
    feature starts firing on `b_enc_init_density` of the first inputs, so training is sparse from step 1
    (`data_init.py`, docs/decisions.md "The sparse start")."""
    b_enc_init_density: float = 1 / 64
    """The sparse start's firing fraction per feature (L0 at step 1 ≈ this × n_features)."""
    n_resamples: int = PAPER_N_RESAMPLES
    """How many times to resample dead features (paper.md §4: 4; 0 turns resampling off)."""
    resample_every_fraction: float = PAPER_RESAMPLE_EVERY_FRACTION
    """Resample every this fraction of n_steps (paper.md §4: every 25,000 of 1M steps = 0.025)."""
    dead_window_fraction: float = PAPER_DEAD_WINDOW_FRACTION
    """Dead = not fired in this fraction of n_steps before a resample (the paper: 12,500 of 1M)."""
    resample_n_batches: int = 100
    """Batches whose per-input loss drives resampling (the paper: 100 × 8192 = 819,200 inputs)."""
    resample_inputs_per_dead: int = 0
    """Score only this many inputs per dead feature (at least one batch, at most resample_n_batches);
    0 scores all resample_n_batches, as the paper. The n_dead new directions are drawn with probability
    ∝ loss² from the scored inputs, so a few dozen candidates per draw keep that distribution
    (docs/decisions.md, "The sparse start and resampling from fewer inputs")."""
    resample_scores: Literal["peek", "training"] = "peek"
    """Where resampling's per-input losses come from. `peek` (the paper's "loss for the current model"): a
    scoring pass over the next resample_n_batches batches, which are then trained on. `training`: the
    losses of the last resample_n_batches batches as their training steps computed them (no extra
    pass; up to that many steps old), with each seed input handed back in one of the next
    resample_n_batches batches, as a peek would train on it (docs/decisions.md, "Resampling scored from
    the training steps"). One process only; a data-parallel run peeks."""
    resample_encoder_scale: float = PAPER_ENCODER_SCALE
    """New encoder norm as a multiple of the mean alive encoder norm (the paper: 0.2)."""
    resample_direction: Literal["input", "centered"] = "input"
    """New decoder direction: the raw input x (the paper's words) or x − b_dec."""
    seed: int = 0
    """Seeds the resampling draws; weight init is seeded by the caller when it builds the SAE."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.l1_coeff >= 0 and math.isfinite(self.l1_coeff), "l1_coeff", "must be finite and >= 0")
        self._require(self.l1_coeff_d_in is None or self.l1_coeff_d_in >= 1, "l1_coeff_d_in", "must be >= 1 or None")
        for name in ("b_dec_init_n_inputs", "resample_n_batches"):
            self._require_count(name)
        per_dead = self.resample_inputs_per_dead
        ok = isinstance(per_dead, int) and not isinstance(per_dead, bool) and per_dead >= 0
        self._require(ok, "resample_inputs_per_dead", "must be an int >= 0")
        self._require(self.b_dec_init in ("geometric_median", "keep"), "b_dec_init", "must be geometric_median or keep")
        self._require(self.b_enc_init in ("zero", "sparse"), "b_enc_init", "must be zero or sparse")
        self._require(0 < self.b_enc_init_density < 1, "b_enc_init_density", "must be in (0, 1)")
        n = self.n_resamples
        self._require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, "n_resamples", "must be an int >= 0")
        self._require(0 < self.resample_every_fraction <= 1, "resample_every_fraction", "must be in (0, 1]")
        self._require(0 < self.dead_window_fraction <= 1, "dead_window_fraction", "must be in (0, 1]")
        self._require(self.resample_encoder_scale > 0, "resample_encoder_scale", "must be > 0")
        scores = ("peek", "training")
        self._require(self.resample_scores in scores, "resample_scores", "must be peek or training")
        directions = ("input", "centered")
        self._require(self.resample_direction in directions, "resample_direction", "must be input or centered")

    @property
    def n_activations(self) -> int:
        """Inputs a full run consumes: n_steps × batch_size."""
        return self.n_steps * self.batch_size

    # -- the recipe (TrainRecipe) -----------------------------------------------------------------

    @property
    def init_b_dec(self) -> bool:
        return self.b_dec_init == "geometric_median"

    @property
    def init_b_enc_density(self) -> float | None:
        return self.b_enc_init_density if self.b_enc_init == "sparse" else None

    @property
    def n_init_inputs(self) -> int:
        needed = self.init_b_dec or self.normalize_inputs or self.b_enc_init == "sparse"
        return self.b_dec_init_n_inputs if needed else 0

    @property
    def resample_steps(self) -> list[int]:
        return self._schedule[0]

    @property
    def dead_window(self) -> int:
        return self._schedule[1]

    @property
    def _schedule(self) -> tuple[list[int], int]:
        every, n, window = self.resample_every_fraction, self.n_resamples, self.dead_window_fraction
        return resample_schedule(self.n_steps, every, n, window)

    def lr_at(self, step: int) -> float:
        return self.lr  # paper.md §3.5: "annealing ... did not further increase performance"

    def l1_for(self, d_in: int) -> float:  # λ for inputs of width d_in (l1_coeff_d_in)
        return self.l1_coeff * (self.l1_coeff_d_in / d_in if self.l1_coeff_d_in else 1.0)

    def loss(self, sae: SparseAutoencoder, x: Tensor, step: int, dead: Tensor) -> LossTerms:
        """MSE (mean over elements) + λ · L1 (sum over features), mean over the batch (paper.md §3.2)."""
        x_hat, f = sae(x)
        mse, l1 = per_input_terms(x, x_hat, f)  # (batch,) each: resampling may score from them
        per_input = mse + self.l1_for(x.shape[1]) * l1
        return LossTerms(per_input.mean(), f, {"mse": mse.mean(), "l1": l1.mean()}, per_input.detach().float())

    def dense_terms(self, sae: SparseAutoencoder, f: Tensor, e: Tensor, mse_rows: Tensor) -> SparseTerms:
        """`loss` for the dense step by hand (sparse_step.py), from f `[batch, n]` ≥ 0, e = x̂ − x and each
        input's MSE: `grad_f` is λ/B, added at every entry and kept where f > 0 (L1's gradient)."""
        batch, d_in = e.shape
        lam = self.l1_for(d_in)
        l1_rows = f.sum(dim=-1).to(mse_rows.dtype)  # f ≥ 0: |f| = f
        per_input = mse_rows + lam * l1_rows
        parts = {"mse": mse_rows.mean(), "l1": l1_rows.mean()}
        return SparseTerms(per_input.mean(), parts, grad_scale=2 / (batch * d_in), grad_f=torch.tensor(lam / batch),
                           per_input=per_input)  # fmt: skip

    def sparse_terms(self, sae: SparseAutoencoder, fwd: SparseForward) -> SparseTerms:
        """`loss` for the sparse step (`sparse_step.py`): ∂/∂x̂ of the mean MSE is 2e / (B·d), of λ·L1 λ/B per entry."""
        batch, d_in = fwd.e.shape
        mse, lam = fwd.sse / d_in, self.l1_for(d_in)
        l1_rows = torch.zeros_like(fwd.sse_rows).index_add_(0, fwd.p.row, fwd.f_vals)  # (batch,)
        l1 = l1_rows.sum() / batch
        grad_l1 = torch.full_like(fwd.f_vals, lam / batch)
        per_input = fwd.sse_rows / d_in + lam * l1_rows
        parts = {"mse": mse, "l1": l1}
        return SparseTerms(mse + lam * l1, parts, grad_scale=2 / (batch * d_in), grad_f=grad_l1, per_input=per_input)
