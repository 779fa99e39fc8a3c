"""Parity of the fast (sparse) SAE step with the dense autograd step, on every code path.

Tolerances: float32 gradients agree to 1e-5 relative (the two sum in different orders); a few
training steps stay within 1e-4. The bfloat16 active-set choice is an approximation; its loss curve
must stay within 2 % of float32's (stated in docs/decisions.md).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from monosemantic.sae import SAEConfig, SAETrainConfig, train_sae
from monosemantic.sae.april import AprilSAE, AprilTrainConfig
from monosemantic.sae.batchtopk import BatchTopKSAE, BatchTopKTrainConfig
from monosemantic.sae.constraints import optimizer_step_
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.jumprelu_train import JumpReLUTrainConfig
from monosemantic.sae.loss import per_example_loss
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.sparse_step import Stepper, dense_gradients, firing, sparse_gradients
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

D_IN, N_FEATURES, BATCH = 16, 64, 48


def _sae_and_cfg(arch: str) -> tuple[SparseAutoencoder, object]:
    gen = torch.Generator().manual_seed(1)
    if arch.startswith("tm2023"):  # tm2023-clip: a norm small enough that every step is clipped
        sae = SparseAutoencoder(SAEConfig(D_IN, N_FEATURES), generator=gen)
        clip = 1e-3 if arch == "tm2023-clip" else None
        cfg = SAETrainConfig(
            l1_coeff=0.01, lr=1e-3, batch_size=BATCH, n_steps=30, n_resamples=0, log_every=5, max_grad_norm=clip
        )
    elif arch == "april2024":
        sae = AprilSAE(SAEConfig(D_IN, N_FEATURES), generator=gen)
        cfg = AprilTrainConfig(l1_coeff=0.5, lr=1e-3, batch_size=BATCH, n_steps=30, log_every=5)
    elif arch == "batchtopk":  # AuxK with dead = 3 steps; θ averaged over the last half
        sae = BatchTopKSAE(TopKSAEConfig(D_IN, N_FEATURES, k=4), generator=gen)
        cfg = BatchTopKTrainConfig(lr=1e-3, batch_size=BATCH, n_steps=30, k_aux=8, log_every=5, dead_n_batches=3)
    elif arch.startswith("jumprelu"):  # a wide kernel (ε = 0.05·√16), so θ's pseudo-gradient sees many entries
        sae = JumpReLUSAE(SAEConfig(D_IN, N_FEATURES), generator=gen)
        cfg = JumpReLUTrainConfig(
            lr=1e-3, batch_size=BATCH, n_steps=30, log_every=5, bandwidth=0.05, l0_coeff=0.01, l0_warmup_steps=5
        )
        if arch == "jumprelu-a25":  # Anthropic's 2025 options; dead after 3 steps, so training runs use them
            cfg = dataclasses.replace(
                cfg, sparsity="tanh", ste_to_input=True, pre_act_coeff=0.05, dead_n_inputs=BATCH * 3
            )
        if arch == "jumprelu-gs2":  # Gemma Scope 2's quadratic penalty, a target inside the rows' L0s (20 to 37)
            cfg = dataclasses.replace(cfg, sparsity="quadratic", target_l0=28.0, ste_to_input=True)
        with torch.no_grad():
            sae.threshold.uniform_(0.0, 0.6, generator=gen)
    else:
        sae = TopKSAE(TopKSAEConfig(D_IN, N_FEATURES, k=4), generator=gen)
        cfg = TopKTrainConfig(lr=1e-3, batch_size=BATCH, n_steps=30, k_aux=8, log_every=5, dead_n_inputs=BATCH * 3)
    with torch.no_grad():  # a nonzero b_enc and b_dec, so every bias term of the backward is exercised
        sae.b_enc.normal_(0, 0.3, generator=gen)
        sae.b_dec.normal_(0, 0.3, generator=gen)
    return sae, cfg


def _inputs(n: int = BATCH, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=gen) * 2 + 0.5


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    a, b = a.detach(), b.detach()
    return bool((a - b).abs().max() <= rtol * max(1.0, float(b.abs().max())))


ARCHS = ["tm2023", "april2024", "topk", "batchtopk", "jumprelu", "jumprelu-a25", "jumprelu-gs2"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("with_dead", [False, True])
def test_sparse_gradients_match_autograd(arch: str, with_dead: bool) -> None:
    sae, cfg = _sae_and_cfg(arch)
    x = _inputs()
    dead = torch.zeros(N_FEATURES, dtype=torch.bool)
    if with_dead:
        dead[::3] = True  # AuxK's path for TopK; no effect on the other recipes
    ref = copy.deepcopy(sae)
    t_dense = dense_gradients(ref, cfg, x, 7, dead, by_hand=False)  # autograd, the reference
    t_sparse = sparse_gradients(sae, cfg, x, 7, dead)
    assert torch.allclose(t_sparse.loss, t_dense.loss.detach(), rtol=1e-5)
    for name in t_dense.parts:
        assert torch.allclose(t_sparse.parts[name], t_dense.parts[name].detach(), rtol=1e-5, atol=1e-7), name
    if arch in ("topk", "batchtopk") and with_dead:
        assert float(t_dense.parts["auxk"].detach()) > 0  # the AuxK path really ran
    if arch.startswith("jumprelu"):  # θ's pseudo-gradient really ran, from entries on both sides of θ
        assert float(sae.threshold.grad.abs().sum()) > 0
    if arch == "jumprelu-a25" and with_dead:  # the pre-activation loss really ran
        assert float(t_dense.parts["pre_act_loss"]) > 0
    for name, p in sae.named_parameters():
        ref_grad = dict(ref.named_parameters())[name].grad
        if p.grad is None:  # BatchTopK's θ is estimated, not trained
            assert ref_grad is None and arch == "batchtopk", name
            continue
        assert _close(p.grad, ref_grad), name
    fired_d, l0_d = firing(t_dense.f)
    fired_s, l0_s = firing(t_sparse.f)
    assert torch.equal(fired_d, fired_s) and float(l0_d) == pytest.approx(float(l0_s))
    if arch == "tm2023":  # each input's loss, for resampling (paper.md §4): both steps give the plain one
        x_hat, f = ref(x)
        expected = per_example_loss(x, x_hat, f, cfg.l1_for(D_IN)).detach()
        assert t_dense.per_input is not None and t_sparse.per_input is not None
        assert torch.allclose(t_dense.per_input, expected, rtol=1e-5)
        assert torch.allclose(t_sparse.per_input, expected, rtol=1e-5)
        assert float(t_sparse.per_input.mean()) == pytest.approx(float(t_sparse.loss), rel=1e-5)
    else:
        assert t_dense.per_input is None and t_sparse.per_input is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_dense_step_by_hand_matches_autograd(dtype: str) -> None:
    sae, cfg = _sae_and_cfg("tm2023")
    x, dead = _inputs(), torch.zeros(N_FEATURES, dtype=torch.bool)
    ref = copy.deepcopy(sae)
    t_ref = dense_gradients(ref, cfg, x, 7, dead, dtype, by_hand=False)
    t_hand = dense_gradients(sae, cfg, x, 7, dead, dtype)
    assert t_ref.loss.requires_grad and not t_hand.loss.requires_grad  # the second really ran without autograd
    # float32: the same sums in another order; bfloat16: each product's output rounds where the other's does not
    rtol = 1e-5 if dtype == "float32" else 1e-2
    assert float(t_hand.loss) == pytest.approx(float(t_ref.loss.detach()), rel=rtol)
    for name in ("mse", "l1"):
        assert float(t_hand.parts[name]) == pytest.approx(float(t_ref.parts[name].detach()), rel=rtol), name
    assert t_hand.per_input is not None and t_ref.per_input is not None
    assert torch.allclose(t_hand.per_input, t_ref.per_input, rtol=rtol)
    assert torch.equal(firing(t_hand.f)[0], firing(t_ref.f)[0])
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None and p.grad.dtype == torch.float32, name
        err = float((p.grad - q.grad).norm() / q.grad.norm())
        assert err < (1e-5 if dtype == "float32" else 1e-2), (name, err)


def test_other_recipes_keep_the_autograd_dense_step() -> None:
    sae, cfg = _sae_and_cfg("april2024")
    terms = dense_gradients(sae, cfg, _inputs(), 7, torch.zeros(N_FEATURES, dtype=torch.bool))
    assert terms.loss.requires_grad


@pytest.mark.parametrize("arch", ["tm2023", "tm2023-clip", *ARCHS[1:]])
def test_one_optimizer_step_matches(arch: str) -> None:
    sae, cfg = _sae_and_cfg(arch)
    ref = copy.deepcopy(sae)
    x, dead = _inputs(), torch.zeros(N_FEATURES, dtype=torch.bool)
    for model, grads in ((ref, dense_gradients), (sae, sparse_gradients)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        grads(model, cfg, x, 1, dead)
        optimizer_step_(opt, model, cfg.max_grad_norm)
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        assert _close(p, q), name


@pytest.mark.parametrize("arch", ["tm2023", "tm2023-clip", *ARCHS[1:]])
def test_training_runs_match(arch: str) -> None:
    """30 steps of train_sae: sparse vs dense, same weights, history, last_fired."""
    sae, cfg = _sae_and_cfg(arch)
    ref = copy.deepcopy(sae)
    batches = list(_inputs(BATCH * 31, seed=3).split(BATCH))
    (r_dense,) = train_sae([ref], iter(batches), _with(cfg, step="dense"))
    (r_sparse,) = train_sae([sae], iter(batches), _with(cfg, step="sparse"))
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        assert _close(p, q, 1e-4), name
    assert torch.equal(r_dense.last_fired, r_sparse.last_fired)
    for a, b in zip(r_dense.history, r_sparse.history, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_paper_recipe_with_resampling_matches() -> None:
    """Resampling and dead-feature tracking see the same state under the sparse step."""
    sae, cfg = _sae_and_cfg("tm2023")
    cfg = _with(cfg, n_steps=40, n_resamples=2, resample_every_fraction=0.25, dead_window_fraction=0.1)
    cfg = _with(cfg, resample_n_batches=2)
    with torch.no_grad():
        sae.b_enc[:20] = -100.0  # 20 features that never fire get resampled
    ref = copy.deepcopy(sae)
    batches = list(_inputs(BATCH * 45, seed=4).split(BATCH))
    (r_dense,) = train_sae([ref], iter(batches), _with(cfg, step="dense"))
    (r_sparse,) = train_sae([sae], iter(batches), _with(cfg, step="sparse"))
    assert r_dense.resampled == r_sparse.resampled and any(n for _, n in r_dense.resampled)
    for p, q in zip(sae.parameters(), ref.parameters(), strict=True):
        assert _close(p, q, 1e-4)


def _auto_stepper() -> tuple[SparseAutoencoder, SAETrainConfig, Stepper, torch.Tensor, torch.Tensor]:
    """A paper-recipe SAE, its config, an `auto` Stepper for it, no dead features and one batch of inputs."""
    sae = SparseAutoencoder(SAEConfig(D_IN, N_FEATURES), generator=torch.Generator().manual_seed(0))
    cfg = SAETrainConfig(l1_coeff=0.01, batch_size=BATCH, n_steps=30, n_resamples=0)
    return sae, cfg, Stepper.for_recipe(sae, cfg), torch.zeros(N_FEATURES, dtype=torch.bool), _inputs()


def test_auto_switches_to_sparse_once_l0_is_low() -> None:
    sae, cfg, stepper, dead, x = _auto_stepper()
    with torch.no_grad():
        sae.b_enc.fill_(5.0)  # every feature fires: L0 = n_features, dense stays
    for step in range(1, 21):
        stepper.gradients(sae, cfg, x, step, dead)
    assert not stepper.sparse
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
        sae.b_enc[0] = 100.0  # one feature fires: L0 = 1 < n_features × SPARSE_L0_FRACTION
    for step in range(21, 31):
        stepper.gradients(sae, cfg, x, step, dead)
    assert stepper.sparse
    with torch.no_grad():
        sae.b_enc.fill_(5.0)
    stepper.gradients(sae, cfg, x, 31, dead)
    assert not stepper.sparse  # and back once L0 rises


def test_auto_goes_dense_when_resampled_features_would_lift_l0_over_the_limit() -> None:
    """Each resampled feature fires on about half the inputs at first (b_enc = 0): a count that would lift L0
    over the limit makes the next step dense, a small one keeps the sparse step."""
    sae, cfg, stepper, dead, x = _auto_stepper()
    limit = round(N_FEATURES * stepper.fraction)  # 2 (64 / 32): the paper recipe's dense step runs by hand
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
        sae.b_enc[0] = 100.0  # L0 = 1
    stepper.sparse = True
    stepper.gradients(sae, cfg, x, 1, dead)
    assert stepper.sparse and stepper.nnz == BATCH
    stepper.resampled(sae, 2 * (limit - 1), BATCH)  # expected L0 1 + (limit − 1) = limit: stays sparse
    assert stepper.sparse
    stepper.resampled(sae, 2 * limit, BATCH)  # 1 + limit > limit
    assert not stepper.sparse
    stepper.gradients(sae, cfg, x, 2, dead)  # dense, and L0 is measured after this very step
    assert stepper.sparse


def test_the_switch_sits_where_the_measured_crossover_does() -> None:
    """The sparse step pays below n/32 beside the dense step by hand, below n/16 beside autograd's."""
    from monosemantic.sae.sparse_step import SPARSE_L0_FRACTION, SPARSE_L0_FRACTION_BY_HAND

    sae, cfg, stepper, *_ = _auto_stepper()
    assert stepper.fraction == SPARSE_L0_FRACTION_BY_HAND == 1 / 32
    april, april_cfg = _sae_and_cfg("april2024")
    assert Stepper.for_recipe(april, april_cfg).fraction == SPARSE_L0_FRACTION == 1 / 16


def test_auto_measures_l0_every_step_once_it_is_near_the_limit() -> None:
    """Far above the limit L0 is measured every CHECK_EVERY dense steps; within NEAR_LIMIT times it, every step."""
    from monosemantic.sae.sparse_step import CHECK_EVERY

    sae, cfg, stepper, dead, x = _auto_stepper()
    with torch.no_grad():
        sae.b_enc.fill_(5.0)  # L0 = 64, 32 times the limit
    stepper.gradients(sae, cfg, x, 1, dead)
    assert not stepper.sparse and stepper.check_every == CHECK_EVERY
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
        sae.b_enc[: round(2 * N_FEATURES * stepper.fraction)] = 100.0  # L0 twice the limit
    for step in range(2, 2 + CHECK_EVERY):
        stepper.gradients(sae, cfg, x, step, dead)
    assert not stepper.sparse and stepper.check_every == 1
    with torch.no_grad():
        sae.b_enc[1:] = -100.0  # L0 = 1
    stepper.gradients(sae, cfg, x, 20, dead)
    assert stepper.sparse  # one dense step later, not CHECK_EVERY


@pytest.mark.parametrize("arch", ["tm2023", "topk", "batchtopk", "jumprelu"])
def test_bfloat16_active_set_tracks_float32_loss(arch: str) -> None:
    """bfloat16 only picks the active set; the loss curve stays within 2 % of float32's."""
    sae, cfg = _sae_and_cfg(arch)
    ref = copy.deepcopy(sae)
    batches = list(_inputs(BATCH * 31, seed=5).split(BATCH))
    (r32,) = train_sae([ref], iter(batches), _with(cfg, step="sparse"))
    (r16,) = train_sae([sae], iter(batches), _with(cfg, step="sparse", matmul_dtype="bfloat16"))
    for a, b in zip(r32.history, r16.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02)


def _with(cfg: object, **changes: object) -> object:
    import dataclasses

    changes.setdefault("matmul_dtype", "float32")  # exact parity; `auto` may pick bfloat16 here
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def test_auto_matmul_dtype_is_float32_without_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    from monosemantic.sae import sparse_step

    cpu = torch.device("cpu")
    assert sparse_step.resolve_matmul_dtype("float32", cpu) == "float32"
    assert sparse_step.resolve_matmul_dtype("bfloat16", cpu) == "bfloat16"
    monkeypatch.setattr(sparse_step, "native_bf16", lambda device: False)
    assert sparse_step.resolve_matmul_dtype("auto", cpu) == "float32"
    monkeypatch.setattr(sparse_step, "native_bf16", lambda device: True)
    assert sparse_step.resolve_matmul_dtype("auto", cpu) == "bfloat16"
