"""Crash safety as a user meets it: SIGKILL a training process, resume it with --resume, get the same weights.

Each run is a fresh `python -m monosemantic` process on one thread (so float sums happen in the same
order in every run); the uninterrupted run and the resumed one must agree bit for bit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from monosemantic.checkpoint import META

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
}


def cli(*args, **kwargs) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "monosemantic", *map(str, args), "--no-progress"]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out + err


def kill_after_checkpoint(proc: subprocess.Popen, ckpt: Path, timeout: float = 120) -> int:
    """SIGKILL `proc` as soon as `ckpt/ckpt.json` exists; returns the step that checkpoint holds."""
    deadline = time.monotonic() + timeout
    while not (ckpt / META).is_file():
        assert proc.poll() is None, f"finished before its first checkpoint: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    import json

    return json.loads((ckpt / META).read_text())["step"]


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].equal(tb[k]), k


def test_sae_train_sigkill_then_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", np.maximum(rng.normal(size=(64 * 1500, 16)), 0).astype(np.float32))
    args = ["sae", "train", "--activations", tmp_path / "acts.npy", "--n-features", "64,128", "--batch-size", 64]
    args += ["--lr", 1e-3, "--b-dec-init-n-inputs", 256, "--resample-n-batches", 4, "--l1-coeff", 0.05]
    args += ["--normalize-inputs", "--checkpoint-every", 50]

    plain = cli(*args, "--out", tmp_path / "plain")
    killed = cli(*args, "--out", tmp_path / "resumed")
    step = kill_after_checkpoint(killed, tmp_path / "resumed/.checkpoint")
    assert 0 < step < 1500
    finish(plain)
    assert f"resuming from step {step}" in finish(cli(*args, "--out", tmp_path / "resumed", "--resume"))
    for name in ("tm2023-64", "tm2023-128"):
        assert_same_tensors(tmp_path / f"plain/{name}/sae.safetensors", tmp_path / f"resumed/{name}/sae.safetensors")
        assert (tmp_path / f"plain/{name}/train_log.jsonl").read_text() == (
            tmp_path / f"resumed/{name}/train_log.jsonl"
        ).read_text()
    assert not (tmp_path / "resumed/.checkpoint").exists()  # gone once the SAEs are written


def test_lm_train_sigkill_then_resume_equals_uninterrupted(tiny_run, tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"  # one writer per run: the uninterrupted twin has its own
    for r in (run, other):
        shutil.copytree(tiny_run / "tokens", r / "tokens")
    args = ["lm", "train", "--preset", "tiny", "--n-steps", 150, "--eval-every", 75, "--checkpoint-every", 10]

    plain = cli(*args, "--run", other, "--model", "U")
    killed = cli(*args, "--run", run, "--model", "K")
    step = kill_after_checkpoint(killed, run / "checkpoints/transformer-K")
    assert 0 < step < 150
    finish(plain)
    finish(cli(*args, "--run", run, "--model", "K", "--resume"))
    assert_same_tensors(other / "transformer/U/model.safetensors", run / "transformer/K/model.safetensors")
    assert not (run / "checkpoints").exists()


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "acts.npy", np.ones((8192, 4), dtype=np.float32))
    proc = cli("sae", "train", "--activations", tmp_path / "acts.npy", "--out", tmp_path / "o", "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip().splitlines()[-1].startswith(
        "monosemantic: error: --resume: no checkpoint"
    )
    assert not (tmp_path / "o").exists()
