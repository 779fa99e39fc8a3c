"""The paper recipe's dense step by hand against autograd: time and agreement.

    python benchmarks/dense_step.py [--features 512 1024 2048 4096 16384] [--fraction 0.25] [--steps 7]

The dense step runs while L0 is above the sparse step's switch (the first ~70 steps of a run, and
after a resampling that renews many features). For each dictionary size and compute dtype, one
gradient step of the 2023 recipe (loss, backward, every `.grad`; no Adam) by autograd
(`dense_gradients(..., by_hand=False)`, under autocast for bfloat16) and by hand (`_dense_by_hand`,
the default), alternating step by step in one process; features fire on `--fraction` of the inputs
(`step_crossover.sae_at`: set through b_enc). Prints medians, the ratio autograd / by hand, and the
largest relative difference of a gradient (‖by hand − autograd‖ / ‖autograd‖ over W_enc, b_enc,
W_dec, b_dec); writes JSON (benchmarks/results/dense_step.json). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from step_crossover import BATCH, D_IN, sae_at

from monosemantic.io import write_json
from monosemantic.runtime import tune_allocator
from monosemantic.sae.sparse_step import dense_gradients
from monosemantic.sae.train import SAETrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, nargs="+", default=[512, 1024, 2048, 4096, 16384])
    p.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    p.add_argument("--fraction", type=float, default=0.25, help="share of the inputs each feature fires on")
    p.add_argument("--steps", type=int, default=7, help="timed steps per variant (after one warm-up)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/dense_step.json"))
    args = p.parse_args()
    tune_allocator()  # as the CLI does
    torch.manual_seed(0)
    x = torch.randn(BATCH, D_IN).relu_()
    cfg = SAETrainConfig(l1_coeff=0.008, batch_size=BATCH)
    rows = []
    print(f"{'features':>8} {'dtype':>9} {'autograd ms':>11} {'by hand ms':>10} {'ratio':>6} {'grad diff':>9}")
    for m in args.features:
        sae = sae_at(m, args.fraction, x)
        dead = torch.zeros(m, dtype=torch.bool)
        for dtype in args.dtypes:
            grads, times = {}, {False: [], True: []}
            for i in range(args.steps + 1):
                for by_hand in (False, True):  # alternate, so load drift hits both alike
                    t0 = time.perf_counter()
                    dense_gradients(sae, cfg, x, 1, dead, dtype, by_hand=by_hand)
                    times[by_hand].append(time.perf_counter() - t0)
                    if not i:
                        grads[by_hand] = [q.grad.clone() for q in sae.parameters() if q.grad is not None]
            diff = max(float((a - b).norm() / b.norm()) for a, b in zip(grads[True], grads[False], strict=True))
            ms = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
            row = {"features": m, "dtype": dtype, "autograd_ms": ms[False], "by_hand_ms": ms[True],
                   "ratio": ms[False] / ms[True], "grad_rel_diff": diff}  # fmt: skip
            rows.append(row)
            print(f"{m:>8} {dtype:>9} {ms[False]:>11.1f} {ms[True]:>10.1f} {row['ratio']:>6.2f} {diff:>9.1e}")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "batch": BATCH, "d_in": D_IN, "fraction": args.fraction,
            "threads": torch.get_num_threads()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
