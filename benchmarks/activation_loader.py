"""How fast the activation store feeds SAE training, and what the prefetching thread saves.

    python benchmarks/activation_loader.py [--activations runs/full/activations/A/blocks.0.mlp.hook_post]
    python benchmarks/activation_loader.py --train --depths 0 2 --batches 40 --rounds 2 [--buffer-rows 32768]

Read only (the default): `--batches` batches of 4,096 rows with `ActivationSource.batches` (the
trainer's data path: float16 shards, shuffled in windows, converted to float32) after one warm-up
batch; prints rows/s and the time per batch, to compare with an SAE step's time.

`--train`: a training loop that takes each batch and runs the real sparse step of a TopK SAE (k 32,
`--features` 4,096, float32 encoder, gradients and Adam), once reading the store in the loop
(depth 0) and once through `prefetch` (depth 2, ...), alternating the configurations round by
round so they share the machine's load. The first batch of each pass (the first shuffle window's
fill, which no prefetch can hide) is left out; the rest is timed per step, from one `next()` to the
next. The mean is what a run pays (window refills are bursts: one batch in 64 with the default 512
MB window); `--buffer-rows` shrinks the window so that a short run sees several refills (the cost
per row is the same, the bursts are shorter). Prints a table with ratios against depth 0 and
writes JSON. Without a store at `--activations` it writes a float16 `.npy` of random rows to a
temporary folder and reads that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.activations.prefetch import prefetch
from monosemantic.activations.store import ActivationSource, open_activations
from monosemantic.io import write_json


def read_only(src: ActivationSource, n_batches: int, batch_size: int) -> dict[str, float]:
    it = src.batches(batch_size, seed=1)
    t0 = time.perf_counter()
    next(it)  # the first shuffle window is read here
    first = time.perf_counter() - t0
    times = []
    for _ in range(n_batches):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    row = {
        "first_batch_s": first,
        "median_batch_s": med,
        "mean_batch_s": statistics.mean(times),
        "rows_per_s_mean": batch_size / statistics.mean(times),
    }
    print(f"first batch (fills a shuffle window): {first:.2f} s")
    print(
        f"then: median {med * 1e3:.1f} ms/batch, mean {row['mean_batch_s'] * 1e3:.1f} ms, "
        f"{row['rows_per_s_mean']:,.0f} rows/s"
    )
    return row


def _stepper(d_in: int, n_features: int) -> Any:
    """One sparse TopK training step on a batch: gradients (sparse_step.py) and the constrained Adam step."""
    from monosemantic.sae.constraints import optimizer_step_
    from monosemantic.sae.sparse_step import sparse_gradients
    from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

    sae = TopKSAE(TopKSAEConfig(d_in=d_in, n_features=n_features, k=32), generator=torch.Generator().manual_seed(0))
    cfg = TopKTrainConfig()
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    dead = torch.zeros(n_features, dtype=torch.bool)

    def step(x: torch.Tensor) -> None:
        sparse_gradients(sae, cfg, x, 1, dead, "float32")
        optimizer_step_(opt, sae, None)

    return step


def train_loop(batches: Iterator[torch.Tensor], n_steps: int, step: Any) -> list[float]:
    """Seconds per step (waiting for the batch included) for `n_steps` steps after the first batch."""
    step(next(batches))  # the first window's fill and the step's warm-up
    times = []
    t = time.perf_counter()
    for _ in range(n_steps):
        x = next(batches)
        step(x)
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times


def train(src: ActivationSource, args: argparse.Namespace) -> dict[str, Any]:
    step = _stepper(src.d, args.features)
    per: dict[int, list[float]] = {d: [] for d in args.depths}
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        for depth in args.depths:
            raw = src.batches(args.batch_size, seed=1, buffer_rows=args.buffer_rows)
            it = prefetch(raw, depth)
            try:
                per[depth] += train_loop(it, args.batches, step)
            finally:
                getattr(it, "close", raw.close)()
    load1 = os.getloadavg()[0]
    rows = {
        depth: {"median_step_s": statistics.median(ts), "mean_step_s": statistics.mean(ts), "n_steps": len(ts)}
        for depth, ts in per.items()
    }
    base = rows[args.depths[0]]
    print(
        f"torch threads {torch.get_num_threads()}, {args.features} features, window "
        f"{args.buffer_rows or 'default (512 MB)'} rows, load average {load0:.1f} → {load1:.1f}"
    )
    print(f"| prefetch depth | median step ms | mean step ms | mean vs depth {args.depths[0]} |")
    print("|---|---|---|---|")
    for depth, r in rows.items():
        ratio = base["mean_step_s"] / r["mean_step_s"]
        r["speedup_mean"] = ratio
        print(f"| {depth} | {r['median_step_s'] * 1e3:.0f} | {r['mean_step_s'] * 1e3:.0f} | {ratio:.2f}× |")
    return {"train": {str(d): r for d, r in rows.items()}, "load_average": [load0, load1]}


def _synthetic(folder: Path, n_rows: int, d: int) -> Path:
    path = folder / "acts.npy"
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n_rows, d))
    rng = np.random.default_rng(0)
    for lo in range(0, n_rows, 65536):
        rows[lo : lo + 65536] = rng.standard_normal((min(65536, n_rows - lo), d), dtype=np.float32)
    rows.flush()
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, default=Path("runs/full/activations/A/blocks.0.mlp.hook_post"))
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--train", action="store_true", help="time a training loop with and without prefetch")
    p.add_argument("--depths", type=int, nargs="+", default=[0, 2], help="prefetch depths (0: none)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--features", type=int, default=4096)
    p.add_argument("--buffer-rows", type=int, default=None, help="shuffle window in rows (default: 512 MB)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/activation_loader.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from monosemantic.runtime import tune_allocator

    tune_allocator()  # as the CLI does
    with tempfile.TemporaryDirectory() as tmp:
        path = args.activations
        if not path.exists():
            window = args.buffer_rows or (512 << 20) // (4 * 512)
            n_rows = max(2 * window, (args.batches + 2) * args.batch_size)
            path = _synthetic(Path(tmp), n_rows, 512)
            print(f"no store at {args.activations}: {n_rows:,} random float16 rows of d 512 in {path}")
        src = open_activations(path)
        result = train(src, args) if args.train else read_only(src, args.batches, args.batch_size)
    result["source"] = str(args.activations if args.activations.exists() else "synthetic float16 .npy")
    write_json(args.out, result)  # atomic, as every artifact


if __name__ == "__main__":
    main()
