"""The sparse autoencoder of Towards Monosemanticity (2023 recipe): config, init, forward, save/load.

    x̄     = x − b_dec                        [batch, d_in]       pre-encoder bias tied to b_dec
    f     = ReLU(x̄ @ W_enc + b_enc)          [batch, n_features] feature activations
    x̂     = f @ W_dec + b_dec                [batch, d_in]       reconstruction

Layout (SAELens's, so export needs no transposition): `W_enc [d_in, n_features]`,
`b_enc [n_features]`, `W_dec [n_features, d_in]` whose **rows** are the unit-norm feature directions
(the paper's decoder columns), `b_dec [d_in]`. Section numbers (§n) refer to the method reference
`docs/reference/paper.md`.

`forward` has no side effects; dead-feature counters live in the trainer (STYLE P4). Training is in
`sae/train.py`, with the 2023 recipe's settings in `sae/tm2023.py`; this file knows nothing about
optimisers. Later recipes are subclasses in their own files (`sae/april.py`, `sae/topk.py`) that
override a class attribute or one step of `encode` (`pre_activations`, `activation`); each has its
own `architecture` tag in `cfg.json`, and `load` finds the class in `SAE_CLASSES`, which each class
joins with `@register_sae` where it is defined.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import load_tensors, read_config, save_tensors, write_config
from monosemantic.paths import SAE_CONFIG, SAE_WEIGHTS
from monosemantic.sae.constraints import normalize_rows_

CONFIG_KIND = "monosemantic.sae"

SAE_CLASSES: dict[str, type[SparseAutoencoder]] = {}
"""Every SAE class by its `architecture` tag: the registry `load` dispatches through (STYLE P14).

