"""Normalizer: fit, scale/unscale, folding into an SAE, save/load."""

from __future__ import annotations

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.sae import SAEConfig, SparseAutoencoder
from monosemantic.sae.normalize import Normalizer


def test_fit_makes_mean_norm_sqrt_d_in() -> None:
    x = torch.randn(1000, 16) * 7.0
    norm = Normalizer.fit(x)
    assert norm.scale(x).norm(dim=1).mean().item() == pytest.approx(4.0, rel=1e-5)
    assert torch.allclose(norm.unscale(norm.scale(x)), x)
    assert torch.allclose(torch.cat(list(norm.scale_batches(x.split(100)))), norm.scale(x))


def test_fold_into_gives_the_same_reconstruction_on_raw_inputs() -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=6, n_features=12))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    norm = Normalizer(factor=0.25)
    x = torch.randn(20, 6) * 4
    x_hat_scaled, f_scaled = sae(norm.scale(x))
    W_dec = sae.W_dec.detach().clone()
    norm.fold_into_(sae)
    x_hat, f = sae(x)
    assert torch.allclose(x_hat, norm.unscale(x_hat_scaled), atol=1e-5)
    assert torch.allclose(f, f_scaled / norm.factor, atol=1e-5)  # activations in raw units
    assert torch.equal(sae.W_dec, W_dec)  # decoder rows stay unit norm


def test_save_load_and_validation(tmp_path) -> None:
    Normalizer(factor=0.5).save(tmp_path / "normalizer.json")
    assert Normalizer.load(tmp_path / "normalizer.json") == Normalizer(factor=0.5)
    (tmp_path / "bad.json").write_text('{"kind": "monosemantic.normalizer", "schema_version": 1}')
    with pytest.raises(UserError):
        Normalizer.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="factor"):
        Normalizer(factor=0.0)
