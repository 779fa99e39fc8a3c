"""Resampling's scoring pass (paper.md §4): per-input loss of a trained SAE over 100 batches, three ways.

    python benchmarks/resample_scoring.py --sae runs/full/sae/A/blocks.0.mlp.hook_post/tm2023-4096

`dense` is `per_example_loss(x, *sae(x))` (what resampling did before 2026-12-06); `sparse-float32`
and `sparse-bfloat16` are `resample.resample_losses` (decoder over the active features; bfloat16 picks
the active set and recomputes its values in float32). Same inputs for all three, methods
alternated, median over rounds; also the largest relative loss difference against `dense`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from monosemantic.activations.store import open_activations
from monosemantic.io import write_json
from monosemantic.sae.loss import per_example_loss
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.resample import resample_losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", type=Path, required=True)
    p.add_argument("--activations", type=Path, default=Path("runs/full/activations/A/blocks.0.mlp.hook_post"))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/resample_scoring.json"))
    args = p.parse_args()

    sae = SparseAutoencoder.load(args.sae).eval()
    acts = open_activations(args.activations)
    it = acts.batches(args.batch_size, seed=1)
    xs = [next(it).float() for _ in range(args.batches)]
    l1 = 0.008
    methods = {
        "dense": lambda x: per_example_loss(x, *sae(x), l1),
        "sparse-float32": lambda x: resample_losses(sae, x, l1, "float32"),
        "sparse-bfloat16": lambda x: resample_losses(sae, x, l1, "bfloat16"),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    losses: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                losses[name] = torch.cat([fn(x) for x in xs])
                times[name].append(time.perf_counter() - t0)
    ref = losses["dense"]
    rows = []
    print(f"{args.sae.name}: {args.batches} × {args.batch_size} inputs, load {os.getloadavg()[0]:.1f}")
    print("| method | median s | ratio to dense | max relative loss difference |")
    print("|---|---|---|---|")
    for name in methods:
        med = statistics.median(times[name])
        diff = float(((losses[name] - ref).abs() / ref.abs().clamp(min=1e-12)).max())
        rows.append({"method": name, "median_s": med, "times": times[name], "max_rel_diff": diff})
        print(f"| {name} | {med:.2f} | {statistics.median(times['dense']) / med:.2f}× | {diff:.1e} |")
    write_json(args.out, {"sae": str(args.sae), "rows": rows})  # atomic, as every artifact


if __name__ == "__main__":
    main()
