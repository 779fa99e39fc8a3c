"""Import SAEs saved by other tools: SAELens folders, EleutherAI sparsify folders, Gemma Scope parameter files.

    imported = import_sae("sparsify-run/layers.6")     # format detected from the files
    imported.sae.save("runs/x/sae/hf-pythia/gpt_neox.layers.6/topk-32768")

Formats (docs/reference/peers.md §5, §7), each read into the architecture with the same forward:
- `saelens`: `cfg.json` + `sae_weights.safetensors` (saelens.py): standard, topk, jumprelu (also
  BatchTopK as SAELens saves it), gated.
- `sparsify`: `cfg.json` (SparseCoderConfig + d_in) + `sae.safetensors` with `encoder.weight
  [n, d_in]`, `encoder.bias [n]`, `W_dec [n, d_in]`, `b_dec [d_in]`. sparsify encodes
  `topk(relu((x − b_dec) @ encoder.weightᵀ + encoder.bias), k)`, which is our TopK SAE with
  W_enc = encoder.weightᵀ (the top k of relu(pre) and relu of the top k of pre give the same
  activations). Its `groupmax` activation, skip connections and transcoders (input ≠ output) are
  refused. The run's `config.json` one folder up gives the model, dataset and context length.
- `gemmascope`: `params.npz` (Gemma Scope) or `params.safetensors` (Gemma Scope 2) with W_enc
  [d_in, n], W_dec [n, d_in], b_enc, b_dec, threshold (`w_` spellings too): a JumpReLU SAE without
  pre-encoder bias, as SAELens's Gemma Scope loader reads it.
- `monosemantic`: our own `cfg.json` (kind `monosemantic.sae`) + `sae.safetensors`, loaded as is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import load_tensors, read_json
from monosemantic.paths import SAE_CONFIG
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.model import CONFIG_KIND, SAEConfig, SparseAutoencoder, check_tensors
from monosemantic.sae.saelens import SAELENS_CONFIG, SAELENS_WEIGHTS, import_saelens, read_saelens_config
from monosemantic.sae.saelens import saelens_metadata as _saelens_metadata
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig

Format = Literal["auto", "saelens", "sparsify", "gemmascope", "monosemantic"]
FORMATS: tuple[str, ...] = ("auto", "saelens", "sparsify", "gemmascope", "monosemantic")
SPARSIFY_WEIGHTS = "sae.safetensors"  # sparsify/sparse_coder.py: save_to_disk
SPARSIFY_RUN_CONFIG = "config.json"  # the trainer's TrainConfig, one folder above each hookpoint's
GEMMASCOPE_FILES = ("params.npz", "params.safetensors")
_SPARSIFY_TENSORS = ("encoder.weight", "encoder.bias", "W_dec", "b_dec")
_GEMMASCOPE_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


@dataclass(frozen=True)
class Imported:
    """An SAE read from another tool's folder, and what that folder said about where it came from."""

    sae: SparseAutoencoder
    format: str
    """The format it was read as (`saelens`, `sparsify`, `gemmascope`, `monosemantic`)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """SAELens's names where known: model_name, hook_name, hf_hook_name, context_size, dataset_path."""


