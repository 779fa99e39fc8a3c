"""Export to and import from the SAELens 6.x folder format (peers.md §5), without importing sae_lens.

    export_saelens("runs/x/sae/blocks.0.mlp.hook_post/A1", "export/A1", hook_name="blocks.0.mlp.hook_post")
    sae_lens.SAE.load_from_disk("export/A1")          # StandardSAE, TopKSAE or JumpReLUSAE, same encode / decode
    sae = import_saelens("export/A1")                 # back to ours

A SAELens folder holds `sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc [d_sae], W_dec
[d_sae, d_in], b_dec [d_in], and `threshold` [d_sae] for jumprelu; our layout, so nothing is
transposed), `cfg.json`, and optionally `sparsity.safetensors` (one tensor `sparsity`, log10 of
each feature's firing fraction + 1e-10, as SAELens's trainer writes it) and a `README.md` model card:

    architecture           "standard" (tm2023, april2024), "topk" (+ "k") or "jumprelu"
    d_in, d_sae, dtype     from the weights; "device": "cpu" (SAELens overrides it at load)
    apply_b_dec_to_input   true for the paper's tied pre-encoder bias (tm2023, topk); false for april2024, jumprelu
    normalize_activations  "none": any input scale was folded into the weights by the trainer
    metadata               sae_lens_version ≥ 6.0.0 (SAELens's v6 loader, peers.md §5.4), hook_name,
                           what the caller adds (model_name, context_size, dataset_path, hf_hook_name, ...)
                           and our own keys (`monosemantic_*`); SAELens keeps metadata keys and drops
                           unknown top-level ones

Our saved SAEs are already in SAELens's plain form: `save` folds the April decoder norms
(`standardize_`) and `train_sae` folds the input scale, so export copies the tensors.
SAELens's forward is `f = act((x − b_dec·apply_b_dec_to_input) @ W_enc + b_enc)`, `x̂ = f @ W_dec + b_dec`,
the same as ours; topk's is `relu(topk(·))` like ours (with `rescale_acts_by_decoder_norm: false`)
and jumprelu's `relu(pre) · (pre > threshold)` like `JumpReLUSAE`.

Import maps a SAELens folder to the architecture with the same forward: standard + apply → tm2023,
standard + no apply → april2024, topk → topk, jumprelu → jumprelu (BatchTopK is saved by SAELens as
jumprelu, and so is ours, `batchtopk.py`), gated → jumprelu (`jumprelu.gated_as_jumprelu`, exact). A
missing or extra b_dec subtraction is folded into b_enc (b_enc ± b_dec @ W_enc), and topk's
`rescale_acts_by_decoder_norm: true` into the encoder, both exactly. SAELens input normalisation
other than "none" (its scale is not in the folder) and reshaped (attention `hook_z`) activations are
refused.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import monosemantic
from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import atomic_path, load_tensors, read_json, save_tensors, write_json
from monosemantic.sae.constraints import fold_decoder_norms_
from monosemantic.sae.jumprelu import gated_as_jumprelu
from monosemantic.sae.model import SparseAutoencoder, check_tensors
from monosemantic.sae.registry import SAE_CLASSES

log = logging.getLogger(__name__)

# sae_lens/constants.py: SAE_WEIGHTS_FILENAME, SAE_CFG_FILENAME, SPARSITY_FILENAME
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CONFIG = "cfg.json"
SAELENS_SPARSITY = "sparsity.safetensors"
README = "README.md"
# The oldest SAELens whose loader reads this format; ≥ 6.0.0 selects the v6 path (docs/reference/peers.md §5.4).
SAELENS_FORMAT_VERSION = "6.0.0"
# SAELens's trainer: log10(firing fraction + 1e-10), so a dead feature reads −10.
SPARSITY_EPS = 1e-10
_SHAPE_FIELDS = ("d_in", "n_features")
_GATED = ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")


def log10_density(density: Tensor) -> Tensor:
    """`sparsity.safetensors`'s value: log10(density + 1e-10), float32 `[n_features]`."""
    return torch.log10(density.double() + SPARSITY_EPS).float()


def export_saelens(
    sae_folder: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    *,
    hook_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    sparsity: Tensor | None = None,
    readme: str | None = None,
) -> Path:
    """Write the SAE saved in `sae_folder` as a SAELens folder `out_folder` (created; files replaced).

    Args:
        sae_folder: a folder written by `SparseAutoencoder.save`, any architecture.
        out_folder: must not be `sae_folder` (both formats name their config `cfg.json`).
        hook_name: the activation site, e.g. "blocks.0.mlp.hook_post" (goes to metadata.hook_name).
        metadata: more metadata keys (model_name, context_size, prepend_bos, dataset_path, ...).
        sparsity: `[n_features]` log10 feature density (`log10_density`), written to sparsity.safetensors.
        readme: a model card, written to README.md.
    Returns:
        `out_folder` as a Path.
    """
    sae_folder, out_folder = Path(sae_folder), Path(out_folder)
    if out_folder.resolve() == sae_folder.resolve():
        raise UserError(f"{out_folder}: export into the SAE's own folder would replace its cfg.json")
    sae = SparseAutoencoder.load(sae_folder)  # saved folders hold the saved form already: copied bit for bit
    _write(sae, out_folder, hook_name, metadata, sparsity, readme)
    return out_folder


def write_saelens(
    sae: SparseAutoencoder,
    out_folder: str | os.PathLike[str],
    *,
    hook_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    sparsity: Tensor | None = None,
    readme: str | None = None,
) -> None:
    """Write an in-memory SAE as a SAELens folder, in the saved form (`standardize_` on a copy)."""
    _write(copy.deepcopy(sae).standardize_(), Path(out_folder), hook_name, metadata, sparsity, readme)


