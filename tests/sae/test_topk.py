"""TopK SAE with AuxK: the activation, the auxiliary loss by hand, the constraint, save/load, recovery."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import monosemantic.sae.topk
from monosemantic.paths import SAE_CONFIG
from monosemantic.sae import SparseAutoencoder, TopKSAE, TopKSAEConfig, TopKTrainConfig, train_sae
from monosemantic.sae.synthetic import mean_max_cosine, planted_features
from monosemantic.sae.topk import auxk_loss, topk_relu


def test_topk_relu_by_hand() -> None:
    pre = torch.tensor([[3.0, -1.0, 2.0, 5.0], [-1.0, -2.0, -3.0, 0.5]])
    # row 1 keeps 5 and 3; row 2 keeps 0.5 and −1, and the ReLU after TopK clips −1
    assert torch.equal(topk_relu(pre, 2), torch.tensor([[3.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.5]]))


def test_exactly_k_nonzeros_per_row() -> None:
    sae = TopKSAE(TopKSAEConfig(d_in=16, n_features=64, k=5))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so the ReLU clips none of the top k
    x_hat, f = sae(torch.randn(100, 16))
    assert ((f != 0).sum(dim=1) == 5).all()
    assert torch.allclose(x_hat, f @ sae.W_dec + sae.b_dec)
    # the k winners are the k largest pre-activations of (x − b_dec) @ W_enc + b_enc
    pre = sae.pre_activations(torch.randn(3, 16))
    assert torch.equal((sae.activation(pre) != 0), pre >= pre.topk(5, dim=1).values[:, -1:])


def test_auxk_is_zero_without_dead_latents() -> None:
    pre = torch.randn(8, 10, requires_grad=True)
    W_dec = torch.randn(10, 4, requires_grad=True)
    loss = auxk_loss(pre, torch.zeros(10, dtype=torch.bool), 3, W_dec, torch.randn(8, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert not pre.grad.any() and not W_dec.grad.any()


def test_auxk_by_hand() -> None:
    # latent 1 is dead; it alone may reconstruct the residual e = [0, 5]: ê = 2 · [0, 1], ‖e − ê‖² = 9
    pre = torch.tensor([[1.0, 2.0]], requires_grad=True)
    W_dec = torch.eye(2, requires_grad=True)
    dead = torch.tensor([False, True])
    loss = auxk_loss(pre, dead, k_aux=2, W_dec=W_dec, residual=torch.tensor([[0.0, 5.0]]))
    assert loss.item() == pytest.approx(9.0)
    loss.backward()
    assert pre.grad[0, 0] == 0 and pre.grad[0, 1] == pytest.approx(-6.0)  # d/dz (5 − z)² at z = 2
    assert not W_dec.grad[0].any() and W_dec.grad[1].any()  # only the dead latent's decoder row learns


def test_recipe_loss_adds_auxk_with_coefficient() -> None:
    sae = TopKSAE(TopKSAEConfig(d_in=4, n_features=8, k=2))
    x = torch.randn(5, 4)
    cfg = TopKTrainConfig(auxk_coeff=0.5, k_aux=3)
    none_dead = cfg.loss(sae, x, step=1, dead=torch.zeros(8, dtype=torch.bool))
    some_dead = cfg.loss(sae, x, step=1, dead=torch.arange(8) >= 4)
    assert none_dead.parts["auxk"].item() == 0.0
    sse = none_dead.parts["mse"] * 4
    assert none_dead.loss.item() == pytest.approx(sse.item(), rel=1e-6)
    assert some_dead.loss.item() == pytest.approx((sse + 0.5 * some_dead.parts["auxk"]).item(), rel=1e-6)


def test_defaults_and_dead_window() -> None:
    cfg = TopKTrainConfig()
    assert (cfg.auxk_coeff, cfg.dead_n_inputs, cfg.adam_eps) == (1 / 32, 10_000_000, 6.25e-10)
    assert cfg.dead_window == 2442 and cfg.resample_steps == []
    assert TopKTrainConfig(batch_size=100, dead_n_inputs=250).dead_window == 3


@pytest.mark.parametrize("field, bad", [("lr", 0.0), ("k_aux", 0), ("auxk_coeff", -1.0), ("b_dec_init", "mean")])
def test_config_validation_names_the_field(field, bad) -> None:
    with pytest.raises(ValueError, match=f"TopKTrainConfig.{field} "):
        TopKTrainConfig(**{field: bad})
    with pytest.raises(ValueError, match="k"):
        TopKSAEConfig(d_in=4, n_features=8, k=9)


def test_every_config_field_has_a_docstring() -> None:
    tree = ast.parse(Path(monosemantic.sae.topk.__file__).read_text())
    for name in ("TopKTrainConfig", "TopKSAEConfig"):
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name).body
        fields = [(i, n) for i, n in enumerate(body) if isinstance(n, ast.AnnAssign) and n.target.id != "architecture"]
        for i, node in fields:
            assert isinstance(body[i + 1], ast.Expr) and isinstance(body[i + 1].value, ast.Constant), node.target.id


def test_init_and_unit_norm_after_training() -> None:
    sae = TopKSAE(TopKSAEConfig(d_in=8, n_features=16, k=3), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16)) and torch.equal(sae.W_enc, sae.W_dec.T)
    cfg = TopKTrainConfig(lr=0.05, batch_size=32, n_steps=5, b_dec_init_n_inputs=64, dead_n_inputs=64)
    train_sae([sae], iter(torch.randn(10, 32, 8) * 3), cfg)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)


def test_save_load_keeps_k(tmp_path) -> None:
    sae = TopKSAE(TopKSAEConfig(d_in=8, n_features=16, k=3))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    loaded = SparseAutoencoder.load(sae.save(tmp_path / "topk"))
    assert type(loaded) is TopKSAE and loaded.cfg == sae.cfg
    assert json.loads((tmp_path / "topk" / SAE_CONFIG).read_text())["k"] == 3
    x = torch.randn(5, 8)
    assert torch.equal(loaded(x)[0], sae(x)[0]) and torch.equal(loaded(x)[1], sae(x)[1])


def test_recovers_planted_features() -> None:
    # 64 directions in 32 dimensions, ~3.2 active per input; k = 6 leaves room for the busier inputs
    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    sae = TopKSAE(TopKSAEConfig(d_in=32, n_features=128, k=6), generator=torch.Generator().manual_seed(0))
    cfg = TopKTrainConfig(lr=3e-3, batch_size=256, n_steps=1000, b_dec_init_n_inputs=2048, dead_n_inputs=256 * 50)
    [result] = train_sae([sae], sampler.batches(256, 1000), cfg)
    assert mean_max_cosine(sae.W_dec.detach(), directions) >= 0.9
    assert result.history[-1]["l0"] <= 6
