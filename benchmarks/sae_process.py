"""Whole-process SAE training against SAELens, process start to saved weights (`sae_vs_saelens.py --start process`).

Each tool runs as its own command on the same `.npy` of raw activations and writes its weights:

- ours: `monosemantic sae train --activations train.npy --out DIR --preset default --n-features M
  --n-steps S` (the demo's recipe: paper L1 on normalised inputs, resampling, clipping), plus any
  `--ours-flags`;
- SAELens: `python sae_process.py saelens ...`, this file's `saelens_main`: SAELens's
  `StandardTrainingSAE` (apply_b_dec_to_input, its own init) and `SAETrainer`, fed the same rows in
  the same order, scaled as ours are (E‖x‖ = √d_in, fitted on the first 16,384 rows), at our learning
  rate, with an L1 coefficient the parent tunes until its held-out L0 is within 20 % of ours.

The parent times each command from spawn to exit, then scores both sets of weights on held-out rows
that neither tool trained on (FVU and L0; not timed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

BATCH = 4096
N_HELD_OUT = 4 * BATCH
SCALE_ROWS = 16_384  # rows the input scale is fitted on, as our trainer's b_dec_init_n_inputs


def prepare(store: str, n_train: int, out: Path) -> tuple[Path, Path]:
    """Write `n_train` rows and N_HELD_OUT held-out rows of a harvested store as raw float16 `.npy` files.

    The rows are the store's shuffled order (seed 0): held-out first, then training. Reused when present.
    """
    from monosemantic.activations.store import open_activations

    out.mkdir(parents=True, exist_ok=True)
    train, held = out / f"train-{n_train}.npy", out / "held_out.npy"
    if train.exists() and held.exists():
        return train, held
    src = open_activations(store)
    it = src.batches(BATCH, seed=0, drop_last=True)
    held_rows = torch.cat([next(it) for _ in range(N_HELD_OUT // BATCH)])
    np.save(held, held_rows.numpy().astype(np.float32))
    mm = np.lib.format.open_memmap(out / ".train.tmp.npy", mode="w+", dtype=np.float16, shape=(n_train, src.d))
    pos = 0
    while pos < n_train:
        x = next(it)[: n_train - pos]
        mm[pos : pos + len(x)] = x.numpy().astype(np.float16)
        pos += len(x)
    mm.flush()
    del mm
    (out / ".train.tmp.npy").replace(train)
    return train, held


def saelens_main(argv: list[str]) -> None:
    """Train SAELens's standard SAE on a `.npy` and save it: the timed SAELens command."""
    p = argparse.ArgumentParser()
    p.add_argument("train", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--features", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--l1", type=float, required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    data = np.load(args.train, mmap_mode="r")
    d_in = data.shape[1]
    first = torch.from_numpy(np.asarray(data[:SCALE_ROWS], dtype=np.float32))
    scale = float(d_in**0.5 / first.norm(dim=1).mean())

    def batches() -> Iterator[torch.Tensor]:
        for i in range(args.steps):
            yield torch.from_numpy(np.asarray(data[i * BATCH : (i + 1) * BATCH], dtype=np.float32)) * scale

    cfg = StandardTrainingSAEConfig(d_in=d_in, d_sae=args.features, l1_coefficient=args.l1, apply_b_dec_to_input=True)
    sae = StandardTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=args.lr,
        lr_end=args.lr / 10,  # what SAELens's runner config sets; unused by its default constant schedule
        device="cpu",
    )
    SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches()).fit()
    args.out.mkdir(parents=True, exist_ok=True)
    sae.save_model(args.out)
    (args.out / "input_scale.json").write_text(json.dumps({"scale": scale}))


@torch.no_grad()
def score(weights: dict[str, torch.Tensor], held_out: Path, scale: float, pre_bias: bool = True) -> dict[str, float]:
    """Held-out FVU, L0 and dead share (never active) of a standard ReLU SAE in the units it was trained in
    (inputs × `scale`)."""
    x = torch.from_numpy(np.load(held_out)).float() * scale
    W_enc, b_enc, W_dec, b_dec = (weights[k].float() for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
    f = torch.relu(((x - b_dec) if pre_bias else x) @ W_enc + b_enc)
    x_hat = f @ W_dec + b_dec
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum())
    fired = f > 0
    return {"fvu": fvu, "l0": float(fired.sum(dim=1).float().mean()), "dead": float((~fired.any(dim=0)).float().mean())}


def run_ours(train: Path, held: Path, m: int, steps: int, flags: list[str], tmp: Path) -> dict:
    from safetensors.torch import load_file

    cmd = [sys.executable, "-m", "monosemantic", "sae", "train", "--activations", str(train), "--out", str(tmp)]
    cmd += ["--preset", "default", "--n-features", str(m), "--n-steps", str(steps), "--no-progress", "--force"]
    wall, _ = timed(cmd + flags)
    folder = tmp / f"tm2023-{m}"
    weights = load_file(folder / "sae.safetensors")  # saved in raw units (the scale is folded back)
    return {"wall_s": wall, **score(weights, held, 1.0), "cmd": " ".join(cmd + flags)}


def run_saelens(train: Path, held: Path, m: int, steps: int, l1: float, tmp: Path) -> dict:
    from safetensors.torch import load_file

    cmd = [sys.executable, __file__, "saelens", str(train), str(tmp), "--features", str(m), "--steps", str(steps)]
    cmd += ["--l1", f"{l1:.6g}"]
    wall, _ = timed(cmd)
    weights = load_file(next(tmp.glob("*.safetensors")))
    scale = json.loads((tmp / "input_scale.json").read_text())["scale"]
    return {"wall_s": wall, "l1_coefficient": l1, **score(weights, held, scale)}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run `cmd` quietly (no progress bars, no wandb, no hub); its wall seconds from spawn to exit and its
    stderr + stdout. `env` adds to (or overrides) the inherited environment. Raises if it fails."""
    import subprocess

    full = {**__import__("os").environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env={**full, **(env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return wall, out.stderr + out.stdout


if __name__ == "__main__" and sys.argv[1:2] == ["saelens"]:
    saelens_main(sys.argv[2:])
