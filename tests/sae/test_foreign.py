"""Importing the SAEs people publish: sparsify and Gemma Scope folders, format detection, and
import -> export -> sae_lens load reproducing each original (the real `sae_lens` where it is the origin).

The sparsify and Gemma Scope forwards below are written out from their sources (sparsify
`sparse_coder.py` / `fused_encoder.py`; SAELens's Gemma Scope loader and `jumprelu_sae.py`), since
neither format needs its tool to be read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.cli import main
from monosemantic.errors import UserError
from monosemantic.io import load_tensors, save_tensors, write_json
from monosemantic.paths import IMPORTED_JSON, SAE_CONFIG
from monosemantic.sae import JumpReLUSAE, SAEConfig, TopKSAE, TopKSAEConfig
from monosemantic.sae.foreign import detect_format, import_sae

D, N, K = 10, 48, 6


def cli(*args) -> int:
    return main([str(a) for a in args])


def sparsify_folder(root: Path, hook: str = "layers.3.mlp", **cfg) -> Path:
    """A folder as sparsify's `SparseCoder.save_to_disk` writes it, under a run folder with its config.json."""
    g = torch.Generator().manual_seed(0)
    folder = root / hook
    folder.mkdir(parents=True)
    W = torch.randn(N, D, generator=g)
    tensors = {
        "encoder.weight": W,
        "encoder.bias": torch.randn(N, generator=g) * 0.2,
        "W_dec": W / W.norm(dim=1, keepdim=True),  # normalize_decoder: unit rows
        "b_dec": torch.randn(D, generator=g),
    }
    save_tensors(folder / "sae.safetensors", tensors)
    coder = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": N, "k": K}
    coder |= {"multi_topk": False, "skip_connection": False, "transcode": False, **cfg}
    write_json(folder / SAE_CONFIG, {**coder, "d_in": D})
    run = {"model": "EleutherAI/pythia-70m", "dataset": "EleutherAI/fineweb", "ctx_len": 2048}  # sparsify's RunConfig
    write_json(root / "config.json", run)
    return folder


