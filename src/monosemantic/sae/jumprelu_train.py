"""Training JumpReLU SAEs: the Gemma Scope recipe (an L0 penalty through straight-through estimators).

    L = mean over batch of [ Σ_j (x − x̂)_j²  +  λ(step) Σ_i H(pre_i − θ_i) ]      inputs scaled to E‖x‖ = 1

    sae = JumpReLUSAE(SAEConfig(d_in=512, n_features=4096))
    train_sae([sae], batches, JumpReLUTrainConfig(n_steps=200_000))

The step function H and JumpReLU have no useful gradient with respect to the threshold θ, so the
backward pass uses pseudo-derivatives built from a rectangle kernel K(u) = 1[|u| < 1/2] of
bandwidth ε ([JA] §4, eq. 11–12; the DeepMind pseudocode of [JA]'s appendix):

    ∂/∂θ JumpReLU_θ(z) := −(θ/ε) K((z − θ)/ε)      ∂/∂z JumpReLU_θ(z) = H(z − θ)
    ∂/∂θ H(z − θ)      := −(1/ε) K((z − θ)/ε)      ∂/∂z H(z − θ)      := 0

so only pre-activations within ε/2 of a threshold move it. Sources: [JA] = Rajamanoharan et al.
2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders";
[GS] = Lieberum et al. 2024, "Gemma Scope" (the recipe its SAEs were trained with); [A25] =
Anthropic's "Circuits Updates, January 2025" (its JumpReLU setup, as SAELens 6.11+ implements it);
[GS2] = McDougall et al. 2025, "Gemma Scope 2" (its quadratic penalty around a target L0, as SAELens
implements it);
*(confirm)*
marks values we know from public reimplementations (SAELens's Gemma-Scope-style configs,
dictionary_learning's `JumpReluTrainer`) rather than the papers' text.

- forward `f = JumpReLU_θ(x W_enc + b_enc)`, `x̂ = f W_dec + b_dec`, no pre-encoder bias [JA eq. 8];
- loss: squared error + λ·L0 [JA eq. 9–10], on inputs scaled by one constant to unit mean norm
  ([GS] scales to unit mean *squared* norm; our `Normalizer` fits the mean norm, as for the other
  recipes, here divided by √d_in: `unit_norm`). θ₀ and ε, both 0.001 [JA, GS], are meant for that
  scale: on E‖x‖ = √d_in the threshold would have √d_in times as far to travel at Adam's ~lr per
  step (we measured it: θ barely moved in a short run);
- Adam β = (0, 0.999), ε 1e-8, lr 7e-5 [GS; the released Gemma Scope SAEs all use 7e-5], warmed
  up along a cosine from 0.1·lr over the first 1,000 steps, λ warmed up linearly from 0 over the
  first 10,000 steps [GS] *(confirm)*; batch 4,096 [GS];
- init: decoder rows random unit directions, W_enc = W_decᵀ, biases 0, θ = θ₀ [GS, JA];
  unit-norm decoder rows with the parallel gradient removed (`constraints.optimizer_step_`) [GS]
  *(confirm; dictionary_learning does so)*; no resampling and no auxiliary loss [GS];
- θ is trained directly and projected to θ ≥ 0 after each step, as SAELens does; [JA]'s pseudocode
  trains log θ, which Adam barely moves in a short run (the reason SAELens 6.x switched to θ).

Three options from [A25], off by default: `sparsity="tanh"` penalises Σ tanh(c·f_i) (c = 4) instead
of the L0; `ste_to_input` lets the estimators' gradient reach the pre-activations too (∂/∂z = −∂/∂θ,
since both depend on z − θ only), so an input just below θ can pull the encoder towards it; and
`pre_act_coeff` adds λ_P Σ ReLU(θ_i − pre_i) over the dead features (SAELens restricts it to them),
which gives a feature that never fires a gradient towards the inputs. [A25]'s ‖W_dec,i‖ factors are
1 here (unit-norm rows; their gradient along the row is what the constraint removes).

The sparse step (`sparse_step.py`) handles the same loss exactly: the active set is `pre > θ`
(`sparse_pattern`), and θ's pseudo-gradient needs the entries within ε/2 of θ on both sides,
found on the dense pre-activations (`sparse_terms`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from monosemantic.errors import UserError
from monosemantic.sae import sparse_ops as ops
from monosemantic.sae.jumprelu import THRESHOLD_INIT, JumpReLUSAE, jumprelu
from monosemantic.sae.loss import LossTerms, squared_error
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.recipe import TrainConfig, register_recipe
from monosemantic.sae.schedule import cosine_warmup, linear_warmup
from monosemantic.sae.sparse_step import SparseForward, SparseTerms

__all__ = ["JumpReLUSAE", "JumpReLUTrainConfig", "rectangle", "step_ste"]

log = logging.getLogger(__name__)

SHORT_RUN_STEPS = 10_000
"""Fitting the recipe to a shorter run is refused unless `allow_short_run`: one pass of 976 steps on 256-d planted
data found 2 % of the directions, and 3,906 or 7,812 steps about 70 % whatever the penalty (docs/benchmarks.md,
"What the JumpReLU failure is")."""


def quadratic_l0(l0: Tensor, target: float) -> Tensor:
    """Gemma Scope 2's penalty around a target L0 T ([GS2]): the batch mean of (2/T)(L0_b − T)², from `l0 [batch]`."""
    return (2 / target * (l0 - target).square()).mean()


