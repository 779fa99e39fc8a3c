"""JumpReLU (jumprelu.py, jumprelu_train.py): the forward, the straight-through estimators against
SAELens's independent implementation, the threshold in save / load and input folding, training."""

from __future__ import annotations

import copy

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.io import load_tensors, save_tensors
from monosemantic.sae import SAEConfig, SparseAutoencoder, train_sae
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.jumprelu_train import JumpReLUTrainConfig, rectangle
from monosemantic.sae.normalize import Normalizer
from monosemantic.sae.synthetic import mean_max_cosine, planted_features


def _sae(d: int = 8, n: int = 16, seed: int = 0) -> JumpReLUSAE:
    sae = JumpReLUSAE(SAEConfig(d, n), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.threshold.uniform_(0.0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
        sae.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + 2))
    return sae


def test_forward_zeroes_below_each_threshold() -> None:
    sae = _sae()
    x = torch.randn(32, 8)
    pre = x @ sae.W_enc + sae.b_enc  # no pre-encoder bias (Gemma Scope)
    f = sae.encode(x)
    assert torch.equal(f, torch.where(pre > sae.threshold, pre, torch.zeros_like(pre)))
    assert bool((f[f > 0] > sae.threshold.expand_as(f)[f > 0]).all())


def test_rectangle_kernel() -> None:
    u = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.6])
    assert rectangle(u).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_ste_gradients_match_saelens() -> None:
    """Our dense loss's gradients equal those of SAELens's JumpReLU and Step autograd functions (DeepMind's
    variant: no STE gradient to the pre-activations), written independently of ours."""
    jr = pytest.importorskip("sae_lens.saes.jumprelu_sae", reason="sae-lens (the test extra) is not installed")
    sae = _sae()
    cfg = JumpReLUTrainConfig(bandwidth=0.2, l0_coeff=0.3, l0_warmup_steps=0, n_steps=10)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
    ours = copy.deepcopy(sae)
    cfg.loss(ours, x, 5, torch.zeros(16, dtype=torch.bool)).loss.backward()
    pre = sae.pre_activations(x)
    f = jr.JumpReLU.apply(pre, sae.threshold, 0.2, False)
    l0 = jr.Step.apply(pre, sae.threshold, 0.2, False).sum(-1).mean()
    ((x - sae.decode(f)).pow(2).sum(-1).mean() + 0.3 * l0).backward()
    assert float(sae.threshold.grad.abs().sum()) > 0
    for (name, p), q in zip(ours.named_parameters(), sae.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_anthropic_2025_options_match_saelens() -> None:
    """`--sparsity tanh --ste-to-input --pre-act-coeff`: our dense loss's gradients equal those of SAELens's
    implementation of Anthropic's 2025 setup (its JumpReLU with `ste_to_input`, the tanh penalty on
    `feature_acts · ‖W_dec‖`, and `calculate_pre_act_loss` over the dead features)."""
    jr = pytest.importorskip("sae_lens.saes.jumprelu_sae", reason="sae-lens (the test extra) is not installed")
    sae = _sae()
    cfg = JumpReLUTrainConfig(
        bandwidth=0.2, l0_coeff=0.3, l0_warmup_steps=0, n_steps=10, sparsity="tanh", ste_to_input=True,
        pre_act_coeff=0.1,
    )  # fmt: skip
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
    dead = torch.arange(16) % 3 == 0
    ours = copy.deepcopy(sae)
    terms = cfg.loss(ours, x, 5, dead)
    terms.loss.backward()
    pre = sae.pre_activations(x)
    f = jr.JumpReLU.apply(pre, sae.threshold, 0.2, True)
    norm = sae.W_dec.norm(dim=1)
    penalty = torch.tanh(4.0 * f * norm).sum(-1).mean()
    pre_act = jr.calculate_pre_act_loss(0.1, sae.threshold, pre, dead, norm)
    ((x - sae.decode(f)).pow(2).sum(-1).mean() + 0.3 * penalty + pre_act).backward()
    assert float(terms.parts["pre_act_loss"]) > 0
    for (name, p), q in zip(ours.named_parameters(), sae.parameters(), strict=True):
        g, ref = p.grad, q.grad
        if name == "W_dec":  # SAELens's ‖W_dec‖ factors add a gradient along each unit row, which training removes
            g, ref = (t - (t * sae.W_dec).sum(1, keepdim=True) * sae.W_dec for t in (g, ref))
        torch.testing.assert_close(g, ref, msg=name)


def test_gemma_scope_2_quadratic_penalty_matches_saelens() -> None:
    """`--sparsity quadratic --target-l0 T`: our dense loss's gradients equal those of SAELens's `quadratic` mode,
    (2/T)(L0 − T)² per input through its step estimator, with inputs' L0s both under and over T."""
    jr = pytest.importorskip("sae_lens.saes.jumprelu_sae", reason="sae-lens (the test extra) is not installed")
    sae = _sae()
    target = 6.0
    cfg = JumpReLUTrainConfig(
        bandwidth=0.2, l0_coeff=0.3, l0_warmup_steps=0, n_steps=10, sparsity="quadratic", target_l0=target
    )
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))
    ours = copy.deepcopy(sae)
    terms = cfg.loss(ours, x, 5, torch.zeros(16, dtype=torch.bool))
    terms.loss.backward()
    pre = sae.pre_activations(x)
    l0 = jr.Step.apply(pre, sae.threshold, 0.2, False).sum(-1)
    assert bool((l0 < target).any() and (l0 > target).any())
    f = jr.JumpReLU.apply(pre, sae.threshold, 0.2, False)
    penalty = (2 / target * (l0 - target) ** 2).mean()
    loss = (x - sae.decode(f)).pow(2).sum(-1).mean() + 0.3 * penalty
    loss.backward()
    torch.testing.assert_close(terms.loss.detach(), loss.detach())
    for (name, p), q in zip(ours.named_parameters(), sae.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_unknown_sparsity_is_refused() -> None:
    with pytest.raises(ValueError, match="sparsity must be step, tanh or quadratic"):
        JumpReLUTrainConfig(sparsity="l1")
    with pytest.raises(ValueError, match="target_l0 must be > 0"):
        JumpReLUTrainConfig(sparsity="quadratic")


def test_threshold_is_saved_checked_and_folded(tmp_path) -> None:
    sae = _sae()
    sae.save(tmp_path / "a")
    back = SparseAutoencoder.load(tmp_path / "a")
    assert type(back) is JumpReLUSAE  # saved with its rows re-normalised, θ with them (standardize_)
    torch.testing.assert_close(back.threshold, sae.threshold)
    tensors = load_tensors(tmp_path / "a" / "sae.safetensors")
    del tensors["threshold"]
    save_tensors(tmp_path / "a" / "sae.safetensors", tensors)
    with pytest.raises(UserError, match="threshold"):
        SparseAutoencoder.load(tmp_path / "a")
    # an SAE trained on c·x, folded, encodes raw x to f / c: θ scales with the biases
    x, c = torch.randn(32, 8), 3.0
    folded = Normalizer(c).fold_into_(copy.deepcopy(sae))
    torch.testing.assert_close(folded.encode(x), sae.encode(c * x) / c)


def test_published_schedule_and_its_fit_to_a_short_run() -> None:
    cfg = JumpReLUTrainConfig()
    assert (cfg.lr, cfg.adam_beta1, cfg.bandwidth, cfg.threshold_init) == (7e-5, 0.0, 0.001, 0.001)
    assert cfg.lr_at(1) == pytest.approx(7e-6, rel=0.01) and cfg.lr_at(1000) == 7e-5  # cosine from 0.1·lr
    full = JumpReLUTrainConfig(n_steps=1_000_000)
    assert full.l0_coeff_at(5_000) == pytest.approx(full.l0_coeff / 2) and full.l0_coeff_at(10_000) == full.l0_coeff
    with pytest.raises(UserError, match="too short.*--arch batchtopk.*--sparsity quadratic.*--allow-short-run"):
        cfg.for_run(1_000)  # refused, with the flags that give a usable dictionary
    assert JumpReLUTrainConfig(fit_to_run=False).for_run(1_000)[0].lr == 7e-5  # as given: not fitted, not refused
    fitted, changes = JumpReLUTrainConfig(allow_short_run=True).for_run(1_000)
    assert fitted.l0_warmup_steps == 10 and fitted.lr_warmup_steps == 1 and "lr" in changes
    assert fitted.l0_coeff_at(10) == fitted.l0_coeff


def test_recovers_planted_features() -> None:
    """Planted directions in d = 32; the defaults fitted to the run (allowed, at this width), bar a smaller batch."""
    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    torch.manual_seed(0)
    sae = JumpReLUSAE(SAEConfig(32, 128), generator=torch.Generator().manual_seed(0))
    cfg, _ = JumpReLUTrainConfig(batch_size=256, normalize_n_inputs=2048, allow_short_run=True).for_run(600)
    (result,) = train_sae([sae], sampler.batches(256, 600), cfg)
    assert mean_max_cosine(sae.W_dec.detach(), directions) > 0.9
    assert 1 < result.history[-1]["l0"] < 10  # ~3.2 planted directions active per input
