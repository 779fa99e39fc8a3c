"""`--dtype bfloat16` for SAE training: bfloat16 autocast with float32 master weights.

Tolerance (docs/decisions.md 2026-12-06): over 60 steps of each recipe on the same stream, every logged
loss of the bfloat16 run is within 1 % of the float32 run's (measured: at most 0.02 % for the
paper's recipe and April's, 0.35 % for TopK, whose top-k choice can flip on near-ties).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from monosemantic.sae import SAEConfig, SAETrainConfig, train_sae
from monosemantic.sae.april import AprilSAE, AprilTrainConfig
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.sparse_step import Stepper, dense_gradients
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

D_IN, N_FEATURES, BATCH, STEPS = 32, 128, 128, 60


def _data(seed: int = 0) -> list[torch.Tensor]:
    """Sparse mixtures of 64 unit directions (a few active per row), the setting SAEs are made for."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(64, D_IN, generator=gen), dim=1)
    codes = torch.rand(BATCH * STEPS, 64, generator=gen) * (torch.rand(BATCH * STEPS, 64, generator=gen) < 0.05)
    return list((codes * 3 @ dirs + 0.01 * torch.randn(BATCH * STEPS, D_IN, generator=gen)).split(BATCH))


def _sae_and_cfg(arch: str) -> tuple[SparseAutoencoder, object]:
    gen = torch.Generator().manual_seed(1)
    common = {"lr": 3e-3, "batch_size": BATCH, "n_steps": STEPS, "log_every": 10, "matmul_dtype": "float32"}
    if arch == "tm2023":
        sae = SparseAutoencoder(SAEConfig(D_IN, N_FEATURES), generator=gen)
        return sae, SAETrainConfig(l1_coeff=0.003, n_resamples=0, b_dec_init_n_inputs=512, **common)
    if arch == "april2024":
        return AprilSAE(SAEConfig(D_IN, N_FEATURES), generator=gen), AprilTrainConfig(l1_coeff=0.1, **common)
    return TopKSAE(TopKSAEConfig(D_IN, N_FEATURES, k=8), generator=gen), TopKTrainConfig(k_aux=16, **common)


@pytest.mark.parametrize("arch", ["tm2023", "april2024", "topk"])
def test_bfloat16_training_tracks_the_float32_loss_curve(arch: str) -> None:
    sae, cfg = _sae_and_cfg(arch)
    ref = copy.deepcopy(sae)
    batches = _data()
    (r32,) = train_sae([ref], iter(batches), dataclasses.replace(cfg, step="dense"))  # type: ignore[type-var]
    (r16,) = train_sae([sae], iter(batches), dataclasses.replace(cfg, step="dense", dtype="bfloat16"))  # type: ignore[type-var]
    l32, l16 = [r["loss"] for r in r32.history], [r["loss"] for r in r16.history]
    assert l32[-1] < 0.5 * l32[0]  # it learns, so the comparison means something
    assert l16 == pytest.approx(l32, rel=0.01)
    assert l16 != l32  # autocast did run: bfloat16 products round differently
    assert all(p.dtype == torch.float32 for p in sae.parameters())  # float32 master weights


def test_the_dense_step_runs_its_products_in_bfloat16_and_keeps_float32_gradients() -> None:
    sae, cfg = _sae_and_cfg("tm2023")
    x, dead = _data()[0], torch.zeros(N_FEATURES, dtype=torch.bool)
    ref = copy.deepcopy(sae)
    t32 = dense_gradients(ref, cfg, x, 1, dead)
    t16 = dense_gradients(sae, cfg, x, 1, dead, "bfloat16")
    for p, q in zip(sae.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None and p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, q.grad, rtol=0.05, atol=0.05 * float(q.grad.abs().max()))
    l16, l32 = float(t16.loss.detach()), float(t32.loss.detach())
    assert l16 != l32 and l16 == pytest.approx(l32, rel=0.01)  # the products did run in bfloat16, closely


def test_dtype_bfloat16_makes_the_sparse_steps_auto_active_set_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    from monosemantic.sae import sparse_step

    monkeypatch.setattr(sparse_step, "native_bf16", lambda device: False)  # auto alone would pick float32
    sae, cfg = _sae_and_cfg("tm2023")
    auto = dataclasses.replace(cfg, matmul_dtype="auto")  # type: ignore[type-var]
    assert Stepper.for_recipe(sae, auto).matmul_dtype == "float32"
    bf16 = Stepper.for_recipe(sae, dataclasses.replace(auto, dtype="bfloat16"))
    assert (bf16.matmul_dtype, bf16.dtype) == ("bfloat16", "bfloat16")
    explicit = dataclasses.replace(auto, dtype="bfloat16", matmul_dtype="float32")
    assert Stepper.for_recipe(sae, explicit).matmul_dtype == "float32"  # an explicit choice stands
    with pytest.raises(ValueError, match="dtype must be auto, float32 or bfloat16"):
        dataclasses.replace(cfg, dtype="float16")


@pytest.mark.parametrize("native", [False, True])
def test_dtype_auto_runs_the_dense_step_in_bfloat16_only_where_the_device_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """The default preset's `dtype: auto`: bfloat16 autocast dense steps (and active set) on hardware with native
    bfloat16, float32 elsewhere, where emulated bfloat16 would be slower (runtime.native_bf16)."""
    from monosemantic import runtime
    from monosemantic.sae import sparse_step

    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    monkeypatch.setattr(sparse_step, "native_bf16", lambda device: native)
    sae, cfg = _sae_and_cfg("tm2023")
    stepper = Stepper.for_recipe(sae, dataclasses.replace(cfg, dtype="auto", matmul_dtype="auto"))  # type: ignore[type-var]
    want = "bfloat16" if native else "float32"
    assert (stepper.dtype, stepper.matmul_dtype) == (want, want)
