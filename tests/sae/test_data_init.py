"""The sparse start (`sae/data_init.py`): b_enc from the first inputs, so training is sparse from step 1."""

from __future__ import annotations

import pytest
import torch

from monosemantic.sae import SAEConfig, SparseAutoencoder, train_sae
from monosemantic.sae.data_init import sparse_start_b_enc
from monosemantic.sae.sparse_step import Stepper
from monosemantic.sae.synthetic import mean_max_cosine, planted_features


@pytest.mark.parametrize("density", [1 / 64, 1 / 8, 0.5])
def test_each_feature_fires_on_the_wanted_share(density: float) -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=16, n_features=64), generator=torch.Generator().manual_seed(0))
    x = torch.randn(2048, 16) + 1.0
    with torch.no_grad():
        sae.b_dec.copy_(x.median(dim=0).values)
        sae.b_enc.copy_(sparse_start_b_enc(sae, x, density))
        share = (sae.encode(x) > 0).float().mean(dim=0)  # (n_features,)
    assert torch.allclose(share, torch.full_like(share, density), atol=1.5 / 2048)


def test_zero_start_is_the_default_and_leaves_b_enc_alone(tiny_sae_cfg, tiny_train_cfg) -> None:
    cfg = tiny_train_cfg(n_steps=1, lr=1e-9)
    assert cfg.b_enc_init == "zero" and cfg.init_b_enc_density is None
    sae = SparseAutoencoder(tiny_sae_cfg())
    train_sae([sae], iter(torch.randn(4, 32, 8)), cfg)
    assert sae.b_enc.abs().max() < 1e-6  # one step of lr 1e-9 from zero


def test_sparse_start_sets_b_enc_and_starts_on_the_sparse_step(tiny_train_cfg) -> None:
    cfg = tiny_train_cfg(b_enc_init="sparse", b_enc_init_density=1 / 32, n_steps=1, lr=1e-9)
    sae = SparseAutoencoder(SAEConfig(d_in=8, n_features=256))
    assert Stepper.for_recipe(sae, cfg).sparse  # 1/32 < SPARSE_L0_FRACTION
    assert not Stepper.for_recipe(sae, tiny_train_cfg()).sparse  # the zero start measures L0 first
    x = torch.randn(4, 32, 8)
    [result] = train_sae([sae], iter(x), cfg)
    assert (sae.b_enc < 0).float().mean() > 0.95  # most features need a negative bias to be that rare
    assert 0 < result.history[-1]["l0"] < 256 / 8  # about 8 of 256 on the step-1 batch


def test_sparse_start_still_recovers_planted_features() -> None:
    # the same check as the paper start's (test_train.py), from the sparse start
    from monosemantic.sae import SAETrainConfig

    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    sae = SparseAutoencoder(SAEConfig(d_in=32, n_features=128))
    cfg = SAETrainConfig(
        l1_coeff=0.03,
        lr=3e-3,
        batch_size=256,
        n_steps=1000,
        b_dec_init_n_inputs=2048,
        resample_n_batches=8,
        b_enc_init="sparse",
        b_enc_init_density=1 / 32,
    )
    [result] = train_sae([sae], sampler.batches(256, 1100), cfg)
    assert mean_max_cosine(sae.W_dec.detach(), directions) >= 0.95
    assert result.history[-1]["l0"] < 10
