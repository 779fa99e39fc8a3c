"""BatchTopK sparse autoencoders (Bussmann, Leask and Nanda 2024): model and training recipe.

    pre   = (x − b_dec) @ W_enc + b_enc                       [batch, n_features]
    train: f = BatchTopK_{k·B}(ReLU(pre))                      the k·B largest entries of the whole batch
    infer: f = JumpReLU_θ(pre) = pre · H(pre − θ)              one threshold θ for every feature
    x̂     = f @ W_dec + b_dec ,  unit-norm decoder rows
    L     = mean over batch of (1/d_in) [ Σ_j (x − x̂)_j² + α Σ_j (e − ê)_j² ]      α = 1/32 (AuxK)

    sae = BatchTopKSAE(TopKSAEConfig(d_in=512, n_features=4096, k=32))
    train_sae([sae], batches, BatchTopKTrainConfig(n_steps=200_000))

Per input the number of active features varies; over a batch of B inputs it is k·B, so k is the
mean L0 during training. Training needs the batch, inference must not: after training the SAE
keeps features whose pre-activation exceeds one global threshold θ, "the average of the minimum
positive activation values across a number of batches" ([BTK] §3). Saved, it is a JumpReLU SAE
with the pre-encoder bias (SAELens saves its BatchTopK SAEs the same way).

Sources: [BTK] the paper (arXiv 2412.06410); [BTKC] its reference code, github.com/bartbussmann/
BatchTopK (config.py, sae.py, training.py):
- forward as above [BTK §3]; [BTKC] leaves b_enc out of the encoder, the paper's formula has it,
  and so do we;
- loss: MSE as a mean over elements, plus AuxK [GAO §2.4] as a mean over elements with
  α = 1/32, over the top `k_aux` = 512 dead latents, dead = not fired in 5 batches [BTKC
  `aux_penalty`, `top_k_aux`, `n_batches_to_dead`];
- Adam lr 3e-4, β = (0.9, 0.99), constant lr, no effective clipping (max_grad_norm 1e5) [BTKC];
  batch 4,096, 1B tokens [BTKC];
- init: W_enc Kaiming-uniform, W_dec = W_encᵀ with unit-norm rows, biases 0 [BTKC];
  unit-norm decoder rows with the parallel gradient removed [BTKC];
- inputs: [BTKC] standardises each input (`input_unit_norm`: x − mean, ÷ std, per row), which makes
  the SAE a nonlinear map; we scale all inputs by one constant to E‖x‖ = √d_in instead, the norm a
  standardised input has, so the saved SAE stays a plain one;
- θ: the mean of each step's smallest positive activation over the last `threshold_fraction` of
  the steps ([BTK]'s average over batches; dictionary_learning and SAELens keep a moving average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from monosemantic.sae import sparse_ops as ops
from monosemantic.sae.constraints import normalize_rows_
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.loss import LossTerms, squared_error
from monosemantic.sae.model import SAEConfig, SparseAutoencoder, register_sae
from monosemantic.sae.recipe import TrainConfig, register_recipe
from monosemantic.sae.sparse_step import SparseForward, SparseTerms
from monosemantic.sae.topk import TopKSAEConfig, auxk_gradients, auxk_loss

AUX_PENALTY = 1 / 32  # [BTKC] aux_penalty
TOP_K_AUX = 512  # [BTKC] top_k_aux
N_BATCHES_TO_DEAD = 5  # [BTKC] n_batches_to_dead


def batch_topk_positions(pre: Tensor, m: int) -> Tensor:
    """Row-major positions `[m]` (sorted) of the m largest entries of `pre [batch, n_features]`: as
    `pre.flatten().topk(m)`, without ranking every entry.

    `torch.topk` over a whole 4,096 × 4,096 batch took about 1 s on one core. Here a strided sample
    of 65,536 entries gives a value τ a little below the m-th largest (its quantile for 2m); the
    entries above τ are found with one compare, and if there are at least m of them the top m are
    among them (the m-th largest is then > τ), so ranking those is exact. Otherwise, or off a CPU
    float32 tensor, it is the plain `topk`. Ties at the m-th value may pick other entries of the
    same value than `torch.topk` (measure zero for float activations).
    """
    flat = pre.detach().reshape(-1)
    n = flat.numel()
    m = min(m, n)
    if flat.device.type == "cpu" and flat.dtype == torch.float32 and n >= 32 * m and n >= 1 << 17:
        sample = flat[:: max(1, n // 65_536)]
        q = sample.kthvalue(max(1, sample.numel() - round(2 * m * sample.numel() / n))).values
        cand = torch.from_numpy(np.flatnonzero(flat.numpy() > float(q)))
        if cand.numel() >= m:
            return cand[flat[cand].topk(m, sorted=False).indices].sort().values
    return flat.topk(m, sorted=False).indices.sort().values


def batch_topk(acts: Tensor, k: int) -> Tensor:
    """Keep the `k · batch` largest entries of `acts [batch, n_features]` (after ReLU), zero the rest."""
    flat = acts.flatten()
    top = flat.topk(min(k * acts.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter(-1, top.indices, top.values).view_as(acts)


@register_sae
class BatchTopKSAE(JumpReLUSAE):
    """A BatchTopK SAE in its saved (inference) form: JumpReLU with the pre-encoder bias and one θ.

        f = relu((x - b_dec) @ W_enc + b_enc) · [pre > θ]     # [batch, n_features]

    `cfg.k` is the mean number of active features the recipe trains for; θ is set by training
    (0 before, so an untrained SAE is a plain ReLU SAE). Init as [BTKC] (module docstring).
    """

    architecture: ClassVar[str] = "batchtopk"
    config_class: ClassVar[type[SAEConfig]] = TopKSAEConfig
    pre_encoder_bias: ClassVar[bool] = True
    saelens_import: ClassVar[bool] = False  # SAELens's jumprelu folders import as JumpReLUSAE
    cfg: TopKSAEConfig

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        super().reset_parameters(generator)  # biases and θ at 0
        bound = math.sqrt(6 / self.cfg.n_features)  # kaiming_uniform_ on W_enc [d_in, n_features]: fan_in = n_features
        self.W_enc.uniform_(-bound, bound, generator=generator)
        self.W_dec.copy_(self.W_enc.T)
        normalize_rows_(self.W_dec)


@register_recipe
@dataclass(frozen=True)
class BatchTopKTrainConfig(TrainConfig):
    """How to train a `BatchTopKSAE` ([BTK], [BTKC]); k is the SAE's `cfg.k` (`--k`)."""

    architecture: ClassVar[str] = "batchtopk"
    reference_steps: ClassVar[int] = 244_140
    """The run length the defaults are for: [BTKC] num_tokens 1e9 / batch_size 4,096."""

    lr: float = 3e-4
    """Adam learning rate, constant ([BTKC])."""
    adam_beta2: float = 0.99
    """Adam β2 ([BTKC])."""
    batch_size: int = 4096
    """Inputs per step ([BTKC]); k·batch_size entries are kept per step."""
    n_steps: int = 244_140
    """Optimizer steps ([BTKC]: 1B tokens); capped at one pass over the data."""
    normalize_inputs: bool = True
    """Scale inputs so that E‖x‖ = √d_in (module docstring), folded back at the end."""
    normalize_n_inputs: int = 16_384
    """How many of the first inputs the input scale is estimated on (not stated)."""
    aux_penalty: float = AUX_PENALTY
    """α, the AuxK coefficient ([BTKC]: 1/32); 0 turns AuxK off."""
    k_aux: int = TOP_K_AUX
    """Dead latents used by AuxK per input ([BTKC]: 512)."""
    dead_n_batches: int = N_BATCHES_TO_DEAD
    """Dead = not fired in this many steps ([BTKC]: 5)."""
    threshold_fraction: float = 0.5
    """θ averages each step's smallest positive activation over this last fraction of the steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = self.aux_penalty >= 0 and math.isfinite(self.aux_penalty)
        self._require(ok, "aux_penalty", "must be finite and >= 0")
        for name in ("normalize_n_inputs", "k_aux", "dead_n_batches"):
            self._require_count(name)
        self._require(0 < self.threshold_fraction <= 1, "threshold_fraction", "must be in (0, 1]")

    # -- the recipe: what train_sae asks of a train config (recipe.TrainRecipe) -----------------

    @property
    def n_init_inputs(self) -> int:
        return self.normalize_n_inputs if self.normalize_inputs else 0

    @property
    def init_b_dec(self) -> bool:
        return False  # [BTKC]: biases start at 0

    @property
    def dead_window(self) -> int:
        return self.dead_n_batches

    @property
    def resample_steps(self) -> list[int]:
        return []  # AuxK instead

    def lr_at(self, step: int) -> float:
        return self.lr

    def threshold_start(self) -> int:
        """The first step whose smallest positive activation enters θ."""
        return self.n_steps - max(1, round(self.threshold_fraction * self.n_steps)) + 1

    def loss(self, sae: SparseAutoencoder, x: Tensor, step: int, dead: Tensor) -> LossTerms:
        """(1/d_in)·[Σ_j (x − x̂)² + α·AuxK], mean over the batch ([BTKC] `get_loss_dict`)."""
        d_in = x.shape[1]
        pre = sae.pre_activations(x)  # (batch, n_features)
        f = batch_topk(pre.relu(), _k(sae))
        x_hat = sae.decode(f)
        sse = squared_error(x, x_hat)
        aux = auxk_loss(pre, dead, self.k_aux, sae.W_dec, (x - x_hat).detach())
        return LossTerms((sse + self.aux_penalty * aux) / d_in, f, {"mse": sse.detach() / d_in, "auxk": aux / d_in})

    def sparse_pattern(self, sae: SparseAutoencoder, pre: Tensor) -> ops.Pattern:
        """The k·B largest entries of the batch's pre-activations, row-major."""
        top = batch_topk_positions(pre, _k(sae) * pre.shape[0])
        return ops.pattern_from_flat(top, (pre.shape[0], pre.shape[1]))

    def sparse_terms(self, sae: SparseAutoencoder, fwd: SparseForward) -> SparseTerms:
        """`loss` for the sparse step: mean MSE, plus AuxK over the dead features."""
        batch, d_in = fwd.e.shape
        terms = SparseTerms(fwd.sse / d_in, {"mse": fwd.sse / d_in}, grad_scale=2 / (batch * d_in))
        aux = torch.zeros((), dtype=fwd.e.dtype, device=fwd.e.device)
        if self.aux_penalty > 0 and bool(fwd.dead.any()):
            coeff = self.aux_penalty / d_in
            aux, pa, grad_pa, terms.grad_W_dec = auxk_gradients(
                fwd.x_bar, sae.W_enc, sae.b_enc, sae.W_dec, fwd.dead, self.k_aux, -fwd.e, coeff
            )
            terms.grad_pre.append((pa, grad_pa))
        terms.loss = terms.loss + self.aux_penalty * aux / d_in
        terms.parts["auxk"] = aux / d_in
        return terms

    @torch.no_grad()
    def after_step(self, sae: SparseAutoencoder, terms: LossTerms, step: int) -> None:
        """θ ← running mean of each step's smallest positive activation, from `threshold_start` on."""
        start = self.threshold_start()
        if step < start:
            return
        f = terms.f
        values = f.values() if f.layout == torch.sparse_csr else f.reshape(-1)
        positive = values[values > 0]
        if positive.numel() == 0:
            return
        theta = sae.get_parameter("threshold")
        n = step - start + 1  # batches averaged so far, this one included (so a resumed run continues alike)
        theta.add_((positive.min() - theta) / n)


def _k(sae: SparseAutoencoder) -> int:
    k: int = getattr(sae.cfg, "k")  # noqa: B009 (BatchTopK's shape is a TopKSAEConfig)
    return k
