"""The eval stage: evaluate_sae's numbers agree with the one-shot metrics; run() writes the artifacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic import paths
from monosemantic.data import tokens
from monosemantic.errors import UserError
from monosemantic.eval.metrics import feature_density, fvu, l0, l1, mse, normalized_mse
from monosemantic.eval.report import DENSITY_PNG, EvalConfig, evaluate_sae, evaluate_saes, format_table, run
from monosemantic.io import save_tensors, write_config
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer
from monosemantic.transformer.train import KIND as TRANSFORMER_KIND
from tests.eval.conftest import TINY_MODEL, tiny_model, tiny_sae

HOOK = hooks.MLP_POST
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {
    "mse", "fvu", "normalized_mse", "l0", "l1", "n_dead", "dead_frac", "n_dense", "dense_frac", "n_ultralow",
    "density_histogram", "loss_clean", "loss_sae", "loss_zero", "loss_mean", "kl_sae", "kl_zero", "kl_mean",
    "loss_recovered", "loss_recovered_vs_mean", "eval_tokens", "stats_tokens", "n_features",
}  # fmt: skip


def hook_acts(model: Transformer, windows: torch.Tensor) -> torch.Tensor:
    """`[n * ctx, d]`: the hook activations of every position."""
    with torch.no_grad():
        _, cache = model.run_with_cache(windows[:, :-1], (HOOK,))
    return cache[HOOK].flatten(0, 1)


def test_evaluate_sae_agrees_with_the_one_shot_metrics(model, windows):
    sae = tiny_sae()
    m = evaluate_sae(sae, model, HOOK, windows, batch_size=5, hist_bins=12)
    assert set(m) >= METRIC_KEYS
    x = hook_acts(model, windows)
    with torch.no_grad():
        x_hat, f = sae(x)
    assert m["eval_tokens"] == m["stats_tokens"] == len(x) == 96
    for name, fn in {"mse": mse, "fvu": fvu, "normalized_mse": normalized_mse}.items():
        assert m[name] == pytest.approx(fn(x, x_hat).item(), rel=1e-5), name
    assert m["l0"] == pytest.approx(l0(f).item()) and m["l1"] == pytest.approx(l1(f).item(), rel=1e-5)
    density = feature_density(f)
    assert m["n_dead"] == int((density == 0).sum())
    hist = m["density_histogram"]
    assert len(hist["counts"]) == 12 and sum(hist["counts"]) + hist["n_dead"] == 64
    assert hist["log10_edges"][0] == -6.0 and m["min_resolvable_density"] == pytest.approx(1 / 96)


def test_acts_for_stats_replace_the_window_activations(model, windows):
    sae = tiny_sae()
    from_windows = evaluate_sae(sae, model, HOOK, windows, batch_size=5)
    x = hook_acts(model, windows)
    from_store = evaluate_sae(sae, model, HOOK, windows, batch_size=5, acts_for_stats=iter(x.split(10)))
    assert from_store["density_histogram"] == from_windows["density_histogram"]
    numbers = {k: v for k, v in from_windows.items() if isinstance(v, float)}
    assert {k: from_store[k] for k in numbers} == pytest.approx(numbers, rel=1e-5)
    other = evaluate_sae(sae, model, HOOK, windows, batch_size=5, acts_for_stats=[x[:7]])
    assert other["stats_tokens"] == 7 and other["eval_tokens"] == 96
    assert other["loss_sae"] == from_windows["loss_sae"]


def test_several_saes_equal_one_at_a_time(model, windows):
    saes = {"big": tiny_sae(64), "small": tiny_sae(8)}
    together = evaluate_saes(saes, model, HOOK, windows, batch_size=5)
    for name, sae in saes.items():
        assert together[name] == evaluate_sae(sae, model, HOOK, windows, batch_size=5)
    assert format_table(together).splitlines()[2].startswith("small")


def test_an_sae_of_the_wrong_width_is_a_user_error(model, windows):
    with pytest.raises(UserError, match="16 dims"):
        evaluate_sae(tiny_sae(d_in=16), model, HOOK, windows)


# -- the stage ---------------------------------------------------------------------------------


def write_model(folder: Path) -> Transformer:
    """A model folder as transformer/train.py's `run` writes it (config.json + model.safetensors)."""
    model = tiny_model()
    save_tensors(folder / paths.MODEL_WEIGHTS, model.state_dict())
    write_config(folder / paths.CONFIG, TRANSFORMER_KIND, {"model": TINY_MODEL.to_dict(), "name": "A"})
    return model