def sparsify_forward(folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sparsify: topk(relu((x − b_dec) @ encoder.weightᵀ + encoder.bias)); decode = Σ acts · W_dec rows + b_dec."""
    t = load_tensors(folder / "sae.safetensors")
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    values, idx = pre.topk(K, dim=-1, sorted=False)
    f = torch.zeros_like(pre).scatter(-1, idx, values)
    return f @ t["W_dec"] + t["b_dec"], f


def gemmascope_folder(root: Path, as_npz: bool = True) -> Path:
    """A Gemma Scope parameter file: params.npz (lower-case `w_`), or Gemma Scope 2's params.safetensors."""
    g = torch.Generator().manual_seed(1)
    p = {
        "w_enc": torch.randn(D, N, generator=g),
        "b_enc": torch.randn(N, generator=g) * 0.3,
        "w_dec": torch.randn(N, D, generator=g) * 0.5,
        "b_dec": torch.randn(D, generator=g),
        "threshold": torch.rand(N, generator=g) * 1.5,
    }
    root.mkdir(parents=True)
    if as_npz:
        np.savez(root / "params.npz", **{k: v.numpy() for k, v in p.items()})
    else:
        save_tensors(root / "params.safetensors", p)
    return root


def gemmascope_forward(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """JumpReLU without pre-encoder bias: relu(pre) · (pre > threshold), then the decoder."""
    with np.load(folder / "params.npz") as d:
        p = {k: torch.from_numpy(d[k]) for k in d.files}
    pre = x @ p["w_enc"] + p["b_enc"]
    return (torch.relu(pre) * (pre > p["threshold"])) @ p["w_dec"] + p["b_dec"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_sparsify_folder_imports_as_its_topk_forward(tmp_path) -> None:
    folder = sparsify_folder(tmp_path / "run")
    assert detect_format(folder) == "sparsify"
    imported = import_sae(folder)
    assert type(imported.sae) is TopKSAE and imported.sae.cfg.k == K and imported.sae.cfg.n_features == N
    x = torch.randn(200, D) * 2
    x_hat, f = sparsify_forward(folder, x)
    ours_hat, ours_f = imported.sae(x)
    assert torch.allclose(ours_f, f, atol=1e-5) and rel_err(ours_hat, x_hat) < 1e-6
    assert imported.metadata == {
        "hf_hook_name": "layers.3.mlp",
        "model_name": "EleutherAI/pythia-70m",
        "dataset_path": "EleutherAI/fineweb",
        "context_size": 2048,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation": "groupmax"}, "activation 'groupmax' is not supported"),
        ({"transcode": True}, "transcode True is not supported"),
        ({"skip_connection": True}, "skip_connection True is not supported"),
        ({"k": 0}, "bad sparsify config"),
    ],
)
def test_sparsify_refuses_what_is_not_an_autoencoder_of_ours(tmp_path, change, message) -> None:
    folder = sparsify_folder(tmp_path / "run", **change)
    with pytest.raises(UserError, match=message):
        import_sae(folder)


def test_sparsify_refuses_unknown_tensors(tmp_path) -> None:
    folder = sparsify_folder(tmp_path / "run")
    t = load_tensors(folder / "sae.safetensors")
    save_tensors(folder / "sae.safetensors", {**t, "W_skip": torch.zeros(D, D)})
    with pytest.raises(UserError, match="W_skip"):
        import_sae(folder)


@pytest.mark.parametrize("as_npz", [True, False])
def test_gemmascope_parameters_import_as_jumprelu(tmp_path, as_npz) -> None:
    folder = gemmascope_folder(tmp_path / "layer_3" / "width_16k" / "average_l0_10", as_npz)
    assert detect_format(folder) == "gemmascope"
    sae = import_sae(folder).sae
    assert type(sae) is JumpReLUSAE and sae.cfg == SAEConfig(D, N)
    if as_npz:
        x = torch.randn(300, D) * 2
        want = gemmascope_forward(folder, x)
        assert 0.05 < (sae.encode(x) > 0).float().mean() < 0.95
        assert rel_err(sae(x)[0], want) < 1e-6


def test_gemmascope_refuses_other_tensors(tmp_path) -> None:
    folder = gemmascope_folder(tmp_path / "g", as_npz=False)
    t = load_tensors(folder / "params.safetensors")
    save_tensors(folder / "params.safetensors", {**t, "affine_skip_connection": torch.zeros(D, D)})
    with pytest.raises(UserError, match="affine_skip_connection"):
        import_sae(folder)


def test_detection_names_what_it_found(tmp_path) -> None:
    sparsify_folder(tmp_path / "run", hook="layers.1")
    sparsify_folder(tmp_path / "run2", hook="layers.2")
    (tmp_path / "run" / "layers.2").mkdir()
    (tmp_path / "run" / "layers.2" / SAE_CONFIG).write_text("{}")
    with pytest.raises(UserError, match=r"holds 2 SAE folders \(layers.1, layers.2\)"):
        detect_format(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an SAE folder"):
        detect_format(tmp_path / "empty")
    with pytest.raises(UserError, match="no such folder"):
        detect_format(tmp_path / "missing")
    ours = TopKSAE(TopKSAEConfig(D, N, k=K)).save(tmp_path / "ours")
    assert detect_format(ours) == "monosemantic" and type(import_sae(ours).sae) is TopKSAE


# -- import -> export -> sae_lens load, against each original --------------------------------------


@pytest.fixture(scope="module")
def sae_lens():
    os.environ.setdefault("WANDB_MODE", "disabled")
    return pytest.importorskip("sae_lens")


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if name.startswith("b") else 1.0))


def saelens_original(sae_lens, kind: str, folder: Path) -> Path:
    """A folder written by SAELens itself: gated, jumprelu, BatchTopK (saved as jumprelu), topk with rescaling."""
    if kind == "gated":
        sae = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=D, d_sae=N))
        _randomize(sae, 0)
        sae.save_model(folder)
    elif kind == "jumprelu":
        sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D, d_sae=N, apply_b_dec_to_input=False))
        _randomize(sae, 1)
        with torch.no_grad():
            sae.threshold.copy_(torch.rand(N) * 2)
        sae.save_model(folder)
    elif kind == "batchtopk":
        from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D, d_sae=N, k=K))
        _randomize(sae, 2)
        sae.topk_threshold = torch.tensor(0.8, dtype=torch.double)
        sae.save_inference_model(folder)
    else:
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D, d_sae=N, k=K, rescale_acts_by_decoder_norm=True))
        _randomize(sae, 3)
        sae.save_model(folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"] |= {"hook_name": "blocks.4.hook_resid_post", "model_name": "gpt2"}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("kind", ["gated", "jumprelu", "batchtopk", "topk", "sparsify", "gemmascope"])
def test_import_export_and_saelens_load_reconstruct_the_original(sae_lens, tmp_path, kind) -> None:
    x = torch.randn(500, D) * 2
    if kind == "sparsify":
        src = sparsify_folder(tmp_path / "run")
        want = sparsify_forward(src, x)[0]
    elif kind == "gemmascope":
        src = gemmascope_folder(tmp_path / "g")
        want = gemmascope_forward(src, x)
    else:
        src = saelens_original(sae_lens, kind, tmp_path / "original")
        original = sae_lens.SAE.load_from_disk(str(src), device="cpu")
        with torch.no_grad():
            want = original(x)
            assert 0.02 < (original.encode(x) > 0).float().mean() < 0.98  # the gates are exercised
    assert cli("sae", "import", src, tmp_path / "ours") == 0
    assert cli("sae", "export", tmp_path / "ours", tmp_path / "export") == 0
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "export"), device="cpu")
    with torch.no_grad():
        assert rel_err(theirs(x), want) < 1e-4
    imported = json.loads((tmp_path / "ours" / IMPORTED_JSON).read_text())
    if kind not in ("sparsify", "gemmascope"):  # what the original folder said travels with the SAE
        assert imported["format"] == "saelens" and theirs.cfg.metadata.hook_name == "blocks.4.hook_resid_post"
        assert theirs.cfg.metadata.model_name == "gpt2" and theirs.cfg.metadata.monosemantic_imported_from == "saelens"
    assert type(theirs).__name__ == ("TopKSAE" if kind in ("topk", "sparsify") else "JumpReLUSAE")
