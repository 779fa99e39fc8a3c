"""Crash-safe training checkpoints: weights + optimizer state + step, verified before loading.

A checkpoint is two files, each written atomically: `ckpt.safetensors` (model parameters as
`model.<name>`, Adam moments as `optim.<i>.<key>`) and `ckpt.json` (step, optimizer hyper-
parameters, the configs, and the sha256 of the tensor file). The JSON is written last, so it
always describes a complete tensor file; a tensor file whose hash does not match is reported
as corrupt and never loaded. Data order is a pure function of (seed, step), so the step is the
whole data position and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from monosemantic.errors import UserError
from monosemantic.io import load_tensors, read_json, save_tensors, sha256_file, write_json

TENSORS = "ckpt.safetensors"
META = "ckpt.json"


def save_checkpoint(
    folder: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, extra: dict[str, Any]
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    state = opt.state_dict()
    for i, s in state["state"].items():
        for k, v in s.items():
            tensors[f"optim.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_tensors(folder / TENSORS, tensors)
    meta = {"step": step, "param_groups": state["param_groups"], "sha256": sha256_file(folder / TENSORS), **extra}
    write_json(folder / META, meta)


def has_checkpoint(folder: Path) -> bool:
    return (folder / META).is_file()


def load_checkpoint(
    folder: Path, model: nn.Module, opt: torch.optim.Optimizer, expected: dict[str, Any]
) -> dict[str, Any]:
    """Restore `model` and `opt` in place; returns the checkpoint's JSON (with `step`).

    Every key of `expected` (the configs) must equal the checkpoint's, or nothing is loaded.
    """
    meta = read_json(folder / META)
    if any(meta.get(k) != v for k, v in expected.items()):
        raise UserError(f"{folder}: checkpoint was made with a different config; use --force to restart")
    tensor_file = folder / TENSORS
    if not tensor_file.is_file() or sha256_file(tensor_file) != meta.get("sha256"):
        raise UserError(f"{tensor_file}: checkpoint is corrupt or truncated (sha256 mismatch); use --force")
    tensors = load_tensors(tensor_file)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta
