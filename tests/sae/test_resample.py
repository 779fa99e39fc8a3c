"""The paper's dead-feature resampling (the paper's appendix "Neuron Resampling", paper.md §4)."""

from __future__ import annotations

import pytest
import torch

from monosemantic.sae import SAEConfig, SparseAutoencoder, train_sae
from monosemantic.sae.loss import per_example_loss
from monosemantic.sae.resample import (
    dead_mask,
    resample_dead_,
    resample_schedule,
    reset_adam_,
    sample_by_loss,
)


def test_schedule_matches_paper_at_1m_steps_and_scales() -> None:
    steps, window = resample_schedule(1_000_000)  # defaults are the paper's
    assert steps == [25_000, 50_000, 75_000, 100_000] and window == 12_500
    steps, window = resample_schedule(20_000)
    assert steps == [500, 1000, 1500, 2000] and window == 250
    steps, window = resample_schedule(10)
    assert steps == [1] and window == 1  # tiny runs: distinct steps only, window at least 1
    assert resample_schedule(1000, n_resamples=0) == ([], 12)
    assert resample_schedule(100, every_fraction=0.5, n_resamples=4)[0] == [50, 100]  # none past the end


def test_dead_mask() -> None:
    last_fired = torch.tensor([0, 5, 6, 10])  # 0 = never fired
    # at step 10 with a 5-step window, alive means fired on one of steps 6..10
    assert dead_mask(last_fired, step=10, window=5).tolist() == [True, True, False, False]


def test_sample_by_loss_is_proportional_to_loss_squared() -> None:
    loss = torch.tensor([1.0, 2.0, 0.0])  # p = [1/5, 4/5, 0]
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([sample_by_loss(loss, 1, g) for _ in range(4000)]).flatten()
    counts = torch.bincount(picks, minlength=3).double() / 4000
    assert counts[2] == 0
    assert counts[1].item() == pytest.approx(0.8, abs=0.03)
    # without replacement while enough inputs have weight; ineligible inputs are never picked
    assert sorted(sample_by_loss(loss, 2, g).tolist()) == [0, 1]
    assert sample_by_loss(loss, 1, g, eligible=torch.tensor([True, False, True])).tolist() == [0]


def build_case() -> tuple[SparseAutoencoder, torch.optim.Adam, torch.Tensor, int]:
    """An SAE that fits the data except one input with a huge error; Adam already has state."""
    sae = SparseAutoencoder(SAEConfig(d_in=4, n_features=3))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    x = torch.rand(64, 4) * 0.1
    huge = 37
    x[huge] = torch.tensor([0.0, 0.0, 30.0, 40.0])  # far from everything else
    x_hat, f = sae(x)
    (per_example_loss(x, x_hat, f, 0.01).mean() + sae.b_enc.sum()).backward()
    opt.step()
    return sae, opt, x, huge


def test_dead_feature_is_revived_from_the_highest_loss_input() -> None:
    sae, opt, x, huge = build_case()
    dead = torch.tensor([False, True, False])
    before = {k: v.detach().clone() for k, v in sae.named_parameters()}
    moments = {p: {k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")} for p in sae.parameters()}
    with torch.no_grad():
        loss = per_example_loss(x, *sae(x), 0.01)
    assert loss.argmax().item() == huge

    picked = resample_dead_(sae, opt, dead, x, loss, generator=torch.Generator().manual_seed(0))

    assert picked.tolist() == [huge]
    direction = torch.tensor([0.0, 0.0, 0.6, 0.8])  # the huge input, unit norm
    assert torch.allclose(sae.W_dec[1], direction)
    alive_norm = before["W_enc"][:, [0, 2]].norm(dim=0).mean()
    assert sae.W_enc[:, 1].norm().item() == pytest.approx(0.2 * alive_norm.item(), rel=1e-6)
    assert torch.allclose(sae.W_enc[:, 1] / sae.W_enc[:, 1].norm(), direction)
    assert sae.b_enc[1].item() == 0.0
    # alive features untouched
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        p, old = getattr(sae, name), before[name]
        keep = (slice(None), [0, 2]) if name == "W_enc" else ([0, 2],) if name != "b_dec" else (slice(None),)
        assert torch.equal(p[keep], old[keep]), name
    # Adam moments zeroed for feature 1 only
    for key in ("exp_avg", "exp_avg_sq"):
        for p, idx_dead, idx_alive in (
            (sae.W_enc, (slice(None), 1), (slice(None), [0, 2])),
            (sae.b_enc, (1,), ([0, 2],)),
            (sae.W_dec, (1,), ([0, 2],)),
        ):
            assert (opt.state[p][key][idx_dead] == 0).all()
            assert torch.equal(opt.state[p][key][idx_alive], moments[p][key][idx_alive])
            assert (moments[p][key][idx_dead] != 0).any()  # the reset did something
        assert torch.equal(opt.state[sae.b_dec][key], moments[sae.b_dec][key])


def test_centered_direction_uses_x_minus_b_dec() -> None:
    sae, opt, x, huge = build_case()
    with torch.no_grad():
        sae.b_dec.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        loss = per_example_loss(x, *sae(x), 0.0)
    resample_dead_(sae, opt, torch.tensor([True, False, False]), x, loss, direction="centered")
    v = x[huge] - sae.b_dec
    assert torch.allclose(sae.W_dec[0], v / v.norm())


def test_no_dead_features_changes_nothing() -> None:
    sae, opt, x, _ = build_case()
    before = [p.detach().clone() for p in sae.parameters()]
    picked = resample_dead_(sae, opt, torch.zeros(3, dtype=torch.bool), x, torch.ones(64))
    assert picked.numel() == 0
    assert all(torch.equal(a, b) for a, b in zip(before, sae.parameters(), strict=True))


def test_reset_adam_before_any_step_is_a_noop() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    reset_adam_(torch.optim.Adam([p]), p, (slice(None),))


def test_trainer_resamples_a_deliberately_dead_feature(tiny_train_cfg) -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=8, n_features=16))
    with torch.no_grad():
        sae.b_enc[3] = -1e4  # feature 3 can never fire
    x = torch.randn(40 * 32, 8)
    cfg = tiny_train_cfg(
        n_steps=40, n_resamples=1, resample_every_fraction=0.5, dead_window_fraction=0.25
    )  # step 20, window 10
    [result] = train_sae([sae], iter(x.split(32)), cfg)
    assert result.resampled[0][0] == 20 and result.resampled[0][1] >= 1
    assert result.last_fired[3] > 20  # it fires after being revived
    assert abs(sae.b_enc[3].item()) < 1  # reset to 0, then trained


@pytest.mark.parametrize("density", [0.04, 0.5])
def test_resample_losses_match_the_dense_per_example_loss(density: float) -> None:
    """The sparse-decoder scoring equals `per_example_loss(x, *sae(x))` (sparse and dense branches)."""
    from monosemantic.sae.resample import resample_losses

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=16, n_features=64))
    with torch.no_grad():  # b_enc sets how many features fire: ~4 % (sparse branch) or ~50 % (dense)
        sae.b_enc.fill_(-1.0 if density < 0.1 else 0.0)
    x = torch.randn(300, 16)
    want = per_example_loss(x, *sae(x), 0.3)
    assert torch.allclose(resample_losses(sae, x, 0.3), want, rtol=1e-5, atol=1e-6)
    # bfloat16 picks the active set only; the values are exact, so the loss moves by near-zero features
    assert torch.allclose(resample_losses(sae, x, 0.3, "bfloat16"), want, rtol=1e-2, atol=1e-2)
