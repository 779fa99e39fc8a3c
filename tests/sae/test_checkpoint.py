"""SAE training checkpoints: resume equals an uninterrupted run bit for bit; bad checkpoints are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from monosemantic.activations.store import open_activations
from monosemantic.checkpoint import read, read_meta
from monosemantic.errors import UserError
from monosemantic.sae import SAEConfig, SAETrainConfig, SparseAutoencoder, train_sae
from monosemantic.sae.checkpoint import SAECheckpointer

# 60 steps of 32 rows; resampling at steps 15, 30, 45 (dead = silent for 6 steps), so resumes
# cross a resample and restore the resampling generator.
CFG = SAETrainConfig(
    l1_coeff=0.05,
    lr=3e-3,
    batch_size=32,
    n_steps=60,
    b_dec_init_n_inputs=64,
    n_resamples=3,
    resample_every_fraction=0.25,
    dead_window_fraction=0.1,
    resample_n_batches=2,
    log_every=10,
    normalize_inputs=True,
)
EXPECTED = {"names": ["a", "b"]}


@pytest.fixture
def acts(tmp_path):
    x = np.maximum(np.random.default_rng(0).normal(size=(CFG.n_activations, 8)), 0).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    return open_activations(tmp_path / "acts.npy")


def fresh(seed=0):
    g = torch.Generator().manual_seed(seed)
    saes = [SparseAutoencoder(SAEConfig(d_in=8, n_features=n), generator=g) for n in (16, 64)]
    with torch.no_grad():
        for sae in saes:
            sae.b_enc[:4] = -1e3  # four features that never fire, so every scheduled resample has work
    return saes


class Stop(Exception):
    pass


class StopAt:
    """A logger that kills training at a step (after its log, before its checkpoint)."""

    def __init__(self, step):
        self.step = step

    def log(self, row):
        if row["step"] == self.step:
            raise Stop


def train(acts, saes, ckpt, logger=None, cfg=CFG):
    start = ckpt.step() if ckpt else 0
    return train_sae(saes, acts.batches(32, seed=1, skip_rows=start * 32), cfg, logger=logger, checkpoint=ckpt)


@pytest.mark.parametrize(("scores", "every", "stop", "at"), [("peek", 10, 40, 30), ("training", 5, 20, 15)])
def test_resume_equals_uninterrupted_bit_for_bit(acts, tmp_path, scores, every, stop, at):
    # with scores from the training steps the checkpoint at step 15, right after a resampling, carries the
    # kept batches, their losses and the seeds still to be handed back
    cfg = dataclasses.replace(CFG, resample_scores=scores)
    full = fresh()
    expect = train(acts, full, None, cfg=cfg)
    assert [n for _, n in expect[1].resampled] and any(n for _, n in expect[1].resampled)  # a resample happened

    ckpt = SAECheckpointer(tmp_path / "ckpt", every, EXPECTED)
    with pytest.raises(Stop):
        train(acts, fresh(), ckpt, StopAt(stop), cfg=cfg)
    assert ckpt.step() == at
    if scores == "training":
        tensors, _ = read(tmp_path / "ckpt", EXPECTED)
        assert any(k.startswith("sae1.kept.pending.") for k in tensors)
    resumed = fresh(seed=123)  # a different init: everything must come from the checkpoint
    got = train(acts, resumed, SAECheckpointer(tmp_path / "ckpt", every, EXPECTED), cfg=cfg)
    for a, b, ra, rb in zip(full, resumed, expect, got, strict=True):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
        assert ra.history == rb.history and ra.resampled == rb.resampled
        assert torch.equal(ra.last_fired, rb.last_fired) and ra.n_activations == rb.n_activations


@pytest.mark.parametrize("damage", ["truncate", "flip", "json"])
def test_damaged_checkpoint_is_reported_and_never_loaded(acts, tmp_path, damage):
    folder = tmp_path / "ckpt"
    with pytest.raises(Stop):
        train(acts, fresh(), SAECheckpointer(folder, 10, EXPECTED), StopAt(20))
    tensors = folder / read_meta(folder)["tensors"]
    data = tensors.read_bytes()
    if damage == "truncate":
        tensors.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        tensors.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        (folder / "ckpt.json").write_text('{"step": 10, "tens')
    saes = fresh(seed=5)
    before = [s.W_dec.clone() for s in saes]
    with pytest.raises(UserError) as e:
        train(acts, saes, SAECheckpointer(folder, 10, EXPECTED))
    assert "\n" not in str(e.value)
    bad = "ckpt.json" if damage == "json" else tensors.name
    assert bad in str(e.value) and ("corrupt or truncated" in str(e.value) or "not valid JSON" in str(e.value))
    assert all(torch.equal(b, s.W_dec) for b, s in zip(before, saes, strict=True))  # nothing loaded


def test_checkpoint_of_another_run_is_refused(acts, tmp_path):
    folder = tmp_path / "ckpt"
    with pytest.raises(Stop):
        train(acts, fresh(), SAECheckpointer(folder, 10, EXPECTED), StopAt(20))
    with pytest.raises(UserError, match="different config"):
        train(acts, fresh(), SAECheckpointer(folder, 10, {"names": ["a", "c"]}))
