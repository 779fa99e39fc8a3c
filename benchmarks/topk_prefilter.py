"""The TopK pre-filter (`sparse_ops.topk_columns`) against plain `torch.topk`: selection alone and the whole step.

    python benchmarks/topk_prefilter.py [--features 4096 16384] [--dtypes float32 bfloat16] [--steps 10] [--threads 2]

For each size and encoder dtype (`matmul_dtype`), a TopK SAE (d_in 512, k 32, batch 4,096) takes
the sparse step (`sparse_step.sparse_gradients`) on the same batches, alternating step by step
between the plain top-k and the pre-filter, so both see the same load; then the selection alone
on the step's pre-activations, alternating the same way. Prints medians and ratios (plain / pre-
filter: above 1 means the pre-filter is faster) and writes JSON. Inputs: the harvested store at
`--activations` if there is one, else planted synthetic features (as `sae_vs_saelens.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from sae_bench_worker import BATCH, D_IN, load_batches

from monosemantic.io import write_json
from monosemantic.runtime import tune_allocator
from monosemantic.sae import sparse_ops as ops
from monosemantic.sae.sparse_step import sparse_gradients
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

K = 32


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(m: int, dtype: str, xs: list[torch.Tensor], steps: int) -> dict[str, float]:
    """Median ms of the step and of the selection, plain and pre-filtered, at m features with the
    encoder product in `dtype` (`matmul_dtype`; the top-k then ranks pre-activations of that dtype)."""
    sae = TopKSAE(TopKSAEConfig(d_in=D_IN, n_features=m, k=K), generator=torch.Generator().manual_seed(0))
    cfg = TopKTrainConfig(batch_size=BATCH)
    dead = torch.zeros(m, dtype=torch.bool)  # no AuxK: the selection is what differs
    fast = ops.topk_columns
    times: dict[str, list[float]] = {"step_plain": [], "step_prefilter": [], "select_plain": [], "select_prefilter": []}
    try:
        for i in range(steps + 1):  # step 0 warms up both
            x = xs[i % len(xs)]
            for name, impl in (("plain", ops.plain_topk_columns), ("prefilter", fast)):
                ops.topk_columns = impl  # topk_pattern looks it up at call time
                t = _timed(lambda: sparse_gradients(sae, cfg, x, 1, dead, dtype))  # noqa: B023
                if i:
                    times[f"step_{name}"].append(t)
    finally:
        ops.topk_columns = fast
    with torch.no_grad():
        dt = getattr(torch, dtype)
        pres = [((x - sae.b_dec).to(dt) @ sae.W_enc.to(dt)).add_(sae.b_enc.to(dt)) for x in xs[:3]]
    for i in range(steps + 1):
        for name, select in (("plain", ops.plain_topk_columns), ("prefilter", fast)):
            t0 = time.perf_counter()
            select(pres[i % len(pres)], K)
            if i:
                times[f"select_{name}"].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        **{f"{name}_ms": 1e3 * t for name, t in med.items()},
        "step_ratio": med["step_plain"] / med["step_prefilter"],
        "select_ratio": med["select_plain"] / med["select_prefilter"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", default="runs/full/activations/A/blocks.0.mlp.hook_post")
    p.add_argument("--features", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/topk_prefilter.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_allocator()  # as the CLI does
    xs, source = load_batches(args.activations, 3)
    load0 = os.getloadavg()[0]
    rows = {f"{m} {dt}": measure(m, dt, xs, args.steps) for m in args.features for dt in args.dtypes}
    load1 = os.getloadavg()[0]
    print(f"inputs: {source}; torch threads {torch.get_num_threads()}; load average {load0:.1f} → {load1:.1f}")
    print(
        "| features, encoder | step plain ms | step pre-filter ms | ratio | top-k plain ms | top-k pre-filter | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['step_plain_ms']:.0f} | {r['step_prefilter_ms']:.0f} | {r['step_ratio']:.2f}× "
            f"| {r['select_plain_ms']:.1f} | {r['select_prefilter_ms']:.1f} | {r['select_ratio']:.2f}× |"
        )
    out = {"source": source, "threads": torch.get_num_threads(), "load_average": [load0, load1], "k": K, "rows": rows}
    write_json(args.out, out)  # atomic, as every artifact


if __name__ == "__main__":
    main()
