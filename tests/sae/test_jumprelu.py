"""JumpReLU inference: the gate, the saved form, save / load, and the Gated SAE written as a JumpReLU."""

from __future__ import annotations

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.io import load_tensors, save_tensors
from monosemantic.paths import SAE_WEIGHTS
from monosemantic.sae import AprilSAE, JumpReLUSAE, SAEConfig, SparseAutoencoder
from monosemantic.sae.jumprelu import gated_as_jumprelu


def jumprelu(d_in: int = 6, n: int = 24, seed: int = 0) -> JumpReLUSAE:
    g = torch.Generator().manual_seed(seed)
    sae = JumpReLUSAE(SAEConfig(d_in, n), generator=g)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, n, generator=g))
        sae.b_enc.copy_(torch.randn(n, generator=g) * 0.3)
        sae.W_dec.mul_(torch.rand(n, 1, generator=g) * 5 + 0.1)  # free decoder norms
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
        sae.threshold.copy_(torch.rand(n, generator=g) * 2 - 0.5)  # some negative
    return sae


def test_the_gate_passes_pre_activations_above_the_threshold_only() -> None:
    sae = jumprelu()
    x = torch.randn(200, 6)
    pre = x @ sae.W_enc + sae.b_enc  # no pre-encoder bias
    f = sae.encode(x)
    above = pre > sae.threshold.clamp_min(0)  # a negative threshold acts as 0 (relu first, as SAELens)
    assert torch.equal(f[above], pre[above]) and (f[~above] == 0).all()
    assert 0 < above.float().mean() < 1  # both sides are exercised
    assert torch.allclose(sae(x)[0], f @ sae.W_dec + sae.b_dec)


def test_with_zero_thresholds_it_is_the_relu_sae_without_pre_encoder_bias() -> None:
    sae = jumprelu()
    with torch.no_grad():
        sae.threshold.zero_()
    relu = AprilSAE(sae.cfg)
    relu.load_state_dict({k: v for k, v in sae.state_dict().items() if k != "threshold"})
    x = torch.randn(50, 6)
    assert torch.equal(sae.encode(x), relu.encode(x))


def test_standardize_makes_unit_rows_and_keeps_the_reconstruction_and_the_gate() -> None:
    sae = jumprelu()
    x = torch.randn(300, 6)
    x_hat, f = sae(x)
    norms = sae.W_dec.norm(dim=1)
    sae.standardize_()
    x_hat2, f2 = sae(x)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-6)
    assert torch.allclose(x_hat2, x_hat, atol=1e-4)
    assert torch.equal(f2 > 0, f > 0) and torch.allclose(f2, f * norms, atol=1e-4)  # f_i · ‖W_dec[i]‖


def test_save_and_load_keep_the_threshold(tmp_path) -> None:
    sae = jumprelu()
    folder = sae.save(tmp_path / "j")
    assert set(load_tensors(folder / SAE_WEIGHTS)) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    back = SparseAutoencoder.load(folder)
    assert type(back) is JumpReLUSAE
    x = torch.randn(40, 6)
    assert torch.allclose(back(x)[0], sae(x)[0], atol=1e-5)
    tensors = load_tensors(folder / SAE_WEIGHTS)
    del tensors["threshold"]
    save_tensors(folder / SAE_WEIGHTS, tensors)
    with pytest.raises(UserError, match="expected .*threshold"):
        SparseAutoencoder.load(folder)


def test_a_gated_encoder_is_a_jumprelu_encoder() -> None:
    """SAELens's gated_sae.py encode, written out, against `gated_as_jumprelu`."""
    g = torch.Generator().manual_seed(1)
    W, b_gate, b_mag, r_mag = torch.randn(6, 30, generator=g), *(torch.randn(30, generator=g) for _ in range(3))
    x = torch.randn(500, 6, generator=g)
    gate = (x @ W + b_gate > 0).float()
    want = gate * torch.relu(x @ (W * r_mag.exp()) + b_mag)
    W_j, b_j, theta = gated_as_jumprelu(W, b_gate, b_mag, r_mag)
    pre = x @ W_j + b_j
    got = torch.relu(pre) * (pre > theta)
    assert 0.1 < (want > 0).float().mean() < 0.9
    assert torch.allclose(got, want, atol=1e-5)


def test_a_short_run_is_refused_or_warned_with_the_flags_that_help(caplog) -> None:
    from monosemantic.errors import UserError
    from monosemantic.sae.jumprelu_train import SHORT_RUN_STEPS, JumpReLUTrainConfig

    with pytest.raises(UserError, match="976 steps is too short.*--arch batchtopk.*--batch-size.*--allow-short-run"):
        JumpReLUTrainConfig().for_run(976)
    with caplog.at_level("WARNING"):
        JumpReLUTrainConfig(allow_short_run=True).for_run(976)
    assert "976 steps is short" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        JumpReLUTrainConfig().for_run(SHORT_RUN_STEPS)
    assert caplog.text == ""