def rectangle(u: Tensor) -> Tensor:
    """The kernel K(u) = 1 where −1/2 < u < 1/2, else 0 ([JA] eq. 11), in u's dtype."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """JumpReLU_θ(z) = z·H(z − θ) with [JA]'s pseudo-derivative for θ (module docstring)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float, to_input: bool) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps, ctx.to_input = eps, to_input
        return jumprelu(z, theta)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        z, theta = ctx.saved_tensors
        ste = (theta / ctx.eps) * rectangle((z - theta) / ctx.eps) * grad
        grad_z = (z > theta) * grad
        if ctx.to_input:  # [A25]: the jump's estimator reaches z too, as −∂/∂θ (it depends on z − θ only)
            grad_z = grad_z + ste
        return grad_z, -ste.sum(0), None, None


class _Step(torch.autograd.Function):
    """H(z − θ), with no gradient for z and [JA]'s pseudo-derivative for θ."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float, to_input: bool) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps, ctx.to_input = eps, to_input
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, None, None]:
        z, theta = ctx.saved_tensors
        ste = (1.0 / ctx.eps) * rectangle((z - theta) / ctx.eps) * grad
        return (ste if ctx.to_input else None), -ste.sum(0), None, None


def step_ste(z: Tensor, theta: Tensor, eps: float, to_input: bool = False) -> Tensor:
    """H(z − θ) `[batch, n_features]` whose backward reaches θ (and z, with `to_input`) through the kernel."""
    out: Tensor = _Step.apply(z, theta, eps, to_input)
    return out


@register_recipe
@dataclass(frozen=True)
class JumpReLUTrainConfig(TrainConfig):
    """How to train a `JumpReLUSAE` ([GS]). Defaults follow the module docstring."""

    architecture: ClassVar[str] = "jumprelu"
    reference_steps: ClassVar[int] = 1_000_000
    """The run length the defaults are for: [GS] trained on billions of tokens at batch 4,096 (confirm)."""
    step_windows: ClassVar[tuple[str, ...]] = ("lr_warmup_steps", "l0_warmup_steps", "dead_n_inputs")
    """Counted in steps or inputs, so `for_run` scales them with the run."""

    lr: float = 7e-5
    """Adam learning rate after warm-up ([GS])."""
    adam_beta1: float = 0.0
    """Adam β1 ([JA], [GS]: 0)."""
    batch_size: int = 4096
    """Inputs per step ([GS])."""
    n_steps: int = 1_000_000
    """Optimizer steps; capped at one pass over the data."""
    normalize_inputs: bool = True
    """Scale inputs by one constant to E‖x‖ = 1 (module docstring), folded back at the end."""
    l0_coeff: float = 0.05
    """λ on the L0 penalty, on inputs of unit mean norm: roughly the share of ‖x‖² a feature must explain to
    be worth firing. [GS] sweeps it per SAE; this default is from planted data (docs/decisions.md, "JumpReLU
    and BatchTopK"); --auto-l1 chooses it from held-out FVU."""
    bandwidth: float = 0.001
    """ε of the rectangle kernel, on inputs of unit mean norm ([JA], [GS]: 0.001)."""
    threshold_init: float = THRESHOLD_INIT
    """θ at init, on the same scale ([JA], [GS]: 0.001)."""
    lr_warmup_steps: int = 1_000
    """Cosine warm-up of the learning rate from 0.1·lr over this many steps ([GS], confirm)."""
    l0_warmup_steps: int = 10_000
    """Linear warm-up of λ from 0 over this many steps ([GS], confirm)."""
    normalize_n_inputs: int = 16_384
    """How many of the first inputs the input scale is estimated on (not stated)."""
    dead_n_inputs: int = 10_000_000
    """Dead = no activation on this many inputs, for the logged dead_fraction (as April 2024) and the
    pre-activation loss."""
    sparsity: str = "step"
    """The penalty λ multiplies: `step`, the L0 Σ H(pre − θ) ([JA], [GS]); `tanh`, Σ tanh(c·f) ([A25]); or
    `quadratic`, (2/T)(L0 − T)² per input around a target L0 T ([GS2])."""
    target_l0: float = 0.0
    """T of the `quadratic` penalty: the L0 each input is pulled towards ([GS2]); required by it, unused otherwise."""
    tanh_scale: float = 4.0
    """c of the `tanh` penalty ([A25]: 4)."""
    pre_act_coeff: float = 0.0
    """λ_P of the pre-activation loss λ_P Σ_dead ReLU(θ − pre) ([A25]), over the dead features only, as
    SAELens applies it: it gives a silent feature a gradient towards the inputs. 0 turns it off."""
    ste_to_input: bool = False
    """Let the estimators' gradient reach the pre-activations, not only θ ([A25]; SAELens `jumprelu_ste_to_input`)."""
    allow_short_run: bool = False
    """Fit the recipe to a run under 10,000 steps instead of refusing it; on narrow inputs (32-d planted data) such a
    run can work, on wide ones it ends with few useful features (docs/benchmarks.md, "What the JumpReLU failure is")."""

    sparsity_field: ClassVar[str] = "l0_coeff"
    """The λ that `--l1-coeffs` and `--auto-l1` sweep for this recipe."""
    unit_norm: ClassVar[bool] = True
    """The trainer scales inputs to E‖x‖ = 1, not √d_in (module docstring)."""

    def for_run(self, n_steps: int) -> tuple[JumpReLUTrainConfig, dict[str, tuple[Any, Any]]]:
        """`TrainConfig.for_run`, refusing to fit a run under SHORT_RUN_STEPS (UserError) unless `allow_short_run`:
        θ climbs under the L0 penalty faster than a rarely firing encoder aligns, so such a run ends with few
        useful features on wide inputs. The message names the flags that give a usable dictionary instead."""
        if self.fit_to_run and n_steps < min(SHORT_RUN_STEPS, self.reference_steps):
            if not self.allow_short_run:
                raise UserError(
                    f"--arch jumprelu: {n_steps:,} steps is too short for the Gemma Scope recipe (published for about "
                    f"{self.reference_steps:,}; under {SHORT_RUN_STEPS:,} steps the thresholds silence features "
                    "before their encoders align, and one pass of 976 steps on 256-d planted data found 2 % of the "
                    "directions). Use --arch batchtopk --k K, whose SAEs are saved as JumpReLU SAEs (100 % on the "
                    "same data); or more steps from the same rows with a target L0 (--batch-size 1024 --sparsity "
                    "quadratic --target-l0 K: 72 %); or --allow-short-run to train it anyway "
                    '(docs/benchmarks.md, "What the JumpReLU failure is")'
                )
            log.warning(
                "jumprelu: %d steps is short for this recipe (published: about %s); on wide inputs it can end with "
                'few useful features (docs/benchmarks.md, "What the JumpReLU failure is")',
                n_steps,
                f"{self.reference_steps:,}",
            )
        return super().for_run(n_steps)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.sparsity in ("step", "tanh", "quadratic"), "sparsity", "must be step, tanh or quadratic")
        self._require(
            self.sparsity != "quadratic" or self.target_l0 > 0, "target_l0", "must be > 0 with --sparsity quadratic"
        )
        for name in ("l0_coeff", "bandwidth", "threshold_init", "tanh_scale", "pre_act_coeff"):
            value = getattr(self, name)
            self._require(value >= 0 and math.isfinite(value), name, "must be finite and >= 0")
        self._require(self.bandwidth > 0, "bandwidth", "must be > 0")
        for name in ("lr_warmup_steps", "l0_warmup_steps"):
            value = getattr(self, name)
            self._require(isinstance(value, int) and value >= 0, name, "must be an int >= 0")
        for name in ("normalize_n_inputs", "dead_n_inputs"):
            self._require_count(name)

    # -- the recipe: what train_sae asks of a train config (recipe.TrainRecipe) -----------------

    @property
    def n_init_inputs(self) -> int:
        return self.normalize_n_inputs

    @property
    def init_b_dec(self) -> bool:
        return False  # [GS]: biases start at 0

    @property
    def dead_window(self) -> int:
        return math.ceil(self.dead_n_inputs / self.batch_size)

    @property
    def resample_steps(self) -> list[int]:
        return []  # [GS]: no resampling

    def lr_at(self, step: int) -> float:
        return self.lr * cosine_warmup(step, self.lr_warmup_steps, 0.1)

    def l0_coeff_at(self, step: int) -> float:
        warmup = self.l0_warmup_steps / self.n_steps if self.n_steps else 0.0
        return self.l0_coeff * linear_warmup(step, self.n_steps, warmup)

    def eps(self, sae: SparseAutoencoder) -> float:
        return self.bandwidth

    @torch.no_grad()
    def start_from_data(self, sae: SparseAutoencoder, x: Tensor) -> None:
        """θ = θ₀ on the training scale (after the input scale is fitted; `data_init.init_from_data`)."""
        sae.get_parameter("threshold").fill_(self.threshold_init)

    @torch.no_grad()
    def after_step(self, sae: SparseAutoencoder, terms: LossTerms, step: int) -> None:
        sae.get_parameter("threshold").clamp_(min=0.0)  # θ ≥ 0, or negative pre-activations would pass

    def loss(self, sae: SparseAutoencoder, x: Tensor, step: int, dead: Tensor) -> LossTerms:
        """Squared error + λ(step)·penalty (+ the pre-activation loss), with the STEs of the module docstring.

        Decoder rows are unit norm, so [A25]'s ‖W_dec,i‖ factors are 1 and left out."""
        theta, eps, to_input = sae.get_parameter("threshold"), self.eps(sae), self.ste_to_input
        pre = sae.pre_activations(x)  # (batch, n_features)
        f = _JumpReLU.apply(pre, theta, eps, to_input)
        sse = squared_error(x, sae.decode(f))
        if self.sparsity == "tanh":
            penalty = torch.tanh(self.tanh_scale * f).sum(dim=-1).mean()
        else:
            l0 = step_ste(pre, theta, eps, to_input).sum(dim=-1)  # (batch,)
            penalty = quadratic_l0(l0, self.target_l0) if self.sparsity == "quadratic" else l0.mean()
        parts = {"mse": sse.detach() / x.shape[1], "l0_loss": penalty}  # mse logged per element
        loss = sse + self.l0_coeff_at(step) * penalty
        if self.pre_act_coeff > 0:
            pre_act = ((theta - pre).relu() * dead).sum(dim=-1).mean()
            loss = loss + self.pre_act_coeff * pre_act
            parts["pre_act_loss"] = pre_act.detach()
        return LossTerms(loss, f, parts)

    def sparse_pattern(self, sae: SparseAutoencoder, pre: Tensor) -> ops.Pattern:
        """The active set `pre > θ` of the dense pre-activations (float32 or bfloat16)."""
        theta = sae.get_parameter("threshold").detach()
        if pre.dtype == torch.float32:
            return ops.positive_pattern(pre, theta)
        return ops.positive_pattern(pre - theta.to(pre.dtype))

    def sparse_terms(self, sae: SparseAutoencoder, fwd: SparseForward) -> SparseTerms:
        """`loss` for the sparse step: the reconstruction's gradients as for any SAE, plus the penalty's and θ's.

        Per entry within ε/2 of θ_i (active or not), the estimators give s = (θ_i/ε)·∂L/∂f (JumpReLU)
        + λ/(B·ε) (the `step` penalty; with `tanh` its gradient is part of ∂L/∂f instead): θ_i gets −Σ s,
        and with `ste_to_input` the pre-activation gets +s. The pre-activation loss touches every input of
        a dead feature, so its encoder gradient is dense over those features (`grad_enc_cols`).
        """
        assert fwd.pre is not None  # given because this recipe has `sparse_pattern`
        batch, d_in = fwd.e.shape
        n = fwd.pre.shape[1]
        W_enc, b_enc, W_dec = sae.W_enc, sae.b_enc, sae.W_dec
        theta, eps, lam = sae.get_parameter("threshold").detach(), self.eps(sae), self.l0_coeff_at(fwd.step)
        grad_scale = 2 / batch
        tanh_c = self.tanh_scale if self.sparsity == "tanh" else None
        grad_f, row_weight = None, None
        if self.sparsity == "quadratic":  # ∂/∂L0_b of (2/T)(L0_b − T)²: each row's step estimator is scaled by it
            l0 = fwd.p.crow.diff().to(fwd.e.dtype)  # (batch,)
            penalty = quadratic_l0(l0, self.target_l0)
            row_weight = 4 / self.target_l0 * (l0 - self.target_l0)
        elif tanh_c is None:
            penalty = torch.tensor(fwd.f_vals.numel() / batch, dtype=fwd.e.dtype, device=fwd.e.device)
        else:
            t = torch.tanh(tanh_c * fwd.f_vals)  # (nnz,)
            penalty = t.sum() / batch
            grad_f = (lam * tanh_c / batch) * (1 - t * t)
        # entries near a threshold: found on the dense pre-activations, then recomputed exactly
        near = (fwd.pre - theta.to(fwd.pre.dtype)).abs_().lt_(eps / 2)  # (batch, n_features) bool
        pb = ops.pattern_from_flat(near.view(-1).nonzero().squeeze(1), (batch, n))
        z = ops.sampled_matmul(pb, fwd.x_bar, W_enc, b_enc[pb.col])  # (nnz_band,)
        th = theta[pb.col]
        k = rectangle((z - th) / eps)
        g_f = ops.sampled_matmul(pb, fwd.e * grad_scale, W_dec.T)  # ∂L/∂f at those entries (reconstruction)
        if tanh_c is None:
            step_term = lam / (batch * eps) if row_weight is None else row_weight[pb.row] * (lam / (batch * eps))
            ste = k * ((th / eps) * g_f + step_term)
        else:
            t_band = torch.tanh(tanh_c * z * (z > th))  # tanh(c·f), f = 0 below θ
            ste = k * (th / eps) * (g_f + (lam * tanh_c / batch) * (1 - t_band * t_band))
        grad_theta = -ops.column_sums(pb, ste)
        parts = {"mse": fwd.sse / d_in, "l0_loss": penalty}
        loss = fwd.sse + lam * penalty
        terms = SparseTerms(loss, parts, grad_scale=grad_scale, grad_f=grad_f)
        if self.ste_to_input:
            terms.grad_pre.append((pb, ste))
        if self.pre_act_coeff > 0:
            pre_act = self._pre_act_sparse(sae, fwd, theta, grad_theta, terms)
            terms.loss = loss + self.pre_act_coeff * pre_act
            parts["pre_act_loss"] = pre_act
        terms.param_grads["threshold"] = grad_theta
        return terms

    def _pre_act_sparse(
        self, sae: SparseAutoencoder, fwd: SparseForward, theta: Tensor, grad_theta: Tensor, terms: SparseTerms
    ) -> Tensor:
        """Σ_dead ReLU(θ − pre), mean over the batch; adds its gradients to `grad_theta` and `terms`."""
        batch = fwd.e.shape[0]
        cols = fwd.dead.nonzero().squeeze(1)  # (n_dead,)
        if not cols.numel():
            return torch.zeros((), dtype=fwd.e.dtype, device=fwd.e.device)
        z = torch.addmm(sae.b_enc[cols], fwd.x_bar, sae.W_enc[:, cols])  # (batch, n_dead), exact
        gap = theta[cols] - z
        below = (gap > 0).to(z.dtype)  # where ReLU(θ − pre) has slope 1
        scale, n_below = self.pre_act_coeff / batch, below.sum(0)  # (n_dead,)
        grad_theta.index_add_(0, cols, n_below * scale)  # ∂/∂θ = +1, ∂/∂pre = −1 per entry below θ
        terms.grad_enc_cols = (cols, (below.T @ fwd.x_bar) * -scale, n_below * -scale)
        return gap.relu().sum() / batch
