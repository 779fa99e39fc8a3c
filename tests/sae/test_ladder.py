import json

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.sae.ladder import LadderConfig, train_ladder
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.topk import TopKTrainConfig
from monosemantic.sae.train import SAETrainConfig

TRAIN = SAETrainConfig(
    batch_size=64, n_steps=1000, lr=1e-3, b_dec_init_n_inputs=128, resample_n_batches=2, log_every=5, fit_to_run=False
)


def stream(n_rows=640, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(n_rows, d, generator=g))
    return iter(x.split(64))


def test_ladder_trains_each_size_once_and_records_training(tmp_path):
    ladder = LadderConfig(n_features=(16, 32))
    folders = train_ladder(stream(), 16, 640, ladder, TRAIN, tmp_path, {"activations": "x"})
    assert sorted(folders) == ["tm2023-16", "tm2023-32"]
    for name, n in (("tm2023-16", 16), ("tm2023-32", 32)):
        sae = SparseAutoencoder.load(folders[name])
        assert sae.cfg.n_features == n and sae.cfg.d_in == 16
        training = json.loads((folders[name] / "training.json").read_text())
        assert training["n_steps"] == 10  # capped at one pass over 640 rows: data is never repeated
        assert training["train"]["n_steps"] == 10 and training["source"] == {"activations": "x"}
        assert (folders[name] / "train_log.jsonl").read_text().count("\n") == 2
    before = (folders["tm2023-16"] / "sae.safetensors").stat().st_mtime_ns
    train_ladder(stream(), 16, 640, ladder, TRAIN, tmp_path, {})  # complete folders are skipped
    assert (folders["tm2023-16"] / "sae.safetensors").stat().st_mtime_ns == before


def test_l1_sweep_names_and_coefficients(tmp_path):
    ladder = LadderConfig(n_features=(16,), l1_coeffs=(0.001, 0.1))
    folders = train_ladder(stream(), 16, 640, ladder, TRAIN, tmp_path, {})
    assert sorted(folders) == ["tm2023-16-l1_0.001", "tm2023-16-l1_0.1"]
    l1 = {n: json.loads((f / "training.json").read_text())["train"]["l1_coeff"] for n, f in folders.items()}
    assert l1 == {"tm2023-16-l1_0.001": 0.001, "tm2023-16-l1_0.1": 0.1}
    with pytest.raises(UserError, match="no sparsity coefficient"):
        train_ladder(
            stream(),
            16,
            640,
            LadderConfig(arch="topk", l1_coeffs=(0.1,), k=4),
            TopKTrainConfig(batch_size=64),
            tmp_path,
            {},
        )


def test_bad_ladder_configs():
    with pytest.raises(ValueError, match="tuple of positive integers"):
        LadderConfig(n_features=(16, "abc"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        LadderConfig(n_features=(16, 16))
    with pytest.raises(ValueError, match="arch"):
        LadderConfig(arch="nope")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="fewer than one batch"):
        train_ladder(stream(), 16, 10, LadderConfig(n_features=(16,)), TRAIN, None, {})  # type: ignore[arg-type]
