"""The April 2024 recipe: forward, decoder-weighted L1, schedules, folding on save, training."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import monosemantic.sae.april
from monosemantic.paths import SAE_CONFIG
from monosemantic.sae import AprilSAE, AprilTrainConfig, SAEConfig, SparseAutoencoder, train_sae
from monosemantic.sae.april import DECODER_INIT_NORM, decoder_weighted_l1
from monosemantic.sae.loss import squared_error
from monosemantic.sae.normalize import Normalizer
from monosemantic.sae.schedule import linear_decay_tail, linear_warmup
from monosemantic.sae.synthetic import mean_max_cosine, planted_features


def random_april(d_in: int = 6, n_features: int = 10, seed: int = 0) -> AprilSAE:
    """An April SAE with free decoder norms and nonzero biases, as after some training."""
    g = torch.Generator().manual_seed(seed)
    sae = AprilSAE(SAEConfig(d_in, n_features), generator=g)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, n_features, generator=g))
        sae.W_dec.copy_(torch.randn(n_features, d_in, generator=g) * torch.rand(n_features, 1, generator=g) * 3)
        sae.b_enc.copy_(torch.randn(n_features, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
    return sae


def test_forward_by_hand_has_no_pre_encoder_bias() -> None:
    # identity weights, b_dec = [0.5, 0.5]: the paper's SAE would encode x − b_dec = [0.5, −1.5];
    # April encodes x itself: f = relu([1, −1]) = [1, 0], x̂ = f + b_dec = [1.5, 0.5]
    sae = AprilSAE(SAEConfig(d_in=2, n_features=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
        sae.b_dec.fill_(0.5)
    x_hat, f = sae(torch.tensor([[1.0, -1.0]]))
    assert torch.equal(f, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(x_hat, torch.tensor([[1.5, 0.5]]))


def test_l1_is_weighted_by_decoder_norms_by_hand() -> None:
    # decoder row norms [2, 0.5]; rows: 1·2 + 2·0.5 = 3 and 0·2 + 3·0.5 = 1.5; mean 2.25
    f = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    W_dec = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.3, 0.4]])
    assert decoder_weighted_l1(f, W_dec).item() == pytest.approx(2.25)
    # and the MSE is summed over d_in: rows 1² + 2² = 5 and 3² = 9; mean 7
    assert squared_error(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.zeros(2, 2)).item() == pytest.approx(7.0)


def test_loss_by_hand_uses_warmed_up_lambda() -> None:
    sae = AprilSAE(SAEConfig(d_in=2, n_features=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.diag(torch.tensor([2.0, 1.0])))
    x = torch.tensor([[1.0, 1.0]])  # f = [1, 1], x̂ = [2, 1]: squared error 1; weighted L1 = 2 + 1 = 3
    cfg = AprilTrainConfig(l1_coeff=4.0, n_steps=100)  # warm-up over 5 steps: λ(2) = 4 · 2/5 = 1.6
    terms = cfg.loss(sae, x, step=2, dead=torch.zeros(2, dtype=torch.bool))
    assert terms.loss.item() == pytest.approx(1.0 + 1.6 * 3.0)
    assert terms.parts["mse"].item() == pytest.approx(0.5) and terms.parts["l1"].item() == pytest.approx(3.0)


def test_schedules_by_hand() -> None:
    # λ warm-up over the first 5 % of 100 steps = 5 steps: 0.2, 0.4, ..., 1 at step 5, then 1
    assert [linear_warmup(s, 100, 0.05) for s in (1, 2, 5, 6, 100)] == pytest.approx([0.2, 0.4, 1.0, 1.0, 1.0])
    # lr decay over the last 20 % = 20 steps: 1 through step 80, then 19/20 ... 0 at step 100
    assert [linear_decay_tail(s, 100, 0.2) for s in (1, 80, 81, 90, 99, 100)] == pytest.approx(
        [1.0, 1.0, 0.95, 0.5, 0.05, 0.0]
    )
    assert linear_warmup(1, 10, 0.0) == 1.0 and linear_decay_tail(10, 10, 0.0) == 1.0  # fraction 0: constant
    cfg = AprilTrainConfig(l1_coeff=5.0, lr=1e-3, n_steps=100)
    assert cfg.l1_coeff_at(1) == pytest.approx(1.0) and cfg.l1_coeff_at(50) == pytest.approx(5.0)
    assert cfg.lr_at(50) == pytest.approx(1e-3) and cfg.lr_at(90) == pytest.approx(5e-4) and cfg.lr_at(100) == 0.0


def test_defaults_are_the_update() -> None:
    cfg = AprilTrainConfig()
    assert (cfg.l1_coeff, cfg.lr, cfg.batch_size, cfg.n_steps) == (5.0, 5e-5, 4096, 200_000)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.max_grad_norm) == (0.9, 0.999, 1.0)
    assert (cfg.l1_warmup_fraction, cfg.lr_decay_fraction, cfg.normalize_inputs) == (0.05, 0.2, True)
    assert cfg.resample_steps == [] and cfg.dead_window == 2442  # 10M samples / 4096, rounded up


@pytest.mark.parametrize("field, bad", [("lr", 0.0), ("l1_coeff", -1.0), ("n_steps", 0), ("lr_decay_fraction", 1.0)])
def test_config_validation_names_the_field(field, bad) -> None:
    with pytest.raises(ValueError, match=f"AprilTrainConfig.{field} "):
        AprilTrainConfig(**{field: bad})


def test_every_config_field_has_a_docstring() -> None:
    tree = ast.parse(Path(monosemantic.sae.april.__file__).read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AprilTrainConfig").body
    fields = [(i, n) for i, n in enumerate(body) if isinstance(n, ast.AnnAssign) and n.target.id != "architecture"]
    for i, node in fields:
        assert isinstance(body[i + 1], ast.Expr) and isinstance(body[i + 1].value, ast.Constant), node.target.id


def test_init() -> None:
    sae = AprilSAE(SAEConfig(d_in=16, n_features=64), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), DECODER_INIT_NORM))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert not sae.b_enc.any() and not sae.b_dec.any()


def test_folding_on_save_keeps_the_reconstruction(tmp_path) -> None:
    sae = random_april()
    norms = sae.W_dec.detach().norm(dim=1)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    x = torch.randn(20, 6) * 3
    x_hat, f = sae(x)

    loaded = SparseAutoencoder.load(sae.save(tmp_path / "april"))
    assert type(loaded) is AprilSAE
    assert json.loads((tmp_path / "april" / SAE_CONFIG).read_text())["architecture"] == "april2024"
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())  # save does not touch the SAE
    assert torch.allclose(loaded.W_dec.norm(dim=1), torch.ones(10), atol=1e-6)  # plain "standard" form
    x_hat2, f2 = loaded(x)
    assert torch.allclose(x_hat2, x_hat, atol=1e-5)
    assert torch.allclose(f2, f * norms, atol=1e-5)  # activations become f_i · ‖W_dec[i]‖ ([SM])
    # the saved form is a fixed point: saving again changes nothing but float32 rounding (the rows are
    # renormalised by norms of 1 ± 1e-7; x̂ reaches ~20 here: differences up to 1.5e-5 were seen)
    again = SparseAutoencoder.load(loaded.save(tmp_path / "again"))
    x_hat3, f3 = again(x)
    assert torch.allclose(x_hat3, x_hat2, atol=1e-4) and torch.allclose(f3, f2, atol=1e-4)


def test_input_scale_folds_into_an_april_sae() -> None:
    # the Normalizer's fold (b_enc / c, b_dec / c) is also right without the pre-encoder bias
    sae, norm = random_april(), Normalizer(factor=0.25)
    x = torch.randn(20, 6) * 4
    x_hat_scaled, f_scaled = sae(norm.scale(x))
    norm.fold_into_(sae)
    x_hat, f = sae(x)
    assert torch.allclose(x_hat, norm.unscale(x_hat_scaled), atol=1e-5)
    assert torch.allclose(f, f_scaled / norm.factor, atol=1e-5)


def test_lr_reaches_zero_on_the_last_step() -> None:
    # a stream one batch short stops at step N−1 with the same schedule; step N has lr 0, so
    # training on the full stream ends with the same weights
    x = torch.randn(10, 32, 6) * 5
    cfg = AprilTrainConfig(lr=1e-2, batch_size=32, n_steps=10, lr_decay_fraction=0.5, normalize_n_inputs=64)
    full, short = random_april(), random_april()
    [r_full] = train_sae([full], iter(x), cfg)
    [r_short] = train_sae([short], iter(x[:9]), cfg)
    assert (r_full.n_steps, r_short.n_steps) == (10, 9)
    assert r_full.input_scale == r_short.input_scale != 1.0
    for name, p in full.named_parameters():
        assert torch.allclose(p, getattr(short, name), atol=1e-6), name


def test_trained_sae_takes_raw_inputs_and_saves_unchanged(tmp_path) -> None:
    directions, sampler = planted_features(n_dirs=16, d=8, density=0.1, seed=0)
    x_raw = sampler(512) * 40.0  # far from E‖x‖ = √d, so a missing unscale would show
    sae = AprilSAE(SAEConfig(d_in=8, n_features=32))
    cfg = AprilTrainConfig(l1_coeff=0.5, lr=1e-2, batch_size=64, n_steps=60, normalize_n_inputs=512)
    [result] = train_sae([sae], iter((sampler(64 * 60) * 40.0).split(64)), cfg)
    assert result.input_scale == pytest.approx(8**0.5 / (x_raw.norm(dim=1).mean().item()), rel=0.1)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)  # folded at the end
    x_hat, f = sae(x_raw)
    fvu = (x_raw - x_hat).pow(2).sum() / (x_raw - x_raw.mean(0)).pow(2).sum()
    assert fvu < 0.5
    loaded = SparseAutoencoder.load(sae.save(tmp_path / "trained"))
    assert torch.allclose(loaded(x_raw)[0], x_hat, atol=1e-4) and torch.allclose(loaded(x_raw)[1], f, atol=1e-4)


def test_recovers_planted_features() -> None:
    # the setting of test_train.test_recovers_planted_features, April recipe with its schedules
    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    sae = AprilSAE(SAEConfig(d_in=32, n_features=128), generator=torch.Generator().manual_seed(0))
    cfg = AprilTrainConfig(l1_coeff=2.0, lr=1e-2, batch_size=256, n_steps=1000, normalize_n_inputs=2048)
    [result] = train_sae([sae], sampler.batches(256, 1000), cfg)
    assert mean_max_cosine(sae.W_dec.detach(), directions) >= 0.9  # measured ≈ 0.997 in ~1.5 s
    assert result.history[-1]["l0"] < 8  # ~3.2 true directions per input; measured ≈ 5
