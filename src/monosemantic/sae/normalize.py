"""Input normalisation by one scalar, kept apart from the SAE (STYLE P6; SAELens `ActivationScaler`).

The 2023 recipe trains on raw activations: the paper's λ = 0.004 belongs to transformer A's MLP
activation scale. The February/April 2024 updates instead scale the data "by a single constant such
that E_x[‖x‖₂] = sqrt(n)" so that λ transfers between models (paper.md §10.3, §10.5; we use the
mean norm, not the mean squared norm, as SAELens does). This object holds that constant.

How λ relates to scale: for data c·x the MSE grows by c² and the best feature activations by c,
so training on c·x with λ solves the same problem as training on x with λ / c. A λ tuned on
normalised data is therefore only meaningful together with this normaliser.

`fold_into_` rewrites an SAE trained on normalised inputs so that it takes raw activations and
returns raw reconstructions, with no normaliser needed afterwards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import read_config, write_config
from monosemantic.sae.model import SparseAutoencoder

CONFIG_KIND = "monosemantic.normalizer"


@dataclass(frozen=True)
class Normalizer:
    """Multiply activations by one constant `factor`: `scale(x) = factor · x`."""

    factor: float
    """Scale applied to raw activations (dimensionless, > 0)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"Normalizer.factor must be finite and > 0, got {self.factor!r}")

    @classmethod
    def fit(cls, x: Tensor) -> Normalizer:
        """Choose `factor` so that the scaled sample has mean L2 norm √d_in.

        Args:
            x: `[n, d_in]`, a sample of raw activations (not all zero).
        """
        mean_norm = x.double().norm(dim=1).mean().item()
        if mean_norm <= 0:
            raise ValueError("Normalizer.fit: the sample is all zeros")
        return cls(factor=math.sqrt(x.shape[1]) / mean_norm)

    def scale(self, x: Tensor) -> Tensor:
        """Raw → normalised, `[..., d_in]`."""
        return x * self.factor

    def unscale(self, x: Tensor) -> Tensor:
        """Normalised → raw, `[..., d_in]`."""
        return x / self.factor

    def scale_batches(self, batches: Iterable[Tensor]) -> Iterator[Tensor]:
        """Scale a stream of `[batch, d_in]` batches lazily, for `train_sae`."""
        for x in batches:
            yield self.scale(x)

    @torch.no_grad()
    def fold_into_(self, sae: SparseAutoencoder) -> SparseAutoencoder:
        """In place: make an SAE trained on `scale(x)` act on raw `x`. Returns the same SAE.

        With c = factor, dividing both biases by c gives
        f_raw = ReLU((x − b_dec/c) @ W_enc + b_enc/c) = f / c and x̂_raw = f_raw @ W_dec + b_dec/c = x̂ / c:
        the decoder rows stay unit norm and feature activations come out in raw units.
        """
        sae.b_enc.div_(self.factor)
        sae.b_dec.div_(self.factor)
        threshold = getattr(sae, "threshold", None)  # JumpReLU: compared with the pre-activation, so scaled alike
        if threshold is not None:
            threshold.div_(self.factor)
        return sae

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a small versioned JSON file (atomic)."""
        write_config(path, CONFIG_KIND, {"factor": self.factor})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Normalizer:
        raw = read_config(path, CONFIG_KIND)
        try:
            return cls(factor=float(raw["factor"]))
        except CONFIG_VALUE_ERRORS as e:
            raise UserError(f"{path}: bad normalizer ({e})") from None