def _write(
    sae: SparseAutoencoder,
    out_folder: Path,
    hook_name: str | None,
    metadata: dict[str, Any] | None,
    sparsity: Tensor | None,
    readme: str | None,
) -> None:
    tensors = {name: p.detach() for name, p in sae.named_parameters()}
    extra = {k: v for k, v in dataclasses.asdict(sae.cfg).items() if k not in _SHAPE_FIELDS}  # topk: k
    if sae.saelens_architecture == "topk":
        extra["rescale_acts_by_decoder_norm"] = False
    cfg = {
        "architecture": sae.saelens_architecture,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.n_features,
        "dtype": str(tensors["W_enc"].dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": sae.pre_encoder_bias,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **extra,
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": SAELENS_FORMAT_VERSION,
            "hook_name": hook_name,
            **(metadata or {}),
            "monosemantic_architecture": sae.architecture,
            "monosemantic_version": monosemantic.__version__,
        },
    }
    save_tensors(out_folder / SAELENS_WEIGHTS, tensors)
    if sparsity is not None:
        if tuple(sparsity.shape) != (sae.cfg.n_features,):
            raise ValueError(f"sparsity has shape {tuple(sparsity.shape)}, expected ({sae.cfg.n_features},)")
        save_tensors(out_folder / SAELENS_SPARSITY, {"sparsity": sparsity.float().contiguous()})
    if readme is not None:
        with atomic_path(out_folder / README) as tmp:
            tmp.write_text(readme, encoding="utf-8")
    write_json(out_folder / SAELENS_CONFIG, cfg)  # last, so a folder with cfg.json is complete


def read_saelens_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A SAELens folder's cfg.json as a dict (a UserError naming the file otherwise)."""
    where = Path(folder) / SAELENS_CONFIG
    raw = read_json(where)
    if not isinstance(raw, dict):
        raise UserError(f"{where}: not a SAELens config")
    return raw


def saelens_metadata(raw: dict[str, Any]) -> dict[str, Any]:
    """What a SAELens config says about the SAE's subject and data: `metadata`, and the same keys at the
    top level where a pre-6 config keeps them."""
    keys = ("model_name", "hook_name", "hf_hook_name", "context_size", "dataset_path", "prepend_bos")
    meta = raw.get("metadata")
    return {**{k: raw[k] for k in keys if k in raw}, **(meta if isinstance(meta, dict) else {})}


def import_saelens(folder: str | os.PathLike[str], device: torch.device | str | None = None) -> SparseAutoencoder:
    """Read a SAELens standard, topk, jumprelu or gated folder into the architecture with the same forward.

    Encode and decode of the result equal SAELens's up to float rounding (exactly, when no
    folding was needed). Anything else (another architecture, input normalisation, extra
    tensors, wrong shapes) is a UserError.
    """
    folder = Path(folder)
    raw = read_saelens_config(folder)
    where = folder / SAELENS_CONFIG
    saelens_arch, apply_b_dec = raw.get("architecture", "standard"), bool(raw.get("apply_b_dec_to_input", True))
    if raw.get("normalize_activations") not in (None, "none"):
        raise UserError(f"{where}: normalize_activations {raw['normalize_activations']!r} is not supported")
    if raw.get("reshape_activations") not in (None, "none"):
        raise UserError(f"{where}: reshape_activations {raw['reshape_activations']!r} is not supported")
    tensors = load_tensors(folder / SAELENS_WEIGHTS)
    if saelens_arch == "gated":  # the same function as a JumpReLU encoder (jumprelu.gated_as_jumprelu)
        if set(tensors) != set(_GATED):
            raise UserError(f"{folder / SAELENS_WEIGHTS}: tensors {sorted(tensors)}, expected {sorted(_GATED)}")
        W_enc, b_enc, threshold = gated_as_jumprelu(*(tensors[k] for k in ("W_enc", "b_gate", "b_mag", "r_mag")))
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": tensors["W_dec"], "b_dec": tensors["b_dec"]}
        tensors["threshold"] = threshold
        saelens_arch = "jumprelu"
    candidates = [c for c in SAE_CLASSES.values() if c.saelens_architecture == saelens_arch and c.saelens_import]
    if not candidates:
        raise UserError(f"{where}: SAELens architecture {saelens_arch!r} has no counterpart here")
    exact = [c for c in candidates if c.pre_encoder_bias == apply_b_dec]
    cls = (exact or candidates)[0]
    try:
        shape = {"d_in": raw["d_in"], "n_features": raw["d_sae"]}
        fields = {f.name: raw[f.name] for f in dataclasses.fields(cls.config_class) if f.name not in _SHAPE_FIELDS}
        cfg = cls.config_class(**shape, **fields)
    except CONFIG_VALUE_ERRORS as e:
        raise UserError(f"{where}: bad SAE shape ({e})") from None
    check_tensors(tensors, cfg, folder / SAELENS_WEIGHTS, cls)
    with torch.no_grad():
        if cls.pre_encoder_bias != apply_b_dec:  # x W + b = (x − b_dec) W + (b + b_dec W)
            sign = 1.0 if cls.pre_encoder_bias else -1.0
            tensors["b_enc"] = tensors["b_enc"] + sign * (tensors["b_dec"] @ tensors["W_enc"])
        if saelens_arch == "topk" and raw.get("rescale_acts_by_decoder_norm", False):  # pre·‖W_dec‖, then f/‖W_dec‖
            fold_decoder_norms_(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"])
    sae = cls(cfg, device=device, dtype=tensors["W_enc"].dtype)
    sae.load_state_dict(tensors)
    return sae
