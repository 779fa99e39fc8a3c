"""JumpReLU sparse autoencoder: the model the published JumpReLU, Gated and BatchTopK SAEs run as.

    pre = x @ W_enc + b_enc                  [batch, n_features]   (x − b_dec with a pre-encoder bias)
    f   = ReLU(pre) · [pre > θ]              θ = threshold [n_features], one per feature
    x̂   = f @ W_dec + b_dec                  [batch, d_in]

    sae = JumpReLUSAE(SAEConfig(d_in=2304, n_features=16384))   # weights from `sae import`

Where the weights come from (docs/reference/peers.md §5, §7):
- JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead"; Gemma Scope's SAEs): W_enc, b_enc,
  W_dec, b_dec and the threshold θ, exactly this forward. SAELens's `jumprelu` computes
  `relu(pre) · (pre > θ)` too, so a negative θ behaves as θ = 0 in both.
- BatchTopK (Bussmann et al. 2024): trained with a top-(k·batch) over the whole batch, then used
  with one global threshold θ for every feature; SAELens saves it as `jumprelu` with θ repeated,
  which loads as it is.
- Gated (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs"): the same
  function, rewritten exactly by `gated_as_jumprelu`.

The training recipe is `jumprelu_train.py` (Gemma Scope's); `batchtopk.py` trains BatchTopK SAEs,
which are saved in this form.

Saved form (`standardize_`): decoder rows unit norm. With n_i = ‖W_dec[i]‖, scaling column i of the
encoder, b_enc[i] and θ_i by n_i and dividing W_dec[i] by n_i scales pre_i by n_i > 0, so the gate
`pre_i > θ_i` keeps its answer and x̂ is unchanged; f_i becomes f_i · n_i, as for the April 2024 SAE.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from monosemantic.sae.constraints import EPS, normalize_rows_
from monosemantic.sae.model import SAEConfig, SparseAutoencoder, register_sae

THRESHOLD_INIT = 0.001
"""θ at the start of training, on inputs scaled to unit mean norm ([JA]'s appendix pseudocode, Gemma
Scope; `jumprelu_train.py` sets it once the input scale is known)."""


def jumprelu(pre: Tensor, threshold: Tensor) -> Tensor:
    """`pre · [pre > threshold]`, `[batch, n_features]`: `JumpReLUSAE.activation` where θ ≥ 0 (training keeps it so)."""
    return pre * (pre > threshold)


def gated_as_jumprelu(W_enc: Tensor, b_gate: Tensor, b_mag: Tensor, r_mag: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A Gated SAE's encoder as a JumpReLU encoder with the same activations, exactly.

    The Gated encoder (SAELens `gated`) is `f = [s + b_gate > 0] · relu(e^r · s + b_mag)` with
    s = x̄ @ W_enc. Writing m = e^r · s + b_mag (e^r > 0), the gate `s > −b_gate` is `m > b_mag − e^r · b_gate`,
    so f = relu(m) · [m > θ] with the JumpReLU encoder W = W_enc · e^r, b = b_mag, θ = b_mag − e^r · b_gate.

    Args:
        W_enc: `[d_in, n_features]`. b_gate, b_mag, r_mag: `[n_features]`.
    Returns:
        (W_enc `[d_in, n_features]`, b_enc `[n_features]`, threshold `[n_features]`).
    """
    scale = r_mag.exp()
    return W_enc * scale, b_mag.clone(), b_mag - scale * b_gate


@register_sae
class JumpReLUSAE(SparseAutoencoder):
    """ReLU gated by a per-feature threshold: `f = relu(pre) · (pre > threshold)` (module docstring).

    Same parameters and layout as `SparseAutoencoder` plus `threshold [n_features]`. Init (Gemma
    Scope's): decoder rows random unit directions, W_enc = W_decᵀ, biases 0, θ = 0 (a ReLU SAE until
    the recipe sets θ₀); imported weights replace all of it.
    """

    architecture: ClassVar[str] = "jumprelu"
    saelens_architecture: ClassVar[str] = "jumprelu"
    pre_encoder_bias: ClassVar[bool] = False
    """Gemma Scope and "Jumping Ahead" encode x as it is; an SAE with the subtraction has it folded into b_enc."""
    unit_norm_decoder: ClassVar[bool] = True
    """Trained with unit-norm rows and the parallel gradient removed (Gemma Scope); imported rows of other
    norms are made unit at save (`standardize_`)."""

    def __init__(
        self,
        cfg: SAEConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(cfg, device=device, dtype=dtype, generator=generator)
        self.threshold = nn.Parameter(torch.zeros(cfg.n_features, device=device, dtype=dtype))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        d = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)  # (n_features, d_in)
        self.W_dec.copy_(d)
        normalize_rows_(self.W_dec)
        self.W_enc.copy_(self.W_dec.T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        if "threshold" in self._parameters:  # not yet during __init__, which creates it after
            self.threshold.zero_()

    @classmethod
    def tensor_shapes(cls, cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        return {**super().tensor_shapes(cfg), "threshold": (cfg.n_features,)}

    def activation(self, pre: Tensor) -> Tensor:
        """`relu(pre) · [pre > threshold]`, `[batch, n_features]` (SAELens's `jumprelu`, any sign of θ)."""
        return torch.relu(pre) * (pre > self.threshold)

    @torch.no_grad()
    def standardize_(self) -> JumpReLUSAE:
        """In place: unit-norm decoder rows, the norms folded into the encoder and θ (module docstring)."""
        n = self.W_dec.norm(dim=1).clamp_min(EPS)  # (n_features,)
        self.W_enc.mul_(n)
        self.b_enc.mul_(n)
        self.threshold.mul_(n)
        self.W_dec.div_(n[:, None])
        return self
