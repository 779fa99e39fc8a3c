"""SAELens interop: export / import round trips always; parity with SAELens itself when sae-lens is installed.

The parity tests need the optional `sae-lens` package (`pip install sae-lens`, see README) and
are skipped cleanly without it; they load our export with `sae_lens.SAE.load_from_disk` and compare
encode / decode on random inputs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.io import save_tensors, write_json
from monosemantic.sae import (
    SAE_CLASSES,
    AprilSAE,
    JumpReLUSAE,
    SAEConfig,
    SparseAutoencoder,
    TopKSAE,
    TopKSAEConfig,
)
from monosemantic.sae.saelens import SAELENS_CONFIG, SAELENS_WEIGHTS, export_saelens, import_saelens

HOOK = "blocks.0.mlp.hook_post"


def trained_like(name: str, d_in: int = 12, n_features: int = 40, seed: int = 0) -> SparseAutoencoder:
    """An SAE of architecture `name` with nonzero biases and, for April, free decoder norms."""
    g = torch.Generator().manual_seed(seed)
    cls = SAE_CLASSES[name]
    cfg = TopKSAEConfig(d_in, n_features, k=5) if cls.config_class is TopKSAEConfig else SAEConfig(d_in, n_features)
    sae = cls(cfg, generator=g)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(n_features, generator=g) * 0.2)
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
        if not sae.unit_norm_decoder:
            sae.W_enc.copy_(torch.randn(d_in, n_features, generator=g))
            sae.W_dec.mul_(torch.rand(n_features, 1, generator=g) * 20)
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.copy_(torch.rand(n_features, generator=g))
    return sae


SAELENS_ARCH = {
    "tm2023": "standard",
    "april2024": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",  # with the pre-encoder bias and one threshold, as SAELens saves BatchTopK
}
SAELENS_CLASS = {"standard": "StandardSAE", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE"}


@pytest.fixture
def exported(tmp_path):
    """`exported(name)` → (our SAE as saved and loaded, the SAELens folder)."""

    def make(name: str):
        sae = SparseAutoencoder.load(trained_like(name).save(tmp_path / f"{name}-ours"))  # the saved form
        out = export_saelens(tmp_path / f"{name}-ours", tmp_path / f"{name}-saelens", hook_name=HOOK)
        return sae, out

    return make


@pytest.mark.parametrize("name", sorted(SAE_CLASSES))
def test_export_writes_the_saelens_layout(exported, name) -> None:
    sae, out = exported(name)
    assert sorted(p.name for p in out.iterdir()) == sorted([SAELENS_CONFIG, SAELENS_WEIGHTS])
    cfg = json.loads((out / SAELENS_CONFIG).read_text())
    assert cfg["architecture"] == SAELENS_ARCH[name]
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (12, 40, "float32")
    assert cfg["apply_b_dec_to_input"] is (name not in ("april2024", "jumprelu"))
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["sae_lens_version"] >= "6"
    assert cfg["metadata"]["monosemantic_architecture"] == name
    if name == "topk":
        assert cfg["k"] == 5 and cfg["rescale_acts_by_decoder_norm"] is False


@pytest.mark.parametrize("name", sorted(SAE_CLASSES))
def test_import_of_export_is_the_original(exported, name) -> None:
    sae, out = exported(name)
    back = import_saelens(out)
    if name == "batchtopk":  # SAELens's jumprelu folders import as JumpReLU, the b_dec subtraction folded into b_enc
        assert type(back) is JumpReLUSAE and back.cfg == SAEConfig(sae.cfg.d_in, sae.cfg.n_features)
        x = torch.randn(32, sae.cfg.d_in) * 3
        torch.testing.assert_close(back.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(back(x)[0], sae(x)[0], atol=1e-5, rtol=1e-5)
        return
    assert type(back) is type(sae) and back.cfg == sae.cfg
    for param, p in sae.named_parameters():
        assert torch.equal(p, getattr(back, param)), param


def test_export_refuses_its_own_folder(tmp_path) -> None:
    folder = trained_like("tm2023").save(tmp_path / "sae")
    with pytest.raises(UserError, match="own folder"):
        export_saelens(folder, folder)


def saelens_forward(t: dict[str, torch.Tensor], cfg: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAELens 6.x encode / decode written out from its source (saes/standard_sae.py, topk_sae.py)."""
    pre = (x - t["b_dec"] * cfg["apply_b_dec_to_input"]) @ t["W_enc"] + t["b_enc"]
    norms = t["W_dec"].norm(dim=-1)
    rescale = cfg.get("rescale_acts_by_decoder_norm", False)
    if cfg["architecture"] == "topk":
        pre = pre * norms if rescale else pre
        values, idx = pre.topk(cfg["k"], dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, values.relu())
    elif cfg["architecture"] == "jumprelu":  # jumprelu_sae.py: relu(pre) * (pre > threshold)
        f = pre.relu() * (pre > t["threshold"])
    else:
        f = pre.relu()
    return ((f / norms if rescale else f) @ t["W_dec"] + t["b_dec"]), f


