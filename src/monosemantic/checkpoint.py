"""Crash-safe checkpoint files, shared by LM training and SAE training (STYLE P9).

A checkpoint folder holds one JSON file and one tensor file:

    ckpt.json                   step, the name and sha256 of the tensor file, the configs the run
                                was started with, and any JSON-able training state
    ckpt-<step>.safetensors     the tensors: weights, optimizer moments, RNG states, counters

Every kill point is safe, SIGKILL included, because of the write order:

1. the new tensor file appears atomically under a name of its own (`io.atomic_path`);
2. `ckpt.json` is replaced atomically, now naming the new tensor file;
3. tensor files that `ckpt.json` no longer names are deleted.

A kill before 2 leaves the previous checkpoint whole (the orphan file goes at the next save); a
kill after 2 leaves the new one whole. Loading reads the JSON, checks that the configs match the
run's, and checks the tensor file's sha256 before a single tensor is loaded: a truncated or
altered checkpoint is a `UserError` naming the file, never loaded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.errors import UserError
from monosemantic.io import load_tensors, read_json, save_tensors, sha256_file, write_json

META = "ckpt.json"
RESTART = "use --force to discard it and start over"


def tensor_file_name(step: int) -> str:
    return f"ckpt-{step:09d}.safetensors"


def exists(folder: Path) -> bool:
    return (folder / META).is_file()


def write(folder: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save one checkpoint of `step` into `folder` (created if missing), in the crash-safe order above."""
    name = tensor_file_name(step)
    save_tensors(folder / name, tensors)
    write_json(folder / META, {**meta, "step": step, "tensors": name, "sha256": sha256_file(folder / name)})
    for old in folder.glob("ckpt-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_meta(folder: Path) -> dict[str, Any]:
    """The checkpoint's JSON (UserError when it is not valid JSON or lacks its fields)."""
    meta = read_json(folder / META)
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or not isinstance(meta.get("tensors"), str):
        raise UserError(f"{folder / META}: not a checkpoint (no step or tensor file); {RESTART}")
    return meta


def read(folder: Path, expected: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of the checkpoint in `folder`, verified; nothing is loaded if a check fails.

    Every key of `expected` (the configs) must equal the checkpoint's after a JSON round trip.
    """
    meta = read_meta(folder)
    want = json.loads(json.dumps(expected))
    changed = sorted(k for k, v in want.items() if meta.get(k) != v)
    if changed:
        raise UserError(f"{folder}: checkpoint was made with a different config ({', '.join(changed)}); {RESTART}")
    path = folder / Path(meta["tensors"]).name
    if not path.is_file() or sha256_file(path) != meta.get("sha256"):
        raise UserError(f"{path}: checkpoint is corrupt or truncated (sha256 mismatch); {RESTART}")
    return load_tensors(path), meta


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """An optimizer's state as flat tensors `<prefix>.<param>.<key>` plus its param groups (JSON)."""
    state = opt.state_dict()
    tensors = {}
    for i, s in state["state"].items():
        for k, v in s.items():
            tensors[f"{prefix}.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, state["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, groups: Any) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            i, key = k[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The process's global RNG states (torch CPU and CUDA, NumPy, Python) as (tensors, JSON)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    return tensors, {"numpy": [kind, pos, has_gauss, gauss], "python": [version, list(internal), gauss_next]}


def set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    kind, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
