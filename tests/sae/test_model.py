"""SparseAutoencoder: hand-computed forward, properties, init, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.paths import SAE_CONFIG, SAE_WEIGHTS
from monosemantic.sae import SAEConfig, SparseAutoencoder


def identity_sae(b_enc=(0.0, 0.0), b_dec=(0.0, 0.0)) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=2, n_features=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
        sae.b_enc.copy_(torch.tensor(b_enc))
        sae.b_dec.copy_(torch.tensor(b_dec))
    return sae


def test_identity_weights_relu_clips_negative() -> None:
    sae = identity_sae()
    x = torch.tensor([[1.0, -1.0]])
    x_hat, f = sae(x)
    assert torch.equal(f, torch.tensor([[1.0, 0.0]]))  # ReLU clips -1 -> 0
    assert torch.equal(x_hat, torch.tensor([[1.0, 0.0]]))


def test_biases_by_hand() -> None:
    # x̄ = x − b_dec = [0.5, −1.5]; pre = x̄ + b_enc = [0.75, −1.5]; f = [0.75, 0]
    # x̂ = f @ I + b_dec = [1.25, 0.5]
    sae = identity_sae(b_enc=(0.25, 0.0), b_dec=(0.5, 0.5))
    x_hat, f = sae(torch.tensor([[1.0, -1.0]]))
    assert torch.allclose(f, torch.tensor([[0.75, 0.0]]))
    assert torch.allclose(x_hat, torch.tensor([[1.25, 0.5]]))


def test_layout_is_rows_are_directions() -> None:
    # one active feature reconstructs b_dec + f · (its W_dec row)
    sae = SparseAutoencoder(SAEConfig(d_in=3, n_features=4))
    f = torch.zeros(1, 4)
    f[0, 2] = 2.0
    assert torch.allclose(sae.decode(f), sae.b_dec + 2.0 * sae.W_dec[2])


def test_forward_is_decode_of_encode_and_has_no_side_effects(tiny_sae_cfg) -> None:
    sae = SparseAutoencoder(tiny_sae_cfg())
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    x = torch.randn(5, 8)
    x_hat, f = sae(x)
    assert torch.equal(f, sae.encode(x))
    assert torch.equal(x_hat, sae.decode(sae.encode(x)))
    assert f.shape == (5, 16) and x_hat.shape == (5, 8)
    assert (f >= 0).all()
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())
    assert list(sae.buffers()) == []


def test_init() -> None:
    cfg = SAEConfig(d_in=32, n_features=128)
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(1))
    assert sae.W_enc.shape == (32, 128) and sae.W_dec.shape == (128, 32)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(128))
    assert sae.W_enc.abs().max() <= 1 / 32**0.5  # Kaiming uniform, fan_in = d_in
    assert torch.equal(sae.b_enc, torch.zeros(128)) and torch.equal(sae.b_dec, torch.zeros(32))
    again = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sae.W_enc, again.W_enc) and torch.equal(sae.W_dec, again.W_dec)


@pytest.mark.parametrize("field", ["d_in", "n_features"])
@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_config_validation_names_field(field, bad) -> None:
    kwargs = {"d_in": 4, "n_features": 8, field: bad}
    with pytest.raises(ValueError, match=field):
        SAEConfig(**kwargs)


def test_save_load_round_trip(tmp_path, tiny_sae_cfg) -> None:
    sae = SparseAutoencoder(tiny_sae_cfg())
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    folder = sae.save(tmp_path / "sae")
    assert sorted(p.name for p in folder.iterdir()) == sorted([SAE_WEIGHTS, SAE_CONFIG])
    cfg = json.loads((folder / SAE_CONFIG).read_text())
    assert cfg["kind"] == "monosemantic.sae" and cfg["d_in"] == 8 and cfg["n_features"] == 16
    loaded = SparseAutoencoder.load(folder)
    assert loaded.cfg == sae.cfg
    for name, p in sae.named_parameters():
        assert torch.equal(p, getattr(loaded, name)), name
    x = torch.randn(3, 8)
    assert torch.equal(loaded(x)[0], sae(x)[0])


def test_load_errors_are_user_errors(tmp_path, tiny_sae_cfg) -> None:
    with pytest.raises(UserError, match="not found"):
        SparseAutoencoder.load(tmp_path / "missing")

    folder = SparseAutoencoder(tiny_sae_cfg()).save(tmp_path / "truncated")
    data = (folder / SAE_WEIGHTS).read_bytes()
    (folder / SAE_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="safetensors"):
        SparseAutoencoder.load(folder)

    folder = SparseAutoencoder(tiny_sae_cfg()).save(tmp_path / "badjson")
    (folder / SAE_CONFIG).write_text("{not json")
    with pytest.raises(UserError, match="JSON"):
        SparseAutoencoder.load(folder)

    # cfg.json says one shape, the weights have another
    SparseAutoencoder(tiny_sae_cfg(n_features=32)).save(tmp_path / "mismatch")
    SparseAutoencoder(tiny_sae_cfg()).save(tmp_path / "other")
    (tmp_path / "mismatch" / SAE_CONFIG).write_bytes((tmp_path / "other" / SAE_CONFIG).read_bytes())
    with pytest.raises(UserError, match="shape"):
        SparseAutoencoder.load(tmp_path / "mismatch")
