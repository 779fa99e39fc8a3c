"""Pinned sampling (paper.md §8.5): the cached sampler against re-running the whole window at every step.

    python benchmarks/pinned_sampling.py [--run runs/full] [--sae tm2023-4096] [--features 255]

What `features build` does per batch of 85 features x 3 samples (`ablation.pin_dictionary`):
24 tokens after the paper's prompt, each feature pinned at a value. `plain` is
`pinned.sample(..., cache=False)` (the path before 2026-12-06), `cached` is `pinned.sample` (keys and values
cached, one token per step). Same uniforms for both, methods alternated, median over rounds; also
how many sequences differ (float rounding can move a draw whose uniform sits at a CDF boundary).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

import torch

from monosemantic.analyses import pinned
from monosemantic.analyses.ablation import prompt_ids
from monosemantic.analyses.loader import Dictionary
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.io import write_json
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/full"))
    p.add_argument("--sae", default="tm2023-4096")
    p.add_argument("--features", type=int, default=255, help="features per batch (3 samples each)")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/pinned_sampling.json"))
    args = p.parse_args()

    model = load_transformer(args.run / "transformer/A").eval()
    sae = SparseAutoencoder.load(args.run / f"sae/A/{hooks.MLP_POST}/{args.sae}").eval()
    d = Dictionary(1, args.sae, "sae", sae.cfg.n_features, sae.encode, sae.W_dec.detach())
    prompt = prompt_ids(load_tokenizer(args.run / "tokenizer/tokenizer.json"), "1,2,3,4,5,6,7,8,9,10")
    n_samples, n_new, per_batch = 3, 24, args.features // 3
    jobs = []
    for b in range(args.batches):
        feats = torch.arange(b * per_batch, (b + 1) * per_batch)
        u = torch.cat([pinned.uniforms(0, int(f), n_samples, n_new) for f in feats])
        f3 = feats.repeat_interleave(n_samples)
        jobs.append((u, pinned.pin_edit(d, f3, torch.full((len(f3),), 10.0), last_only=True)))
    methods = {"plain": functools.partial(pinned.sample, cache=False), "cached": pinned.sample}
    times: dict[str, list[float]] = {m: [] for m in methods}
    outs: dict[str, list[torch.Tensor]] = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            outs[name] = [fn(model, prompt, u, 1.0, edit) for u, edit in jobs]
            times[name].append(time.perf_counter() - t0)
    # float rounding may move a draw whose uniform lies within ~1e-7 of a CDF boundary
    differ = sum(int((a != b).any(1).sum()) for a, b in zip(outs["plain"], outs["cached"], strict=True))
    n_seq = args.batches * per_batch * n_samples
    base = statistics.median(times["plain"])
    load = os.getloadavg()[0]
    print(f"{args.sae}: {n_seq} sequences x {n_new} tokens, load {load:.1f}; sequences that differ: {differ}")
    print("| method | median s | sequences/s | speed-up |")
    print("|---|---|---|---|")
    rows = []
    for name in methods:
        med = statistics.median(times[name])
        rows.append({"method": name, "median_s": med, "sequences_per_s": n_seq / med, "speedup": base / med})
        print(f"| {name} | {med:.2f} | {n_seq / med:.0f} | {base / med:.2f}x |")
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "sae": args.sae, "sequences": n_seq}
    write_json(args.out, {"meta": meta, "sequences_that_differ": differ, "rows": rows})


if __name__ == "__main__":
    main()
