"""Export to and import from the SAELens 6.x folder format (peers.md §5), without importing sae_lens.

    export_saelens("runs/x/sae/blocks.0.mlp.hook_post/A1", "export/A1", hook_name="blocks.0.mlp.hook_post")
    sae_lens.SAE.load_from_disk("export/A1")          # StandardSAE or TopKSAE, same encode / decode
    sae = import_saelens("export/A1")                 # back to ours

A SAELens folder holds `sae_weights.safetensors` (exactly W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_in], b_dec [d_in]; our layout, so nothing is transposed) and `cfg.json`:

    architecture           "standard" (tm2023, april2024) or "topk" (+ "k")
    d_in, d_sae, dtype     from the weights; "device": "cpu" (SAELens overrides it at load)
    apply_b_dec_to_input   true for the paper's tied pre-encoder bias (tm2023, topk); false for april2024
    normalize_activations  "none": any input scale was folded into the weights by the trainer
    metadata               sae_lens_version ≥ 6.0.0 (SAELens's v6 loader, peers.md §5.4), hook_name,
                           and our own keys (`monosemantic_*`); SAELens keeps metadata keys and drops
                           unknown top-level ones

Our saved SAEs are already in SAELens's plain form: `save` folds the April decoder norms
(`standardize_`) and `train_sae` folds the input scale, so export copies the four tensors.
SAELens's forward is `f = act((x − b_dec·apply_b_dec_to_input) @ W_enc + b_enc)`, `x̂ = f @ W_dec + b_dec`,
the same as ours, and topk's is `relu(topk(·))` like ours (with `rescale_acts_by_decoder_norm: false`).

Import maps a SAELens folder to the architecture with the same forward: standard + apply → tm2023,
standard + no apply → april2024, topk → topk. A topk SAE without the b_dec subtraction gets it
folded into b_enc (b_enc + b_dec @ W_enc), and `rescale_acts_by_decoder_norm: true` is folded into
the encoder, both exactly. SAELens input normalisation other than "none" is refused (its scale
is not in the folder).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

import monosemantic
from monosemantic.errors import UserError
from monosemantic.io import load_tensors, read_json, save_tensors, write_json
from monosemantic.sae.constraints import fold_decoder_norms_
from monosemantic.sae.model import SparseAutoencoder, check_tensors
from monosemantic.sae.registry import SAE_CLASSES

log = logging.getLogger(__name__)

# sae_lens/constants.py: SAE_WEIGHTS_FILENAME, SAE_CFG_FILENAME
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CONFIG = "cfg.json"
# The oldest SAELens whose loader reads this format; ≥ 6.0.0 selects the v6 path (docs/reference/peers.md §5.4).
SAELENS_FORMAT_VERSION = "6.0.0"
_SHAPE_FIELDS = ("d_in", "n_features")


def export_saelens(
    sae_folder: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    *,
    hook_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the SAE saved in `sae_folder` as a SAELens folder `out_folder` (created; files replaced).

    Args:
        sae_folder: a folder written by `SparseAutoencoder.save`, any architecture.
        out_folder: must not be `sae_folder` (both formats name their config `cfg.json`).
        hook_name: the activation site, e.g. "blocks.0.mlp.hook_post" (goes to metadata.hook_name).
        metadata: more metadata keys (model_name, context_size, prepend_bos, dataset_path, ...).
    Returns:
        `out_folder` as a Path.
    """
    sae_folder, out_folder = Path(sae_folder), Path(out_folder)
    if out_folder.resolve() == sae_folder.resolve():
        raise UserError(f"{out_folder}: export into the SAE's own folder would replace its cfg.json")
    sae = SparseAutoencoder.load(sae_folder)  # saved folders hold the saved form already: copied bit for bit
    _write(sae, out_folder, hook_name, metadata)
    return out_folder


def write_saelens(
    sae: SparseAutoencoder,
    out_folder: str | os.PathLike[str],
    *,
    hook_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write an in-memory SAE as a SAELens folder, in the saved form (`standardize_` on a copy)."""
    _write(copy.deepcopy(sae).standardize_(), Path(out_folder), hook_name, metadata)


def _write(sae: SparseAutoencoder, out_folder: Path, hook_name: str | None, metadata: dict[str, Any] | None) -> None:
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
    write_json(out_folder / SAELENS_CONFIG, cfg)  # last, so a folder with cfg.json is complete


def import_saelens(folder: str | os.PathLike[str], device: torch.device | str | None = None) -> SparseAutoencoder:
    """Read a SAELens "standard" or "topk" folder into the architecture with the same forward.

    Encode and decode of the result equal SAELens's up to float rounding (exactly, when no
    folding was needed). Anything else (another architecture, input normalisation, extra
    tensors, wrong shapes) is a UserError.
    """
    folder = Path(folder)
    raw = read_json(folder / SAELENS_CONFIG)
    where = folder / SAELENS_CONFIG
    if not isinstance(raw, dict):
        raise UserError(f"{where}: not a SAELens config")
    saelens_arch, apply_b_dec = raw.get("architecture", "standard"), bool(raw.get("apply_b_dec_to_input", True))
    if raw.get("normalize_activations", "none") != "none":
        raise UserError(f"{where}: normalize_activations {raw['normalize_activations']!r} is not supported")
    candidates = [c for c in SAE_CLASSES.values() if c.saelens_architecture == saelens_arch]
    if not candidates:
        raise UserError(f"{where}: SAELens architecture {saelens_arch!r} has no counterpart here")
    exact = [c for c in candidates if c.pre_encoder_bias == apply_b_dec]
    cls = (exact or candidates)[0]
    try:
        shape = {"d_in": raw["d_in"], "n_features": raw["d_sae"]}
        fields = {f.name: raw[f.name] for f in dataclasses.fields(cls.config_class) if f.name not in _SHAPE_FIELDS}
        cfg = cls.config_class(**shape, **fields)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: bad SAE shape ({e})") from None
    tensors = load_tensors(folder / SAELENS_WEIGHTS)
    check_tensors(tensors, cfg, folder / SAELENS_WEIGHTS)
    with torch.no_grad():
        if cls.pre_encoder_bias != apply_b_dec:  # x W + b = (x − b_dec) W + (b + b_dec W)
            sign = 1.0 if cls.pre_encoder_bias else -1.0
            tensors["b_enc"] = tensors["b_enc"] + sign * (tensors["b_dec"] @ tensors["W_enc"])
        if raw.get("rescale_acts_by_decoder_norm", False):  # SAELens topk: pre · ‖W_dec‖, then f / ‖W_dec‖
            fold_decoder_norms_(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"])
    sae = cls(cfg, device=device, dtype=tensors["W_enc"].dtype)
    sae.load_state_dict(tensors)
    return sae
