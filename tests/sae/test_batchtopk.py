"""BatchTopK (batchtopk.py): the batch-level top k, its fast positions against `torch.topk`, the
threshold estimated in training, the saved JumpReLU form, and recovery of planted features."""

from __future__ import annotations

import copy

import pytest
import torch

from monosemantic.sae import SparseAutoencoder, train_sae
from monosemantic.sae.batchtopk import BatchTopKSAE, BatchTopKTrainConfig, batch_topk, batch_topk_positions
from monosemantic.sae.loss import LossTerms
from monosemantic.sae.synthetic import mean_max_cosine, planted_features
from monosemantic.sae.topk import TopKSAEConfig


def test_batch_topk_keeps_k_per_input_on_average() -> None:
    acts = torch.rand(6, 10)
    acts[0] = 5.0  # one input takes many of the batch's slots
    f = batch_topk(acts, 2)
    assert int((f > 0).sum()) == 12 and int((f[0] > 0).sum()) == 10
    kept = f[f > 0]
    assert float(kept.min()) >= float(acts.flatten().topk(12).values.min())


@pytest.mark.parametrize(("shape", "k"), [((4096, 512), 8), ((512, 4096), 32), ((300, 1000), 3), ((8, 16), 2)])
def test_fast_positions_equal_torch_topk(shape: tuple[int, int], k: int) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(k))
    m = k * shape[0]
    assert torch.equal(batch_topk_positions(x, m), x.flatten().topk(m).indices.sort().values)
    x[:, 0] = 100.0  # a column far above the rest: the sampled threshold is then too high, and the fallback runs
    assert torch.equal(batch_topk_positions(x, m), x.flatten().topk(m).indices.sort().values)


def test_threshold_is_the_mean_of_each_steps_smallest_activation_over_the_last_half() -> None:
    sae = BatchTopKSAE(TopKSAEConfig(4, 8, k=2))
    cfg = BatchTopKTrainConfig(n_steps=10, threshold_fraction=0.5)
    assert (
        cfg.threshold_start() == 6 and float(sae.threshold.detach().abs().max()) == 0
    )  # a plain ReLU SAE until trained
    mins = []
    for step in range(1, 11):
        f = torch.rand(5, 8) * (f_scale := step)
        f[f < 0.5 * f_scale] = 0
        mins.append(float(f[f > 0].min()))
        cfg.after_step(sae, LossTerms(torch.zeros(()), f.to_sparse_csr() if step % 2 else f, {}), step)
    assert torch.allclose(sae.threshold, torch.full((8,), sum(mins[5:]) / 5))


def test_saved_form_is_jumprelu_with_the_pre_encoder_bias(tmp_path) -> None:
    sae = BatchTopKSAE(TopKSAEConfig(8, 16, k=2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.threshold.fill_(0.3)
        sae.b_dec.normal_()
    x = torch.randn(20, 8)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert torch.equal(sae.encode(x), pre * (pre > 0.3))
    sae.save(tmp_path / "s")
    back = SparseAutoencoder.load(tmp_path / "s")
    assert type(back) is BatchTopKSAE and back.cfg.k == 2
    torch.testing.assert_close(back.encode(x), sae.encode(x))  # saved with its rows re-normalised (standardize_)
    assert BatchTopKSAE.saelens_architecture == "jumprelu"


def test_init_follows_the_reference_code() -> None:
    sae = BatchTopKSAE(TopKSAEConfig(16, 64, k=4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(sae.W_dec, (sae.W_enc / sae.W_enc.norm(dim=0)).T)  # W_dec = W_encᵀ, rows normalised
    assert float(sae.W_enc.detach().abs().max()) <= (6 / 64) ** 0.5  # Kaiming-uniform, fan_in = n_features


def test_recovers_planted_features_and_the_threshold_keeps_l0_near_k() -> None:
    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    sae = BatchTopKSAE(TopKSAEConfig(32, 128, k=4), generator=torch.Generator().manual_seed(0))
    cfg, _ = BatchTopKTrainConfig(batch_size=256, normalize_n_inputs=2048).for_run(400)
    train_sae([sae], sampler.batches(256, 400), cfg)
    assert mean_max_cosine(sae.W_dec.detach(), directions) > 0.9
    with torch.no_grad():
        l0 = float((sae.encode(sampler(4096)) > 0).sum(-1).float().mean())
    assert 2 < l0 < 8  # inference by θ alone, no batch: about k


def test_training_alone_equals_training_in_a_group() -> None:
    """The θ update and AuxK are per SAE: a BatchTopK SAE trained beside another is the same."""
    _, sampler = planted_features(n_dirs=16, d=8, density=0.1, seed=0)
    batches = list(sampler.batches(64, 30))
    cfg = BatchTopKTrainConfig(batch_size=64, n_steps=30, normalize_n_inputs=256, step="dense")
    a = BatchTopKSAE(TopKSAEConfig(8, 32, k=2), generator=torch.Generator().manual_seed(0))
    b, other = copy.deepcopy(a), BatchTopKSAE(TopKSAEConfig(8, 16, k=3))
    train_sae([a], iter(batches), cfg)
    train_sae([b, other], iter(batches), cfg)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