def detect_format(folder: str | os.PathLike[str]) -> str:
    """The format of an SAE folder, from its file names (module docstring); a UserError when none fits."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    if (folder / SAELENS_WEIGHTS).is_file() and (folder / SAELENS_CONFIG).is_file():
        return "saelens"
    if (folder / SPARSIFY_WEIGHTS).is_file() and (folder / SAE_CONFIG).is_file():
        raw = read_json(folder / SAE_CONFIG)
        return "monosemantic" if isinstance(raw, dict) and raw.get("kind") == CONFIG_KIND else "sparsify"
    if any((folder / name).is_file() for name in GEMMASCOPE_FILES):
        return "gemmascope"
    inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / SAE_CONFIG).is_file())
    if inside:
        shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
        raise UserError(f"{folder}: holds {len(inside)} SAE folders ({shown}); import them one at a time")
    raise UserError(
        f"{folder}: not an SAE folder (expected cfg.json with sae_weights.safetensors (SAELens) or "
        f"sae.safetensors (sparsify), or params.npz / params.safetensors (Gemma Scope))"
    )


def import_sae(
    folder: str | os.PathLike[str], fmt: Format = "auto", device: torch.device | str | None = None
) -> Imported:
    """Read the SAE in `folder` (format `fmt`, or detected) into the architecture with the same forward."""
    folder = Path(folder)
    if fmt == "auto":
        fmt = detect_format(folder)  # type: ignore[assignment]  # one of FORMATS but auto
    if fmt == "saelens":
        return Imported(import_saelens(folder, device), fmt, _saelens_metadata(read_saelens_config(folder)))
    if fmt == "sparsify":
        return import_sparsify(folder, device)
    if fmt == "gemmascope":
        return Imported(import_gemmascope(folder, device), fmt, {})
    if fmt == "monosemantic":
        return Imported(SparseAutoencoder.load(folder, device), fmt, {})
    raise UserError(f"unknown SAE format {fmt!r}: one of {', '.join(FORMATS)}")


def import_sparsify(folder: str | os.PathLike[str], device: torch.device | str | None = None) -> Imported:
    """An EleutherAI sparsify SAE folder as a `TopKSAE` (module docstring), with its run's metadata."""
    folder = Path(folder)
    where = folder / SAE_CONFIG
    raw = read_json(where)
    if not isinstance(raw, dict):
        raise UserError(f"{where}: not a sparsify config")
    for key, ok in (("activation", "topk"), ("skip_connection", False), ("transcode", False), ("signed", False)):
        if raw.get(key, ok) != ok:
            raise UserError(f"{where}: {key} {raw[key]!r} is not supported (only {key} {ok!r})")
    try:
        d_in = int(raw["d_in"])
        n = int(raw.get("num_latents") or 0) or d_in * int(raw["expansion_factor"])
        cfg = TopKSAEConfig(d_in=d_in, n_features=n, k=int(raw["k"]))
    except CONFIG_VALUE_ERRORS as e:
        raise UserError(f"{where}: bad sparsify config ({e})") from None
    t = load_tensors(folder / SPARSIFY_WEIGHTS)
    if set(t) != set(_SPARSIFY_TENSORS):
        raise UserError(f"{folder / SPARSIFY_WEIGHTS}: tensors {sorted(t)}, expected {sorted(_SPARSIFY_TENSORS)}")
    tensors = {"W_enc": t["encoder.weight"].T.contiguous(), "b_enc": t["encoder.bias"], "W_dec": t["W_dec"]}
    tensors["b_dec"] = t["b_dec"]
    check_tensors(tensors, cfg, folder / SPARSIFY_WEIGHTS, TopKSAE)
    sae = TopKSAE(cfg, device=device, dtype=tensors["W_enc"].dtype)
    sae.load_state_dict(tensors)
    return Imported(sae, "sparsify", _sparsify_metadata(folder))


def _sparsify_metadata(folder: Path) -> dict[str, Any]:
    """The hookpoint (the folder's name, a module path of the Hugging Face model) and the run's settings."""
    meta: dict[str, Any] = {"hf_hook_name": folder.resolve().name}
    try:
        run = json.loads((folder.parent / SPARSIFY_RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return meta
    if isinstance(run, dict):
        for ours, theirs in (("model_name", "model"), ("dataset_path", "dataset"), ("context_size", "ctx_len")):
            if isinstance(run.get(theirs), str | int) and not isinstance(run.get(theirs), bool):
                meta[ours] = run[theirs]
    return meta


def import_gemmascope(folder: str | os.PathLike[str], device: torch.device | str | None = None) -> JumpReLUSAE:
    """A Gemma Scope parameter file (`params.npz` or `params.safetensors`) as a `JumpReLUSAE`."""
    folder = Path(folder)
    path = next((folder / n for n in GEMMASCOPE_FILES if (folder / n).is_file()), None)
    if path is None:
        raise UserError(f"{folder}: no {' or '.join(GEMMASCOPE_FILES)} here")
    raw = _read_npz(path) if path.suffix == ".npz" else load_tensors(path)
    tensors = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}
    if set(tensors) != set(_GEMMASCOPE_TENSORS) or tensors["W_enc"].ndim != 2:
        raise UserError(f"{path}: tensors {sorted(raw)}, expected {sorted(_GEMMASCOPE_TENSORS)}")
    d_in, n = tensors["W_enc"].shape
    cfg = SAEConfig(d_in=int(d_in), n_features=int(n))
    check_tensors(tensors, cfg, path, JumpReLUSAE)
    sae = JumpReLUSAE(cfg, device=device, dtype=tensors["W_enc"].dtype)
    sae.load_state_dict(tensors)
    return sae


def _read_npz(path: Path) -> dict[str, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(np.ascontiguousarray(data[k])) for k in data.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
