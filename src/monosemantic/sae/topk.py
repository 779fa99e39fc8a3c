"""TopK sparse autoencoder with the AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    pre   = (x − b_dec) @ W_enc + b_enc                   [batch, n_features]
    f     = ReLU(TopK_k(pre))                             keep the k largest per row, zero the rest
    x̂     = f @ W_dec + b_dec                             [batch, d_in], unit-norm decoder rows
    e     = x − x̂  (detached);   ê = z_aux @ W_dec         z_aux = ReLU(TopK_k_aux(pre over dead features))
    L     = mean over batch of [ Σ_j (x − x̂)_j²  +  (1/32) Σ_j (e − ê)_j² ]

    sae = TopKSAE(TopKSAEConfig(d_in=512, n_features=4096, k=32))
    train_sae([sae], batches, TopKTrainConfig(n_steps=200_000))

Sparsity is set by k, so there is no L1 term. Constants and where they come from ([GAO] = the paper,
[OA] = its reference code `openai/sparse_autoencoder` `train.py`):
- forward `latents = relu(topk(encoder(x - pre_bias) + latent_bias))` with a tied pre-bias [OA];
  the pre-bias (our b_dec) starts at the geometric median of the data [GAO §2.1, OA `init_from_data_`];
- unit-norm decoder rows with the row-parallel gradient removed, as in the 2023 recipe [GAO, OA];
  here through the same `constraints.optimizer_step_`;
- init: W_enc = W_decᵀ, decoder rows random unit directions [GAO §2.4 "Preventing dead latents"];
  [OA] also rescales the encoder from data, "couldn't find clear evidence that this is
  beneficial", so we leave that out;
- AuxK [GAO §2.4]: the top-k_aux *dead* latents reconstruct the residual e; coefficient α = 1/32
  ([GAO]; [OA] `auxk_coef = 1/32`); dead = not fired in the last 10M tokens ([GAO]; [OA]
  `dead_toks_threshold = 10_000_000`); k_aux defaults to d_in / 2 ([GAO] appendix heuristic "a power
  of two close to d_model/2", as sparsify and SAELens read it; [OA] uses 256 for d_model 768);
- Adam ε = 6.25e-10 and lr 1e-4, constant, no clipping ([OA] `Config`).
Our losses are both summed over d_in (as [GAO]'s ‖·‖² and SAELens), so α = 1/32 compares them in
the same units; [OA] instead normalises the main MSE by the data variance and AuxK by the
residual's variance. With no dead latent the AuxK term is exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from monosemantic.sae import sparse_ops as ops
from monosemantic.sae.constraints import normalize_rows_
from monosemantic.sae.loss import LossTerms, squared_error
from monosemantic.sae.model import SAEConfig, SparseAutoencoder, register_sae
from monosemantic.sae.recipe import TrainConfig, register_recipe
from monosemantic.sae.sparse_step import SparseForward, SparseTerms

AUXK_COEFF = 1 / 32  # [GAO] §2.4; [OA] auxk_coef
DEAD_N_INPUTS = 10_000_000  # [GAO]; [OA] dead_toks_threshold


@dataclass(frozen=True)
class TopKSAEConfig(SAEConfig):
    """Shape of a TopK sparse autoencoder."""

    k: int = 32
    """Active features per input ([OA] default 32)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= self.n_features:
            raise ValueError(f"TopKSAEConfig.k must be an int in [1, n_features], got {self.k!r}")


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the k largest entries of each row, ReLU them, zero the rest (ties broken by torch.topk).

    Args:
        pre: `[batch, n_features]`. k: 1 ≤ k ≤ n_features.
    Returns:
        `[batch, n_features]`, at most k nonzeros per row (fewer only where a top-k entry is ≤ 0).
    """
    values, indices = pre.topk(k, dim=-1, sorted=False)  # (batch, k)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def auxk_loss(pre: Tensor, dead: Tensor, k_aux: int, W_dec: Tensor, residual: Tensor) -> Tensor:
    """AuxK without its coefficient: how well the top-k_aux dead latents reconstruct the residual [GAO §2.4].

    Args:
        pre: `[batch, n_features]` pre-activations. dead: `[n_features]` bool.
        k_aux: how many dead latents per input (fewer are used when fewer are dead).
        W_dec: `[n_features, d_in]`. residual: `[batch, d_in]`, e = x − x̂, detached by the caller.
    Returns:
        scalar ‖e − z_aux @ W_dec‖² summed over d_in, mean over the batch; exactly 0 when nothing is dead.
    """
    masked = pre.masked_fill(~dead, -math.inf)  # only dead latents may win
    z_aux = topk_relu(masked, min(k_aux, pre.shape[-1]))  # live ones that "win" come out as relu(-inf) = 0
    loss = squared_error(residual, z_aux @ W_dec)
    return torch.where(dead.any(), loss, torch.zeros_like(loss))  # no host sync


def auxk_gradients(
    x_bar: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, dead: Tensor, k_aux: int, residual: Tensor, coeff: float
) -> tuple[Tensor, ops.Pattern, Tensor, Tensor]:
    """AuxK's loss and gradients over the active set (the sparse step's counterpart of `auxk_loss`).

    Live latents never win, so only the dead columns of the encoder are computed and ranked
    (exactly, in float32).
    Args:
        x_bar: `[batch, d_in]` encoder input. W_enc `[d_in, n_features]`, b_enc `[n_features]`,
        W_dec `[n_features, d_in]`. dead: `[n_features]` bool, at least one True. k_aux: as in
        `auxk_loss`. residual: `[batch, d_in]`, x − x̂. coeff: α.
    Returns:
        (aux scalar, its pattern in `[batch, n_features]`, ∂(coeff·aux)/∂pre at the pattern `[nnz]`,
        ∂(coeff·aux)/∂W_dec `[n_features, d_in]`).
    """
    batch, n = x_bar.shape[0], W_enc.shape[1]
    dead_idx = dead.nonzero().squeeze(1)  # (n_dead,)
    pre_dead = torch.addmm(b_enc[dead_idx], x_bar, W_enc[:, dead_idx])  # (batch, n_dead), float32
    kk = min(k_aux, n, dead_idx.numel())
    top = pre_dead.topk(kk, dim=-1, sorted=False)
    cols = dead_idx[top.indices]  # (batch, kk)
    order = cols.argsort(dim=-1)
    cols, vals = cols.gather(1, order), top.values.gather(1, order)
    pa = ops.Pattern(
        torch.arange(0, batch * kk + 1, kk, device=x_bar.device),
        cols.reshape(-1),
        torch.arange(batch, device=x_bar.device).repeat_interleave(kk),
        (batch, n),
    )
    vals = vals.reshape(-1)
    z = vals.relu()
    u = residual - ops.spmm(pa, z, W_dec)  # (batch, d_in)
    aux = u.pow(2).sum(dim=-1).mean()
    ga = u * (-2 * coeff / batch)  # ∂(coeff·aux)/∂ê
    grad_pre = ops.sampled_matmul(pa, ga, W_dec.T) * (vals > 0)
    return aux, pa, grad_pre, ops.spmm_t(ops.transpose(pa), z, ga)


@register_sae
class TopKSAE(SparseAutoencoder):
    """TopK SAE: the paper's tied pre-encoder bias and unit-norm decoder, with TopK in place of ReLU.

        f = relu(topk((x - b_dec) @ W_enc + b_enc, k))   # [batch, n_features], ≤ k nonzeros per row
        x_hat = f @ W_dec + b_dec                        # [batch, d_in]

    Init: decoder rows random unit directions, W_enc = W_decᵀ, biases 0; the trainer then sets
    b_dec to the geometric median (module docstring).
    """

    architecture: ClassVar[str] = "topk"
    config_class: ClassVar[type[SAEConfig]] = TopKSAEConfig
    saelens_architecture: ClassVar[str] = "topk"
    cfg: TopKSAEConfig

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        d = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)  # (n_features, d_in)
        self.W_dec.copy_(d)
        normalize_rows_(self.W_dec)
        self.W_enc.copy_(self.W_dec.T)  # [GAO §2.4]: encoder starts as the decoder's transpose
        self.b_enc.zero_()
        self.b_dec.zero_()

    @property
    def top_k(self) -> int | None:
        return self.cfg.k

    def activation(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.cfg.k)


@register_recipe
@dataclass(frozen=True)
class TopKTrainConfig(TrainConfig):
    """How to train a `TopKSAE` (Gao et al. 2024). Defaults follow the paper's reference code where it gives one.

    From `TrainConfig`: lr 1e-4, constant, Adam β (0.9, 0.999) and no clipping as [OA] (which the
    paper's lr scales with the number of latents); inputs not normalised, as in [OA].
    """

    architecture: ClassVar[str] = "topk"
    reference_steps: ClassVar[int] = 200_000
    """The run length the defaults are for: the n_steps below (the April 2024 default; [GAO] gives none)."""
    step_windows: ClassVar[tuple[str, ...]] = ("dead_n_inputs",)
    """Counted in inputs, so `for_run` scales it with the run."""

    batch_size: int = 4096
    """Inputs per step (not from [GAO]; the April 2024 default, so the two recipes compare)."""
    n_steps: int = 200_000
    """Optimizer steps (not from [GAO]; as for April 2024)."""
    adam_eps: float = 6.25e-10
    """Adam ε ([OA])."""
    k_aux: int | None = None
    """Dead latents used by AuxK per input; None means d_in // 2 ([GAO] heuristic, module docstring)."""
    auxk_coeff: float = AUXK_COEFF
    """α, the AuxK coefficient ([GAO]: 1/32); 0 turns AuxK off."""
    dead_n_inputs: int = DEAD_N_INPUTS
    """Dead = not fired on this many of the latest inputs ([GAO]: 10M tokens); rounded up to whole steps."""
    b_dec_init: Literal["geometric_median", "keep"] = "geometric_median"
    """`geometric_median` sets b_dec from the first inputs of the stream ([GAO], [OA]); `keep` leaves it."""
    b_dec_init_n_inputs: int = 16_384
    """How many inputs the geometric median is computed on ([OA]: 32,768)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.auxk_coeff >= 0 and math.isfinite(self.auxk_coeff), "auxk_coeff", "must be finite and >= 0")
        for name in ("dead_n_inputs", "b_dec_init_n_inputs"):
            self._require_count(name)
        k_aux = self.k_aux
        self._require(k_aux is None or (isinstance(k_aux, int) and k_aux >= 1), "k_aux", "must be an int >= 1 or None")
        self._require(self.b_dec_init in ("geometric_median", "keep"), "b_dec_init", "must be geometric_median or keep")

    # -- the recipe: what train_sae asks of a train config (recipe.TrainRecipe) -----------------

    @property
    def init_b_dec(self) -> bool:
        return self.b_dec_init == "geometric_median"

    @property
    def n_init_inputs(self) -> int:
        return self.b_dec_init_n_inputs if self.init_b_dec or self.normalize_inputs else 0

    @property
    def dead_window(self) -> int:
        return math.ceil(self.dead_n_inputs / self.batch_size)

    @property
    def resample_steps(self) -> list[int]:
        return []  # AuxK replaces resampling

    def lr_at(self, step: int) -> float:
        return self.lr

    def loss(self, sae: SparseAutoencoder, x: Tensor, step: int, dead: Tensor) -> LossTerms:
        """L = Σ_j (x − x̂)² + α · AuxK, mean over the batch [GAO §2.4]."""
        pre = sae.pre_activations(x)  # (batch, n_features)
        f = sae.activation(pre)
        x_hat = sae.decode(f)
        sse = squared_error(x, x_hat)
        aux = auxk_loss(pre, dead, self.k_aux_for(sae), sae.W_dec, (x - x_hat).detach())
        return LossTerms(sse + self.auxk_coeff * aux, f, {"mse": sse.detach() / x.shape[1], "auxk": aux})

    def sparse_terms(self, sae: SparseAutoencoder, fwd: SparseForward) -> SparseTerms:
        """`loss` for the sparse step (`sparse_step.py`): summed MSE, plus AuxK over the dead features."""
        batch, d_in = fwd.e.shape
        terms = SparseTerms(fwd.sse, {"mse": fwd.sse / d_in}, grad_scale=2 / batch)
        aux = torch.zeros((), dtype=fwd.e.dtype, device=fwd.e.device)
        if self.auxk_coeff > 0 and bool(fwd.dead.any()):
            W_enc, b_enc, W_dec, k_aux = sae.W_enc, sae.b_enc, sae.W_dec, self.k_aux_for(sae)
            aux, pa, grad_pa, terms.grad_W_dec = auxk_gradients(
                fwd.x_bar, W_enc, b_enc, W_dec, fwd.dead, k_aux, -fwd.e, self.auxk_coeff
            )
            terms.grad_pre.append((pa, grad_pa))
        terms.loss = terms.loss + self.auxk_coeff * aux
        terms.parts["auxk"] = aux
        return terms

    def k_aux_for(self, sae: SparseAutoencoder) -> int:
        """`k_aux`, or its default d_in // 2 for this SAE."""
        return self.k_aux if self.k_aux is not None else max(1, sae.cfg.d_in // 2)
