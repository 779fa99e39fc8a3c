"""The data-dependent start of a training run: input scale, b_dec, and (optionally) a sparse b_enc.

    batches = init_from_data(runs, batches)   # peeks the first inputs, then puts them back in front

Section numbers (§n) refer to the method reference `docs/reference/paper.md`.

**The sparse start.** With the paper's init (Kaiming-uniform W_enc, b_enc = 0, paper.md §3.3) about
half the features fire on every input at step 1, and the L1 penalty needs a hundred or so steps to
bring L0 down to where the sparse step pays (`sparse_step.SPARSE_L0_FRACTION`); on the demo's
ladder those dense steps cost more than the rest of the run. The paper does not say how b_enc
starts (paper.md §13), so `b_enc_init="sparse"` chooses it: each feature's bias is set so that it
fires on a fraction `density` of the first inputs, b_enc_i = −quantile_{1−density}(x̄ W_enc[:, i]).
The weights keep the paper's init; every feature is alive from the first step, and the trainer
can use the sparse step from step 1 (docs/decisions.md, "The sparse start").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Protocol

import torch
from torch import Tensor

from monosemantic.sae.geometric_median import geometric_median
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.normalize import Normalizer

SPARSE_START_INPUTS = 4096
"""Inputs the sparse start's quantiles are taken over (the encoder product is [inputs, n_features])."""


class _InitConfig(Protocol):
    @property
    def n_init_inputs(self) -> int: ...
    @property
    def normalize_inputs(self) -> bool: ...
    @property
    def init_b_dec(self) -> bool: ...
    @property
    def init_b_enc_density(self) -> float | None: ...


class _InitRun(Protocol):
    """What the init needs of the trainer's `_Run`: the SAE, its recipe and its input scale."""

    sae: SparseAutoencoder
    scale: float

    @property
    def cfg(self) -> _InitConfig: ...


@torch.no_grad()
def sparse_start_b_enc(sae: SparseAutoencoder, x: Tensor, density: float) -> Tensor:
    """b_enc such that each feature fires on about `density` of the inputs `x`: `[n_features]`.

    Args:
        sae: its W_enc and b_dec are used as they are (b_dec already at its data init).
        x: `[n, d_in]` inputs, in the units the SAE trains in.
        density: the wanted fraction of inputs on which each feature fires, in (0, 1).
    """
    x_bar = x - sae.b_dec if sae.pre_encoder_bias else x  # paper.md §3.1
    pre = x_bar @ sae.W_enc  # (n, n_features)
    k = max(1, min(x.shape[0], round(x.shape[0] * (1 - density))))
    return -pre.kthvalue(k, dim=0).values  # fires where pre > −b_enc: on the top `density` share


@torch.no_grad()
def init_from_data(runs: Sequence[_InitRun], batches: Iterator[Tensor]) -> Iterator[Tensor]:
    """Data-dependent init from the stream's first inputs, which are then put back in front of it.

    - `normalize_inputs`: fit the scale (E‖x‖ = √d_in, paper.md §10.5) and move the SAE into scaled units
      (`Normalizer(1 / scale).fold_into_`, a no-op for fresh zero biases; the trainer undoes it at the end);
    - `init_b_dec`: b_dec = geometric median of those inputs, in the units the SAE trains in (paper.md §3.3);
    - `init_b_enc_density`: the sparse start (the module docstring), after b_dec;
    - a recipe's `start_from_data(sae, x)`, if it has one, last; and a recipe with `unit_norm` scales
      to E‖x‖ = 1 instead of √d_in (JumpReLU, `jumprelu_train.py`).
    """
    wanted = [r.cfg.n_init_inputs for r in runs if r.cfg.n_init_inputs]
    if not wanted:
        return batches
    peeked: list[Tensor] = []
    while sum(b.shape[0] for b in peeked) < max(wanted) and (b := next(batches, None)) is not None:
        peeked.append(b)
    if not peeked:
        raise ValueError("train_sae: the batch stream is empty")
    X = torch.cat(peeked)  # (>= n, d_in)
    medians: dict[int, Tensor] = {}  # one Weiszfeld run per distinct sample size
    for r in runs:
        n = r.cfg.n_init_inputs
        if not n:
            continue
        sample = X[:n].to(r.sae.W_dec.device, torch.float32)
        if r.cfg.normalize_inputs:
            r.scale = Normalizer.fit(sample).factor
            if getattr(r.cfg, "unit_norm", False):  # JumpReLU: E‖x‖ = 1, Gemma Scope's scale (jumprelu_train.py)
                r.scale /= sample.shape[1] ** 0.5
            Normalizer(1 / r.scale).fold_into_(r.sae)
        if r.cfg.init_b_dec:
            if n not in medians:
                medians[n] = geometric_median(sample)
            r.sae.b_dec.copy_(medians[n] * r.scale)  # the median is scale-equivariant
        density = r.cfg.init_b_enc_density
        if density is not None:
            r.sae.b_enc.copy_(sparse_start_b_enc(r.sae, sample[:SPARSE_START_INPUTS] * r.scale, density))
        start = getattr(r.cfg, "start_from_data", None)
        if start is not None:  # a recipe's own data init, last (JumpReLU: θ₀ on the training scale)
            start(r.sae, sample * r.scale)
    return chain(peeked, batches)
