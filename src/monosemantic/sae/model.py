"""The sparse autoencoder of Towards Monosemanticity (2023 recipe): config, init, forward, save/load.

    x̄     = x − b_dec                        [batch, d_in]       pre-encoder bias tied to b_dec
    f     = ReLU(x̄ @ W_enc + b_enc)          [batch, n_features] feature activations
    x̂     = f @ W_dec + b_dec                [batch, d_in]       reconstruction

Layout (SAELens's, so export needs no transposition): `W_enc [d_in, n_features]`,
`b_enc [n_features]`, `W_dec [n_features, d_in]` whose **rows** are the unit-norm feature directions
(the paper's decoder columns), `b_dec [d_in]`. Section numbers (§n) refer to the method reference
`towards-monosemanticity.md`.

`forward` has no side effects; dead-feature counters live in the trainer (STYLE P4). Training is in
`sae/train.py`; this file knows nothing about optimisers. Later recipes (April 2024, TopK) get their
own files (`sae/april.py`, `sae/topk.py`) with their own `architecture` tag in `cfg.json`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from monosemantic.errors import UserError
from monosemantic.io import load_tensors, read_config, save_tensors, write_config
from monosemantic.paths import SAE_CONFIG, SAE_WEIGHTS
from monosemantic.sae.constraints import normalize_rows_

CONFIG_KIND = "monosemantic.sae"
ARCHITECTURE = "tm2023"  # the one recipe in this file; April 2024 / TopK will use other tags


@dataclass(frozen=True)
class SAEConfig:
    """Shape of a sparse autoencoder."""

    d_in: int
    """Input width: the activation vector's size (512 MLP neurons for the paper's transformer A)."""
    n_features: int
    """Dictionary size m (the paper's A/1 has 4,096 = 8 × 512; reference §5)."""

    def __post_init__(self) -> None:
        for name in ("d_in", "n_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAEConfig.{name} must be a positive int, got {value!r}")


class SparseAutoencoder(nn.Module):
    """ReLU sparse autoencoder with a tied pre-encoder / decoder bias and unit-norm decoder rows.

        f = relu((x - b_dec) @ W_enc + b_enc)        # [batch, n_features]
        x_hat = f @ W_dec + b_dec                    # [batch, d_in]

    Init (TM §3.3): "the default Pytorch Kaiming Uniform initialization", i.e. nn.Linear's
    `kaiming_uniform_(a=√5)` = U(±1/√fan_in), drawn independently for the encoder (fan_in = d_in)
    and the decoder (fan_in = n_features), then decoder rows normalised to unit norm. We read the
    paper's untied weights literally and do not start from W_enc = W_decᵀ (that is the April 2024
    recipe). `b_enc` = 0 (the paper does not say; zero is the common replication choice).
    `b_dec` = 0 here; the trainer sets it to the geometric median of the data (`train.py`).
    """

    def __init__(
        self,
        cfg: SAEConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        kw = {"device": device, "dtype": dtype}
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.n_features, **kw))
        self.b_enc = nn.Parameter(torch.empty(cfg.n_features, **kw))
        self.W_dec = nn.Parameter(torch.empty(cfg.n_features, cfg.d_in, **kw))
        self.b_dec = nn.Parameter(torch.empty(cfg.d_in, **kw))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the weights as described in the class docstring (TM §3.3)."""
        bound_enc = 1 / math.sqrt(self.cfg.d_in)  # fan_in of the encoder map d_in -> n_features
        bound_dec = 1 / math.sqrt(self.cfg.n_features)  # fan_in of the decoder map n_features -> d_in
        self.W_enc.uniform_(-bound_enc, bound_enc, generator=generator)
        self.W_dec.uniform_(-bound_dec, bound_dec, generator=generator)
        normalize_rows_(self.W_dec)
        self.b_enc.zero_()
        self.b_dec.zero_()

    def encode(self, x: Tensor) -> Tensor:
        """`x [batch, d_in]` → feature activations `f [batch, n_features]`, f ≥ 0."""
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: Tensor) -> Tensor:
        """`f [batch, n_features]` → reconstruction `x_hat [batch, d_in]`."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`x [batch, d_in]` → `(x_hat [batch, d_in], f [batch, n_features])`; no side effects."""
        f = self.encode(x)
        return self.decode(f), f

    # -- artifacts (STYLE P9) ------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `sae.safetensors` then `cfg.json` into `folder` (created if needed); returns it.

        Each file is written atomically; the config goes last, so a folder with a `cfg.json`
        holds a complete SAE. Existing files of the same names are replaced.
        """
        folder = Path(folder)
        tensors = {name: p for name, p in self.named_parameters()}
        save_tensors(folder / SAE_WEIGHTS, tensors)
        body = {"architecture": ARCHITECTURE, "d_in": self.cfg.d_in, "n_features": self.cfg.n_features}
        write_config(folder / SAE_CONFIG, CONFIG_KIND, body)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: torch.device | str | None = None) -> SparseAutoencoder:
        """Read a folder written by `save`. Any missing, corrupt or mismatched file is a UserError."""
        folder = Path(folder)
        raw = read_config(folder / SAE_CONFIG, CONFIG_KIND)
        if raw.get("architecture") != ARCHITECTURE:
            raise UserError(f"{folder / SAE_CONFIG}: architecture {raw.get('architecture')!r} is not {ARCHITECTURE!r}")
        try:
            cfg = SAEConfig(d_in=raw["d_in"], n_features=raw["n_features"])
        except (KeyError, ValueError) as e:
            raise UserError(f"{folder / SAE_CONFIG}: bad SAE shape ({e})") from None
        tensors = load_tensors(folder / SAE_WEIGHTS)
        expected = {
            "W_enc": (cfg.d_in, cfg.n_features),
            "b_enc": (cfg.n_features,),
            "W_dec": (cfg.n_features, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        if set(tensors) != set(expected):
            raise UserError(f"{folder / SAE_WEIGHTS}: tensors {sorted(tensors)}, expected {sorted(expected)}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                got = tuple(tensors[name].shape)
                raise UserError(f"{folder / SAE_WEIGHTS}: {name} has shape {got}, cfg.json says {shape}")
        sae = cls(cfg, device=device, dtype=tensors["W_enc"].dtype)
        sae.load_state_dict(tensors)
        return sae
