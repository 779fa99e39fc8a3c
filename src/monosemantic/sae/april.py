"""Anthropic's April 2024 SAE recipe ("Update on how we train SAEs", paper.md §10.5): model and training recipe.

    f = ReLU(x @ W_enc + b_enc)                          [batch, n_features]   no pre-encoder bias
    x̂ = f @ W_dec + b_dec                                [batch, d_in]
    L = mean over batch of [ Σ_j (x_j − x̂_j)²  +  λ Σ_i f_i ‖W_dec[i]‖ ]      MSE summed over d_in

    sae = AprilSAE(SAEConfig(d_in=512, n_features=4096))
    train_sae([sae], batches, AprilTrainConfig(n_steps=200_000))

What changes from the 2023 recipe (and where each constant comes from; [APR24] = the update itself
as summarised in paper.md §10.5, *(confirm)* = known from public reimplementations, not the text):
- no pre-encoder bias: x is encoded as it is ([FEB24] §10.3: "removing this bias is beneficial");
- the decoder is not constrained; its row norms weight the L1 penalty instead, so shrinking a
  decoder row cannot buy a smaller penalty ([APR24], [SM]);
- inputs are scaled by one constant so that E‖x‖ = √d_in (`Normalizer`; the text's wording, the
  mean norm, not [SM]'s mean squared norm; SAELens `expected_average_only_in` does the same);
- λ = 5 ([SM] uses 5; [APR24] tabulates 2, 5, 10), warmed up linearly from 0 over the first 5 % of
  steps *(confirm)*: SAELens `l1_warm_up_steps = total_training_steps // 20`;
- Adam β = (0.9, 0.999), no weight decay, lr 5e-5 decayed linearly to 0 over the last 20 % of steps,
  gradient norm clipped to 1, 200k steps, batch 4096 ([APR24]);
- init *(confirm)*: decoder rows in random directions with norm 0.1 (the update gives a range
  "0.05 to 1" per SAELens's docstring; SAELens and dictionary_learning default to 0.1),
  W_enc = W_decᵀ at init only, both biases 0;
- no resampling: dead = no activation in 10M samples, "less than 1 %" of features ([APR24]).

Saved form: `standardize_` folds the decoder norms into the encoder (`constraints.fold_decoder_norms_`),
so a saved April SAE is a plain SAELens "standard" SAE with unit-norm rows and
`apply_b_dec_to_input: false`; its feature activations are then f_i · ‖W_dec[i]‖, which [SM] reads
as the feature's activation. The trainer does the same at the end of training and also folds the
input scale, so the SAE it returns acts on raw activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from monosemantic.sae import sparse_ops as ops
from monosemantic.sae.constraints import fold_decoder_norms_
from monosemantic.sae.loss import LossTerms, squared_error
from monosemantic.sae.model import SparseAutoencoder, register_sae
from monosemantic.sae.recipe import TrainConfig, register_recipe
from monosemantic.sae.schedule import linear_decay_tail, linear_warmup
from monosemantic.sae.sparse_step import SparseForward, SparseTerms

# [APR24] *(confirm)*: "random directions and fixed L2 norm"; SAELens decoder_init_norm=0.1, DL 0.1.
DECODER_INIT_NORM = 0.1


def decoder_weighted_l1(f: Tensor, W_dec: Tensor) -> Tensor:
    """The April 2024 sparsity penalty without λ: Σ_i f_i ‖W_dec[i]‖, mean over the batch (paper.md §10.5).

    Args:
        f: `[batch, n_features]`, feature activations (≥ 0). W_dec: `[n_features, d_in]`.
    Returns:
        scalar.
    """
    return (f.abs() * W_dec.norm(dim=1)).sum(dim=-1).mean()


@register_sae
class AprilSAE(SparseAutoencoder):
    """ReLU SAE without pre-encoder bias and with free decoder norms (Anthropic, April 2024).

        f = relu(x @ W_enc + b_enc)        # [batch, n_features]
        x_hat = f @ W_dec + b_dec          # [batch, d_in]

    Same parameters and layout as `SparseAutoencoder`. Init: decoder rows random directions of
    norm `DECODER_INIT_NORM`, W_enc = W_decᵀ, biases 0 (module docstring).
    """

    architecture: ClassVar[str] = "april2024"
    pre_encoder_bias: ClassVar[bool] = False
    unit_norm_decoder: ClassVar[bool] = False

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        d = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)  # (n_features, d_in)
        d = d / d.norm(dim=1, keepdim=True) * DECODER_INIT_NORM
        self.W_dec.copy_(d)
        self.W_enc.copy_(d.T)  # tied at init only
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def standardize_(self) -> AprilSAE:
        """In place: fold the decoder norms into the encoder (rows become unit norm; x̂ unchanged)."""
        fold_decoder_norms_(self.W_enc, self.b_enc, self.W_dec)
        return self


@register_recipe
@dataclass(frozen=True)
class AprilTrainConfig(TrainConfig):
    """How to train an `AprilSAE` (Anthropic, April 2024). Defaults follow the update (module docstring).

    From `TrainConfig`: Adam β (0.9, 0.999) ([APR24]) and ε 1e-8 (PyTorch's; not stated).
    """

    architecture: ClassVar[str] = "april2024"
    reference_steps: ClassVar[int] = 200_000
    """The run length the defaults are for: the n_steps below ([APR24]: 200k)."""
    step_windows: ClassVar[tuple[str, ...]] = ("dead_n_inputs",)
    """Counted in inputs, so `for_run` scales it with the run."""

    lr: float = 5e-5
    """Adam learning rate before the final decay ([APR24]: "5e-5 is a reasonable default")."""
    batch_size: int = 4096
    """Inputs per step ([APR24]: 2048 or 4096)."""
    n_steps: int = 200_000
    """Optimizer steps ([APR24]: "200k is a reasonable default")."""
    max_grad_norm: float | None = 1.0
    """Clip the total gradient norm to this ([APR24]: 1); None turns clipping off."""
    normalize_inputs: bool = True
    """Scale inputs by one constant so that E‖x‖ = √d_in (`Normalizer`), folded back at the end."""
    l1_coeff: float = 5.0
    """λ after warm-up, on normalised inputs (E‖x‖ = √d_in) with the MSE summed over d_in ([SM]: 5)."""
    l1_warmup_fraction: float = 0.05
    """λ rises linearly from 0 over this fraction of the steps (SAELens: total // 20; confirm)."""
    lr_decay_fraction: float = 0.2
    """The learning rate falls linearly to 0 over this last fraction of the steps ([APR24])."""
    normalize_n_inputs: int = 16_384
    """How many of the first inputs the scale is estimated on (not stated)."""
    dead_n_inputs: int = 10_000_000
    """Dead = no activation on this many inputs, for the logged dead_fraction ([APR24]: 10M samples)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.l1_coeff >= 0 and math.isfinite(self.l1_coeff), "l1_coeff", "must be finite and >= 0")
        for name in ("normalize_n_inputs", "dead_n_inputs"):
            self._require_count(name)
        for name in ("l1_warmup_fraction", "lr_decay_fraction"):
            self._require(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")

    # -- the recipe: what train_sae asks of a train config (recipe.TrainRecipe) -----------------

    @property
    def n_init_inputs(self) -> int:
        return self.normalize_n_inputs if self.normalize_inputs else 0

    @property
    def init_b_dec(self) -> bool:
        return False  # [APR24]: biases start at 0

    @property
    def dead_window(self) -> int:
        return math.ceil(self.dead_n_inputs / self.batch_size)

    @property
    def resample_steps(self) -> list[int]:
        return []  # [APR24]: no resampling, no ghost grads

    def lr_at(self, step: int) -> float:
        """Learning rate for `step` (1-based): constant, then linear to 0 over the last 20 %."""
        return self.lr * linear_decay_tail(step, self.n_steps, self.lr_decay_fraction)

    def l1_coeff_at(self, step: int) -> float:
        """λ for `step` (1-based): linear warm-up from 0 over the first 5 %, then constant."""
        return self.l1_coeff * linear_warmup(step, self.n_steps, self.l1_warmup_fraction)

    def loss(self, sae: SparseAutoencoder, x: Tensor, step: int, dead: Tensor) -> LossTerms:
        """L = Σ_j (x − x̂)² + λ(step) Σ_i f_i ‖W_dec[i]‖, mean over the batch (paper.md §10.5)."""
        x_hat, f = sae(x)
        sse, l1 = squared_error(x, x_hat), decoder_weighted_l1(f, sae.W_dec)
        loss = sse + self.l1_coeff_at(step) * l1
        return LossTerms(loss, f, {"mse": sse.detach() / x.shape[1], "l1": l1})  # mse logged per element

    def sparse_terms(self, sae: SparseAutoencoder, fwd: SparseForward) -> SparseTerms:
        """`loss` for the sparse step (`sparse_step.py`), with the gradients of λ Σ_i f_i ‖W_dec[i]‖.

        ∂/∂f_bi = λ/B · ‖W_dec[i]‖ at the active entries, and the norm's own decoder gradient
        ∂/∂W_dec[i] = λ/B · Σ_b f_bi · W_dec[i] / ‖W_dec[i]‖ (the decoder is free here).
        """
        batch, d_in = fwd.e.shape
        p, f_vals, W_dec = fwd.p, fwd.f_vals, sae.W_dec
        lam = self.l1_coeff_at(fwd.step)
        norms = W_dec.norm(dim=1)  # (n_features,)
        l1 = (f_vals * norms[p.col]).sum() / batch
        col_f = ops.column_sums(p, f_vals)  # (n_features,)
        return SparseTerms(
            fwd.sse + lam * l1,
            {"mse": fwd.sse / d_in, "l1": l1},
            grad_scale=2 / batch,
            grad_f=norms[p.col] * (lam / batch),
            grad_W_dec=(lam / batch) * (col_f / norms.clamp_min(1e-12))[:, None] * W_dec,
        )
