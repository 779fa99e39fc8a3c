"""train_sae: config validation, the constraint after a step, stream handling, recovery, parity."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import textwrap

import pytest
import torch

from monosemantic.sae import (
    AprilTrainConfig,
    SAEConfig,
    SAETrainConfig,
    SparseAutoencoder,
    TopKTrainConfig,
    train_sae,
)
from monosemantic.sae.geometric_median import geometric_median
from monosemantic.sae.synthetic import mean_max_cosine, planted_features


@pytest.mark.parametrize(
    "field, bad",
    [
        ("l1_coeff", -1.0),
        ("lr", 0.0),
        ("batch_size", 0),
        ("n_steps", 2.5),
        ("adam_beta1", 1.0),
        ("adam_eps", 0.0),
        ("b_dec_init", "mean"),
        ("n_resamples", -1),
        ("resample_every_fraction", 1.5),
        ("dead_window_fraction", 0.0),
        ("resample_n_batches", 0),
        ("resample_encoder_scale", -0.2),
        ("resample_direction", "residual"),
        ("resample_scores", "current"),
        ("max_grad_norm", 0.0),
        ("log_every", 0),
    ],
)
def test_config_validation_names_the_field(field, bad) -> None:
    with pytest.raises(ValueError, match=f"SAETrainConfig.{field} "):
        SAETrainConfig(**{field: bad})


def test_config_defaults_are_the_paper() -> None:
    cfg = SAETrainConfig()
    assert (cfg.l1_coeff, cfg.batch_size, cfg.n_steps) == (0.004, 8192, 1_000_000)
    assert cfg.n_activations == 8_192_000_000
    assert cfg.resample_n_batches * cfg.batch_size == 819_200


@pytest.mark.parametrize("cls", [SAETrainConfig, AprilTrainConfig, TopKTrainConfig], ids=lambda c: c.__name__)
def test_every_config_field_has_a_docstring(cls) -> None:
    # CLI flags get their help text from these attribute docstrings (STYLE P3), inherited ones included
    documented = set()
    for klass in filter(dataclasses.is_dataclass, cls.__mro__):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                documented.add(node.target.id)
    assert {f.name for f in dataclasses.fields(cls)} <= documented


def test_decoder_rows_unit_norm_after_a_step(tiny_sae_cfg, tiny_train_cfg) -> None:
    sae = SparseAutoencoder(tiny_sae_cfg())
    W_before = sae.W_dec.detach().clone()
    train_sae([sae], iter([torch.randn(32, 8) * 5]), tiny_train_cfg(n_steps=1, lr=0.1))
    assert not torch.equal(sae.W_dec, W_before)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)


def test_gradient_clipping_changes_training_only_when_the_norm_is_exceeded(tiny_sae_cfg, tiny_train_cfg) -> None:
    batches = list((torch.randn(32 * 6, 8) * 5).split(32))

    def trained(clip: float | None) -> SparseAutoencoder:
        sae = SparseAutoencoder(tiny_sae_cfg(), generator=torch.Generator().manual_seed(0))
        train_sae([sae], iter(batches), tiny_train_cfg(n_steps=6, lr=1e-2, max_grad_norm=clip))
        return sae

    plain, loose, tight = trained(None), trained(1e9), trained(1e-4)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), loose.parameters(), strict=True))
    # Adam's first step ignores the gradient's scale, so clipping shows from the second step on
    assert not torch.allclose(plain.W_enc, tight.W_enc, atol=1e-6)


def test_b_dec_starts_at_the_geometric_median(tiny_sae_cfg, tiny_train_cfg) -> None:
    x = torch.randn(64, 8) + 3.0
    sae = SparseAutoencoder(tiny_sae_cfg())
    train_sae([sae], iter(x.split(32)), tiny_train_cfg(n_steps=1, lr=1e-6, b_dec_init_n_inputs=64))
    assert torch.allclose(sae.b_dec, geometric_median(x), atol=1e-4)  # one tiny step away from it


def test_stream_is_read_once_in_order(tiny_sae_cfg, tiny_train_cfg) -> None:
    # the geometric-median and resampling peeks put their batches back, so every batch is trained
    # on exactly once and nothing after step n_steps is consumed beyond what a peek needed
    seen: list[int] = []

    def stream():
        for i in range(100):
            seen.append(i)
            yield torch.randn(32, 8)

    cfg = tiny_train_cfg(n_steps=40, n_resamples=1, resample_every_fraction=0.5, dead_window_fraction=0.1)
    [result] = train_sae([SparseAutoencoder(tiny_sae_cfg())], stream(), cfg)
    assert result.n_steps == 40 and result.n_activations == 40 * 32
    assert seen == list(range(40))  # the peek at step 20 read 4 batches, all trained on later


def test_short_stream_stops_early_and_logs_the_tail(tiny_sae_cfg, tiny_train_cfg, caplog) -> None:
    rows = []

    class Recorder:
        def log(self, row):
            rows.append(row)

    sae = SparseAutoencoder(tiny_sae_cfg())
    [result] = train_sae([sae], iter(torch.randn(25, 32, 8)), tiny_train_cfg(n_steps=40), logger=Recorder())
    assert result.n_steps == 25 and result.n_activations == 25 * 32
    assert "ran out after 25 of 40" in caplog.text
    assert [r["step"] for r in rows] == [10, 20, 25]
    assert rows == result.history
    assert set(rows[0]) == {"step", "sae", "loss", "mse", "l1", "l0", "dead_fraction"}


def test_bad_inputs_are_rejected(tiny_sae_cfg, tiny_train_cfg) -> None:
    sae = SparseAutoencoder(tiny_sae_cfg())
    with pytest.raises(ValueError, match="d_in"):
        train_sae([sae], iter([torch.randn(32, 5)]), tiny_train_cfg(b_dec_init="keep"))
    with pytest.raises(ValueError, match="n_steps"):
        train_sae([sae, copy.deepcopy(sae)], iter([]), [tiny_train_cfg(), tiny_train_cfg(n_steps=7)])
    with pytest.raises(ValueError, match="empty"):
        train_sae([sae], iter([]), tiny_train_cfg())


def test_recovers_planted_features() -> None:
    # 64 unit directions in 32 dimensions (superposition), each active 5% of the time; a 2x dictionary
    # trained with the paper recipe finds them all (measured: mean max cosine ≈ 0.997 in ~1 s)
    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    sae = SparseAutoencoder(SAEConfig(d_in=32, n_features=128))
    cfg = SAETrainConfig(
        l1_coeff=0.03, lr=3e-3, batch_size=256, n_steps=1000, b_dec_init_n_inputs=2048, resample_n_batches=8
    )
    [result] = train_sae([sae], sampler.batches(256, 1100), cfg)
    assert mean_max_cosine(sae.W_dec.detach(), directions) >= 0.95
    assert result.history[-1]["l0"] < 10  # ~3.2 true directions per input


@pytest.mark.parametrize(("normalize", "scores"), [(False, "peek"), (True, "peek"), (True, "training")])
def test_training_together_equals_training_alone(tiny_train_cfg, normalize, scores) -> None:
    # a ladder of sizes and an L1 sweep share one stream; each must train as if alone, resampling
    # included (feature 0 of each is killed so that resampling has work to do); with normalised
    # inputs the SAEs also share one scaled copy of each batch
    saes = [
        SparseAutoencoder(SAEConfig(8, 16)),
        SparseAutoencoder(SAEConfig(8, 32)),
        SparseAutoencoder(SAEConfig(8, 16)),
    ]
    for sae in saes:
        with torch.no_grad():
            sae.b_enc[0] = -1e4
    cfgs = [
        tiny_train_cfg(
            l1_coeff=l1,
            resample_every_fraction=0.25,
            n_resamples=2,
            dead_window_fraction=0.2,
            normalize_inputs=normalize,
            resample_scores=scores,
        )
        for l1 in (0.01, 0.01, 0.1)
    ]
    alone = [copy.deepcopy(s) for s in saes]
    x = torch.randn(60, 32, 8).abs()

    together = train_sae(saes, iter(x), cfgs)
    for sae_alone, cfg, sae_together, res_together in zip(alone, cfgs, saes, together, strict=True):
        [res_alone] = train_sae([sae_alone], iter(x), cfg)
        for name, p in sae_alone.named_parameters():
            assert torch.equal(p, getattr(sae_together, name)), name
        assert res_alone.resampled == res_together.resampled and res_alone.resampled[0][1] >= 1
        assert torch.equal(res_alone.last_fired, res_together.last_fired)
        assert [r["loss"] for r in res_alone.history] == [r["loss"] for r in res_together.history]


@pytest.mark.parametrize(
    ("per_dead", "n_dead", "expected"),
    [(0, 5, 4), (0, 0, 0), (16, 1, 1), (16, 3, 2), (16, 1000, 4), (1, 0, 0)],
)
def test_resampling_scores_as_many_batches_as_the_dead_count_needs(
    tiny_train_cfg, per_dead: int, n_dead: int, expected: int
) -> None:
    from monosemantic.sae.train import n_resample_batches

    cfg = tiny_train_cfg(resample_inputs_per_dead=per_dead)  # 4 batches of 32 at most
    assert n_resample_batches(cfg, n_dead) == expected


def _fifteen_dead(tiny_sae_cfg, tiny_train_cfg, **recipe):
    """16 features, 15 of them dead from the start (b_enc very negative), and a 20-step recipe that
    resamples them once, at step 10 (dead = not fired in the last 5 steps); `recipe` adds settings."""
    sae = SparseAutoencoder(tiny_sae_cfg())
    with torch.no_grad():
        sae.b_enc[1:] = -1e3
    cfg = tiny_train_cfg(
        n_steps=20, n_resamples=1, resample_every_fraction=0.5, dead_window_fraction=0.25, b_dec_init="keep", **recipe
    )
    return sae, cfg


def test_fewer_scoring_inputs_peek_fewer_batches_and_still_resample(tiny_sae_cfg, tiny_train_cfg) -> None:
    # 16 features with 15 of them dead from the start (b_enc very negative): 15 × 4 = 60 inputs → 2 batches
    peeks: list[int] = []
    seen: list[int] = []

    def stream():
        for i in range(100):
            seen.append(i)
            yield torch.randn(32, 8)

    sae, cfg = _fifteen_dead(tiny_sae_cfg, tiny_train_cfg, resample_inputs_per_dead=4)
    from monosemantic.sae import train as train_module

    original = train_module.resample_losses

    def counting(sae_, x, *a, **kw):
        peeks.append(x.shape[0])
        return original(sae_, x, *a, **kw)

    train_module.resample_losses = counting
    try:
        [result] = train_sae([sae], stream(), cfg)
    finally:
        train_module.resample_losses = original
    assert result.resampled == [(10, 15)]
    assert peeks == [32, 32]  # two batches scored, not resample_n_batches = 4
    assert seen == list(range(20))
    assert (sae.encode(torch.randn(256, 8)) > 0).any(dim=0).sum() > 1  # the resampled features fire again


@pytest.mark.parametrize("scores", ["peek", "training"])
def test_resampling_scored_from_training_draws_from_the_last_batches_and_hands_the_seeds_back(
    tiny_sae_cfg, tiny_train_cfg, monkeypatch, scores
) -> None:
    # steps 1-10 read inputs on dims 0-3, steps 11-20 on dims 4-7; the resampling at step 10 draws its seeds
    # from the 4 batches of steps 7-10 with the losses their steps computed (training), or peeks and scores
    # those of steps 11-14 (peek, the paper); from training, each seed comes back in one of steps 11-14
    gen = torch.Generator().manual_seed(0)
    first, later = torch.zeros(10, 32, 8), torch.zeros(10, 32, 8)
    first[..., :4] = torch.rand(10, 32, 4, generator=gen) + 0.1
    later[..., 4:] = torch.rand(10, 32, 4, generator=gen) + 0.1
    sae, cfg = _fifteen_dead(tiny_sae_cfg, tiny_train_cfg, resample_scores=scores)
    from monosemantic.sae import train as train_module
    from monosemantic.sae.sparse_step import Stepper

    scored, drawn, batch_rows = [], [], []
    losses, draw, gradients = train_module.resample_losses, train_module.resample_dead_, Stepper.gradients
    monkeypatch.setattr(train_module, "resample_losses", lambda s_, x, *a: scored.append(x) or losses(s_, x, *a))

    def drawing(s_, o, d, x, loss, **kw):
        picked = draw(s_, o, d, x, loss, **kw)
        drawn.append((x, loss, picked))
        return picked

    monkeypatch.setattr(train_module, "resample_dead_", drawing)
    monkeypatch.setattr(
        Stepper, "gradients", lambda self, s_, c, x, *a: batch_rows.append(x) or gradients(self, s_, c, x, *a)
    )
    [result] = train_sae([sae], iter(torch.cat([first, later])), cfg)

    assert result.resampled == [(10, 15)]
    [(x, loss, picked)] = drawn
    assert x.shape == (4 * 32, 8) and loss.shape == (4 * 32,) and bool((loss > 0).all())
    if scores == "peek":
        assert len(scored) == 4 and torch.equal(x, later[:4].reshape(-1, 8))
        assert [b.shape[0] for b in batch_rows] == [32] * 20
        return
    assert scored == []  # no scoring pass: the losses are those the training steps computed
    assert torch.equal(x, first[6:10].reshape(-1, 8))
    assert [b.shape[0] for b in batch_rows[:10]] == [32] * 10 and [b.shape[0] for b in batch_rows[14:]] == [32] * 6
    handed_back = torch.cat([b[32:] for b in batch_rows[10:14]])  # the rows added to steps 11-14
    assert handed_back.shape[0] == 15 and torch.equal(handed_back.sort(dim=0).values, x[picked].sort(dim=0).values)
    assert torch.equal(torch.cat([b[:32] for b in batch_rows[10:14]]), later[:4].reshape(-1, 8))
    assert result.n_activations == 20 * 32 + 15
