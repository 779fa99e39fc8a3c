"""`sae train --log wandb|tensorboard` (tracking.py): the training log rows reach each back end, offline.

TensorBoard: the event files are read back with TensorBoard's own reader. Weights & Biases: an
offline run (WANDB_MODE=offline) in a temporary folder, its history read back from the run's
`.wandb` file with wandb's own reader. Each test skips, with the reason, when its package is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.sae.ladder import LadderConfig, train_ladder
from monosemantic.sae.train import SAETrainConfig
from monosemantic.tracking import open_tracker

TRAIN = SAETrainConfig(
    batch_size=64, lr=1e-3, b_dec_init_n_inputs=128, resample_n_batches=2, log_every=5, fit_to_run=False
)


def _train(tracker: object, out: Path) -> dict[str, list[dict[str, float]]]:
    """Train a ladder of two sizes (20 steps, a row every 5) with `tracker`; returns each SAE's train_log rows."""
    import json

    g = torch.Generator().manual_seed(0)
    stream = iter(torch.relu(torch.randn(1280, 16, generator=g)).split(64))
    folders = train_ladder(stream, 16, 1280, LadderConfig(n_features=(16, 32)), TRAIN, out, {}, logger=tracker)  # type: ignore[arg-type]
    return {n: [json.loads(x) for x in (f / "train_log.jsonl").read_text().splitlines()] for n, f in folders.items()}


def test_tensorboard_event_files_hold_every_logged_row(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = open_tracker("tensorboard", tmp_path, {"arch": "tm2023"})
    logged = _train(tracker, tmp_path)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name, rows in logged.items():
        assert {f"{name}/{k}" for k in ("loss", "mse", "l1", "l0", "dead_fraction")} <= tags
        got = [(e.step, e.value) for e in events.Scalars(f"{name}/loss")]
        assert got == [(int(r["step"]), pytest.approx(r["loss"], rel=1e-6)) for r in rows]
    assert [r["step"] for r in logged["tm2023-16"]] == [5, 10, 15, 20]


def test_wandb_offline_run_holds_every_logged_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    tracker = open_tracker("wandb", tmp_path, {"arch": "tm2023"}, name="test")
    logged = _train(tracker, tmp_path)
    tracker.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, os.listdir(tmp_path / "wandb")
    history = _wandb_history(next(runs[0].glob("*.wandb")))
    for name, rows in logged.items():
        series = [(h["_step"], h[f"{name}/loss"]) for h in history if f"{name}/loss" in h]
        assert series == [(int(r["step"]), pytest.approx(r["loss"], rel=1e-6)) for r in rows]


def _wandb_history(path: Path) -> list[dict[str, float]]:
    """The history rows of an offline run's transaction log, through wandb's own reader (`wandb leet inspect`)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_unknown_backend_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not one of wandb, tensorboard"):
        open_tracker("mlflow", tmp_path, {})