def write_tokens(folder: Path, n_val: int = 200, n_train: int = 50) -> None:
    """A tokens folder in the layout of data/tokens.py, with random ids below the tiny vocabulary."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rng.integers(0, TINY_MODEL.vocab_size, n).astype("<u2").tofile(folder / f"{split}_000.bin")
        np.save(folder / f"{split}_docs.npy", np.array([(0, 0, n, 0)], dtype=tokens.DOC_DTYPE))
        splits[split] = {"n_docs": 1, "n_tokens": n, "n_shards": 1}
    body = {"dtype": "uint16", "vocab_size": TINY_MODEL.vocab_size, "eot_id": 0, "sources": ["x"], "splits": splits}
    write_config(folder / paths.CONFIG, tokens.KIND, body)


@pytest.fixture
def stage(tmp_path):
    write_model(tmp_path / "model")
    write_tokens(tmp_path / "tokens")
    saes = {"s64": tmp_path / "sae64", "s16": tmp_path / "sae16"}
    tiny_sae(64).save(saes["s64"])
    tiny_sae(16).save(saes["s16"])
    return tmp_path, saes


def test_run_writes_metrics_png_and_config(stage):
    root, saes = stage
    cfg = EvalConfig(eval_tokens=64, batch_size=3, hist_bins=10, device="cpu")
    out = run(root / "model", saes, root / "tokens", root / "eval", cfg, progress=False)
    assert list(out) == ["s64", "s16"]
    for name in saes:
        folder = root / "eval" / name
        metrics = json.loads((folder / paths.METRICS).read_text())
        assert set(metrics) >= METRIC_KEYS and "definitions" in metrics
        assert metrics["eval_tokens"] == 64 and metrics["split"] == "val"
        assert metrics == out[name]
        assert (folder / DENSITY_PNG).read_bytes()[:8] == PNG_MAGIC
        config = json.loads((folder / paths.CONFIG).read_text())
        assert config["kind"] == "monosemantic.eval" and config["eval"]["eval_tokens"] == 64
    assert out["s64"]["n_features"] == 64 and out["s16"]["n_features"] == 16
    assert not [p for p in (root / "eval").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_run_skips_finished_saes_unless_forced(stage):
    root, saes = stage
    cfg = EvalConfig(eval_tokens=32, batch_size=4, device="cpu")
    first = run(root / "model", {"s64": saes["s64"]}, root / "tokens", root / "eval", cfg, progress=False)
    metrics_file = root / "eval" / "s64" / paths.METRICS
    stamp = metrics_file.stat().st_mtime_ns
    again = run(root / "model", saes, root / "tokens", root / "eval", cfg, progress=False)  # evaluates only s16
    assert again["s64"] == first["s64"] and metrics_file.stat().st_mtime_ns == stamp
    assert (root / "eval" / "s16" / paths.METRICS).exists()
    forced = run(root / "model", {"s64": saes["s64"]}, root / "tokens", root / "eval", cfg, force=True, progress=False)
    assert forced["s64"]["loss_sae"] == pytest.approx(first["s64"]["loss_sae"])
    assert metrics_file.stat().st_mtime_ns != stamp


def test_run_rejects_an_sae_for_another_hook(stage):
    root, _ = stage
    tiny_sae(64, d_in=16).save(root / "wrong")
    cfg = EvalConfig(eval_tokens=32, device="cpu")
    with pytest.raises(UserError, match="dims"):
        run(root / "model", {"w": root / "wrong"}, root / "tokens", root / "eval", cfg, progress=False)
    assert not (root / "eval" / "w").exists()


def test_eval_config_validates():
    with pytest.raises(ValueError, match="eval_tokens"):
        EvalConfig(eval_tokens=0)
    with pytest.raises(ValueError, match="hook"):
        EvalConfig(hook="blocks.0.mlp:sideways")  # neither input nor output


def test_run_without_matplotlib_fails_before_evaluating(stage, monkeypatch):
    root, saes = stage
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(UserError, match="matplotlib"):
        run(root / "model", saes, root / "tokens", root / "eval", EvalConfig(eval_tokens=32, device="cpu"))
    assert not (root / "eval").exists()
