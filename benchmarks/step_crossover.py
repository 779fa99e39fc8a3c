"""Where the sparse training step stops paying: dense vs sparse step time against L0.

    python benchmarks/step_crossover.py [--features 512 1024 4096 16384] [--fractions 0.0078125 ... 0.25]
    python benchmarks/step_crossover.py --dense-dtype bfloat16   # the dense step as `dtype: auto` runs it

`step="auto"` trains dense while L0 is above `sparse_step.SPARSE_L0_FRACTION` of the features and
sparse below it. This measures that crossover: for each dictionary size and each target fraction of
features firing per input (set through b_enc by `sae_bench_worker.fire_on`, as `sae_vs_saelens.py`'s
sparse start does), the time of one paper-recipe gradient step (loss, backward, every `.grad`; no
Adam) by the dense autograd step and by the sparse step with the float32 and the bfloat16 active
set. The variants alternate step by step in one process (the machine is noisy) and the table gives
medians and the ratio dense / sparse (above 1: sparse is faster). Batch 4,096, d_in 512, synthetic inputs (ReLU of
Gaussians: the cost depends on L0, not on what the features mean). Writes JSON
(benchmarks/results/step_crossover.json). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from sae_bench_worker import fire_on

from monosemantic.io import write_json
from monosemantic.runtime import tune_allocator
from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.sae.sparse_step import SPARSE_L0_FRACTION, dense_gradients, sparse_gradients
from monosemantic.sae.train import SAETrainConfig

BATCH, D_IN = 4096, 512


def sae_at(m: int, fraction: float, x: torch.Tensor) -> SparseAutoencoder:
    """A paper-recipe SAE whose features each fire on about `fraction` of the inputs `x`."""
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(D_IN, m))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    fire_on(sae, x, fraction)
    return sae


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, nargs="+", default=[512, 1024, 4096, 16384])
    p.add_argument("--fractions", type=float, nargs="+", default=[1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4])
    p.add_argument("--steps", type=int, default=7, help="timed steps per variant (after one warm-up)")
    p.add_argument("--dense-dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the dense step's compute dtype (bfloat16: under autocast, as the default preset's dtype auto "
                   "runs it where bfloat16 is native)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/step_crossover.json"))
    args = p.parse_args()
    tune_allocator()  # as the CLI does
    torch.manual_seed(0)
    x = torch.randn(BATCH, D_IN).relu_()
    cfg = SAETrainConfig(l1_coeff=0.008, batch_size=BATCH)
    variants = {
        "dense": lambda sae, dead: dense_gradients(sae, cfg, x, 1, dead, args.dense_dtype),
        "sparse float32": lambda sae, dead: sparse_gradients(sae, cfg, x, 1, dead, "float32"),
        "sparse bfloat16": lambda sae, dead: sparse_gradients(sae, cfg, x, 1, dead, "bfloat16"),
    }
    rows = []
    print(f"auto's switch: sparse below L0 = n_features × {SPARSE_L0_FRACTION:g}")
    print(
        f"{'features':>8} {'fraction':>8} {'L0':>7} {'dense ms':>9} {'sparse f32':>10} {'sparse bf16':>11} "
        f"{'f32 ×':>6} {'bf16 ×':>6}"
    )
    for m in args.features:
        dead = torch.zeros(m, dtype=torch.bool)
        for fraction in args.fractions:
            sae = sae_at(m, fraction, x)
            with torch.no_grad():
                l0 = float(((x - sae.b_dec) @ sae.W_enc + sae.b_enc > 0).sum(1).float().mean())
            times: dict[str, list[float]] = {k: [] for k in variants}
            for i in range(args.steps + 1):
                for name, step in variants.items():  # alternate, so load drift hits every variant alike
                    t0 = time.perf_counter()
                    step(sae, dead)
                    if i:
                        times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            row = {"features": m, "fraction": fraction, "l0": l0, "ms": med}
            row["speedup"] = {k: med["dense"] / med[k] for k in med if k != "dense"}
            rows.append(row)
            print(
                f"{m:>8} {fraction:>8.4f} {l0:>7.0f} {med['dense']:>9.0f} {med['sparse float32']:>10.0f} "
                f"{med['sparse bfloat16']:>11.0f} {row['speedup']['sparse float32']:>6.2f} "
                f"{row['speedup']['sparse bfloat16']:>6.2f}"
            )
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "batch": BATCH, "d_in": D_IN, "threads": torch.get_num_threads(),
            "dense_dtype": args.dense_dtype}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"meta": meta, "switch_fraction": SPARSE_L0_FRACTION, "rows": rows})


if __name__ == "__main__":
    main()