A class adds itself with `@register_sae`, so this module needs no import of the subclasses (they
import it). The package `__init__` imports april.py and topk.py, so the table is complete as soon
as any `monosemantic.sae` module is imported; `sae/registry.py` documents the entries."""

S = TypeVar("S", bound="type[SparseAutoencoder]")


def register_sae(cls: S) -> S:
    """Class decorator: add an SAE class to `SAE_CLASSES` under its `architecture`."""
    if SAE_CLASSES.setdefault(cls.architecture, cls) is not cls:
        taken = SAE_CLASSES[cls.architecture].__qualname__
        raise ValueError(f"{cls.__name__}: architecture {cls.architecture!r} is taken by {taken}")
    return cls


@dataclass(frozen=True)
class SAEConfig:
    """Shape of a sparse autoencoder."""

    d_in: int
    """Input width: the activation vector's size (512 MLP neurons for the paper's transformer A)."""
    n_features: int
    """Dictionary size m (the paper's A/1 has 4,096 = 8 × 512; paper.md §5)."""

    def __post_init__(self) -> None:
        for name in ("d_in", "n_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAEConfig.{name} must be a positive int, got {value!r}")


@register_sae
class SparseAutoencoder(nn.Module):
    """ReLU sparse autoencoder with a tied pre-encoder / decoder bias and unit-norm decoder rows.

        f = relu((x - b_dec) @ W_enc + b_enc)        # [batch, n_features]
        x_hat = f @ W_dec + b_dec                    # [batch, d_in]

    Init (paper.md §3.3): "the default Pytorch Kaiming Uniform initialization", i.e. nn.Linear's
    `kaiming_uniform_(a=√5)` = U(±1/√fan_in), drawn independently for the encoder (fan_in = d_in)
    and the decoder (fan_in = n_features), then decoder rows normalised to unit norm. We read the
    paper's untied weights literally and do not start from W_enc = W_decᵀ (that is the April 2024
    recipe). `b_enc` = 0 (the paper does not say; zero is the common replication choice).
    `b_dec` = 0 here; the trainer sets it to the geometric median of the data (`train.py`).

    Subclasses (the later recipes) change the class attributes below, `reset_parameters`,
    `pre_activations` or `activation`; everything else (decode, save / load) is shared.
    """

    architecture: ClassVar[str] = "tm2023"
    """The tag in cfg.json and the key in `SAE_CLASSES`."""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    """The shape config this class is built from (TopK adds k)."""
    pre_encoder_bias: ClassVar[bool] = True
    """Encode x − b_dec (paper.md §3.1, the tied bias); SAELens calls this `apply_b_dec_to_input`."""
    unit_norm_decoder: ClassVar[bool] = True
    """Decoder rows are kept at unit norm while training (paper.md §3.4; `constraints.optimizer_step_`)."""
    saelens_architecture: ClassVar[str] = "standard"
    """The SAELens class with the same forward (`sae/saelens.py`)."""
    trainable: ClassVar[bool] = True
    """A recipe trains it (`recipe.TRAIN_CONFIGS`); False for a class that only runs imported weights."""
    saelens_import: ClassVar[bool] = True
    """`sae import` may map a SAELens folder of `saelens_architecture` to this class; False where another
    class with the same SAELens form reads it (BatchTopK's saved form imports as JumpReLU)."""

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
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.n_features, device=device, dtype=dtype))
        self.b_enc = nn.Parameter(torch.empty(cfg.n_features, device=device, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(cfg.n_features, cfg.d_in, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.empty(cfg.d_in, device=device, dtype=dtype))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the weights as described in the class docstring (paper.md §3.3)."""
        bound_enc = 1 / math.sqrt(self.cfg.d_in)  # fan_in of the encoder map d_in -> n_features
        bound_dec = 1 / math.sqrt(self.cfg.n_features)  # fan_in of the decoder map n_features -> d_in
        self.W_enc.uniform_(-bound_enc, bound_enc, generator=generator)
        self.W_dec.uniform_(-bound_dec, bound_dec, generator=generator)
        normalize_rows_(self.W_dec)
        self.b_enc.zero_()
        self.b_dec.zero_()

    def pre_activations(self, x: Tensor) -> Tensor:
        """`x [batch, d_in]` → encoder output before the nonlinearity, `[batch, n_features]`."""
        x_bar = x - self.b_dec if self.pre_encoder_bias else x  # paper.md §3.1: pre-encoder bias tied to b_dec
        return x_bar @ self.W_enc + self.b_enc

    def activation(self, pre: Tensor) -> Tensor:
        """The nonlinearity, `[batch, n_features]` → `[batch, n_features]`: ReLU here (TopK overrides it)."""
        return torch.relu(pre)

    @classmethod
    def tensor_shapes(cls, cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        """The saved tensors and their shapes: W_enc, b_enc, W_dec, b_dec (a subclass may add its own)."""
        return {
            "W_enc": (cfg.d_in, cfg.n_features),
            "b_enc": (cfg.n_features,),
            "W_dec": (cfg.n_features, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }

    @property
    def top_k(self) -> int | None:
        """How many features `activation` keeps per input when it keeps a fixed number (TopK); None for ReLU."""
        return None

    def encode(self, x: Tensor) -> Tensor:
        """`x [batch, d_in]` → feature activations `f [batch, n_features]`, f ≥ 0."""
        return self.activation(self.pre_activations(x))

    def decode(self, f: Tensor) -> Tensor:
        """`f [batch, n_features]` → reconstruction `x_hat [batch, d_in]`."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`x [batch, d_in]` → `(x_hat [batch, d_in], f [batch, n_features])`; no side effects."""
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def standardize_(self) -> SparseAutoencoder:
        """In place: rewrite the weights in the saved form, unit-norm decoder rows, with x̂ unchanged.

        The paper's decoder rows are unit norm already, so this does nothing here; the April 2024
        SAE folds its free decoder norms into the encoder (`april.py`). Returns the same SAE.
        """
        return self

    # -- artifacts (STYLE P9) ------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `sae.safetensors` then `cfg.json` into `folder` (created if needed); returns it.

        The weights written are those of `standardize_()` applied to a copy (this SAE is left as it
        is). Each file is written atomically; the config goes last, so a folder with a `cfg.json`
        holds a complete SAE. Existing files of the same names are replaced.
        """
        folder = Path(folder)
        saved = copy.deepcopy(self).standardize_()
        save_tensors(folder / SAE_WEIGHTS, dict(saved.named_parameters()))
        body = {"architecture": self.architecture, **dataclasses.asdict(self.cfg)}
        write_config(folder / SAE_CONFIG, CONFIG_KIND, body)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: torch.device | str | None = None) -> SparseAutoencoder:
        """Read a folder written by `save`, of any architecture; returns an instance of its class.

        The class comes from cfg.json's `architecture` through `SAE_CLASSES`. Any missing, corrupt
        or mismatched file is a UserError, and so is a folder holding another architecture when
        called on a subclass (`TopKSAE.load` of an April SAE).
        """
        folder = Path(folder)
        raw = read_config(folder / SAE_CONFIG, CONFIG_KIND)
        name = raw.get("architecture")
        sae_class = SAE_CLASSES.get(name) if isinstance(name, str) else None
        if sae_class is None:
            known = ", ".join(sorted(SAE_CLASSES))
            raise UserError(f"{folder / SAE_CONFIG}: architecture {raw.get('architecture')!r} is not one of {known}")
        if not issubclass(sae_class, cls):
            raise UserError(f"{folder / SAE_CONFIG}: holds a {sae_class.__name__}, not a {cls.__name__}")
        try:
            cfg = sae_class.config_class(**{f.name: raw[f.name] for f in dataclasses.fields(sae_class.config_class)})
        except CONFIG_VALUE_ERRORS as e:
            raise UserError(f"{folder / SAE_CONFIG}: bad SAE shape ({e})") from None
        tensors = load_tensors(folder / SAE_WEIGHTS)
        check_tensors(tensors, cfg, folder / SAE_WEIGHTS, sae_class)
        sae = sae_class(cfg, device=device, dtype=tensors["W_enc"].dtype)
        sae.load_state_dict(tensors)
        return sae


def check_tensors(
    tensors: dict[str, Tensor],
    cfg: SAEConfig,
    where: str | os.PathLike[str],
    sae_class: type[SparseAutoencoder] = SparseAutoencoder,
) -> None:
    """Raise a UserError unless `tensors` are exactly `sae_class.tensor_shapes(cfg)` (W_enc, b_enc, W_dec, b_dec, …)."""
    expected = sae_class.tensor_shapes(cfg)
    if set(tensors) != set(expected):
        raise UserError(f"{where}: tensors {sorted(tensors)}, expected {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise UserError(f"{where}: {name} has shape {tuple(tensors[name].shape)}, cfg.json says {shape}")
        if not tensors[name].is_floating_point():
            raise UserError(f"{where}: {name} is {tensors[name].dtype}, expected floating point")
        if not torch.isfinite(tensors[name]).all():
            raise UserError(f"{where}: NaN or inf in {name}")
