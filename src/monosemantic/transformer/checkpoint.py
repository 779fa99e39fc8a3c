"""LM training checkpoints: weights + optimizer state + RNG states + step, verified before loading.

The files and their crash-safe write order are `monosemantic.checkpoint`'s: `ckpt.json` (step,
optimizer hyper-parameters, the configs, the sha256 of the tensor file) and
`ckpt-<step>.safetensors` (parameters as `model.<name>`, Adam moments as `optim.<i>.<key>`, RNG
states). Data order is a pure function of (seed, step), so the step is the whole data position
and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from monosemantic import checkpoint


def save_checkpoint(
    folder: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, extra: dict[str, Any]
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim, groups = checkpoint.optimizer_tensors(opt, "optim")
    rng, rng_json = checkpoint.rng_state()
    checkpoint.write(folder, step, {**tensors, **optim, **rng}, {"param_groups": groups, "rng": rng_json, **extra})


def has_checkpoint(folder: Path) -> bool:
    return checkpoint.exists(folder)


def load_checkpoint(
    folder: Path, model: nn.Module, opt: torch.optim.Optimizer, expected: dict[str, Any]
) -> dict[str, Any]:
    """Restore `model`, `opt` and the RNG states in place; returns the checkpoint's JSON (with `step`).

    Every key of `expected` (the configs) must equal the checkpoint's, or nothing is loaded.
    """
    tensors, meta = checkpoint.read(folder, expected)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    checkpoint.load_optimizer(opt, tensors, "optim", meta["param_groups"])
    checkpoint.set_rng_state(tensors, meta["rng"])
    return meta