@pytest.mark.parametrize(
    "architecture, apply_b_dec, rescale, expected",
    [
        ("standard", True, False, SparseAutoencoder),
        ("standard", False, False, AprilSAE),
        ("topk", True, False, TopKSAE),
        ("topk", False, True, TopKSAE),  # b_dec and decoder norms both folded
        ("jumprelu", False, False, JumpReLUSAE),
        ("jumprelu", True, False, JumpReLUSAE),  # b_dec folded into b_enc
    ],
)
def test_import_matches_saelens_semantics(tmp_path, architecture, apply_b_dec, rescale, expected) -> None:
    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(6, 20, generator=g),
        "b_enc": torch.randn(20, generator=g),
        "W_dec": torch.randn(20, 6, generator=g),  # rows of any norm, as SAELens trains them
        "b_dec": torch.randn(6, generator=g),
    }
    cfg = {"architecture": architecture, "d_in": 6, "d_sae": 20, "apply_b_dec_to_input": apply_b_dec}
    if architecture == "topk":
        cfg |= {"k": 4, "rescale_acts_by_decoder_norm": rescale}
    if architecture == "jumprelu":
        t["threshold"] = torch.rand(20, generator=g) - 0.2  # some negative: those act as 0
    save_tensors(tmp_path / SAELENS_WEIGHTS, t)
    write_json(tmp_path / SAELENS_CONFIG, cfg)
    sae = import_saelens(tmp_path)
    assert type(sae) is expected
    x = torch.randn(30, 6, generator=g)
    x_hat, f = sae(x)
    ref_x_hat, ref_f = saelens_forward(t, cfg, x)
    assert torch.allclose(x_hat, ref_x_hat, atol=1e-4)
    if not rescale:  # with the norms folded in, activations come out in unit-decoder units
        assert torch.allclose(f, ref_f, atol=1e-4)


def test_import_refuses_what_it_cannot_represent(tmp_path) -> None:
    save_tensors(tmp_path / SAELENS_WEIGHTS, {"W_enc": torch.zeros(2, 3)})
    write_json(tmp_path / SAELENS_CONFIG, {"architecture": "transcoder", "d_in": 2, "d_sae": 3})
    with pytest.raises(UserError, match="transcoder"):
        import_saelens(tmp_path)
    write_json(tmp_path / SAELENS_CONFIG, {"architecture": "gated", "d_in": 2, "d_sae": 3})
    with pytest.raises(UserError, match="b_gate"):
        import_saelens(tmp_path)
    write_json(tmp_path / SAELENS_CONFIG, {"architecture": "standard", "reshape_activations": "hook_z"})
    with pytest.raises(UserError, match="reshape_activations"):
        import_saelens(tmp_path)
    write_json(tmp_path / SAELENS_CONFIG, {"architecture": "standard", "d_in": 2, "d_sae": 3})
    with pytest.raises(UserError, match="tensors"):
        import_saelens(tmp_path)
    write_json(tmp_path / SAELENS_CONFIG, {"architecture": "standard", "normalize_activations": "layer_norm"})
    with pytest.raises(UserError, match="normalize_activations"):
        import_saelens(tmp_path)


# -- parity with SAELens itself (optional dependency) --------------------------------------------


@pytest.fixture(scope="module")
def sae_lens():
    os.environ.setdefault("WANDB_MODE", "disabled")  # HF_HUB_OFFLINE is set in tests/conftest.py
    return pytest.importorskip("sae_lens")


@pytest.mark.parametrize("name", sorted(SAE_CLASSES))
def test_saelens_loads_the_export_with_the_same_encode_and_decode(sae_lens, exported, name) -> None:
    sae, out = exported(name)
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    assert type(theirs).__name__ == SAELENS_CLASS[SAELENS_ARCH[name]]
    assert theirs.cfg.metadata.hook_name == HOOK
    x = torch.randn(64, 12) * 3
    with torch.no_grad():
        f_ours, f_theirs = sae.encode(x), theirs.encode(x)
        assert torch.allclose(f_theirs, f_ours, atol=1e-5)
        assert torch.allclose(theirs.decode(f_ours), sae.decode(f_ours), atol=1e-5)
        assert torch.allclose(theirs(x), sae(x)[0], atol=1e-5)
    assert import_saelens(out).cfg == (sae.cfg if name != "batchtopk" else SAEConfig(12, 40))
