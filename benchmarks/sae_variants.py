"""Whole `sae train` runs of one dictionary under several flag sets and seeds: time, FVU, L0, dead.

    python benchmarks/sae_variants.py --activations runs/default/activations/A/blocks.0.mlp.hook_post \\
        --variants "" "--resample-inputs-per-dead 32" --seeds 0 1 2 --out variants.json

Each run is `monosemantic sae train --activations train.npy --preset default --n-features M --n-steps S
--seed K --init-seed K` plus the variant's flags, timed from spawn to exit (`sae_process.run_ours`), on
the rows `sae_process.prepare` writes (the same as `sae_vs_saelens.py --start process`). Runs go
seed by seed, the variants alternating within each seed and their order flipping between seeds, so
drift in the machine's speed falls on both. Scored on the held-out rows no run trains on: FVU, L0
and dead (the share of features that never fire on them). A speed option earns a default only if
its medians stay within 1 % of FVU and L0 and its dead share within the seeds' spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import sae_process  # noqa: E402 (benchmarks/ is not a package)

from monosemantic.io import write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activations", type=Path, required=True, help="harvested store of the demo's model A")
    p.add_argument("--variants", nargs="+", default=["", "--resample-inputs-per-dead 32"], help="flag sets")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--features", type=int, default=4096)
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--work", type=Path, default=Path("benchmarks/results/process"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sae_variants.json"))
    args = p.parse_args()

    train, held = sae_process.prepare(str(args.activations), args.steps * sae_process.BATCH, args.work)
    runs = []
    for i, seed in enumerate(args.seeds):
        order = args.variants if i % 2 == 0 else args.variants[::-1]
        for flags in order:
            extra = [*flags.split(), "--seed", str(seed), "--init-seed", str(seed)]
            with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                r = sae_process.run_ours(train, held, args.features, args.steps, extra, Path(tmp))
            r.update(variant=flags, seed=seed, load=os.getloadavg()[0])
            runs.append(r)
            print(
                f"seed {seed} {flags or '(default)':<40s} {r['wall_s']:7.1f} s  FVU {r['fvu']:.4f}  "
                f"L0 {r['l0']:.2f}  dead {r['dead']:.1%}  (load {r['load']:.1f})",
                flush=True,
            )
    rows = []
    print("\n| flags | s | FVU | L0 | dead (each seed) |\n|---|---|---|---|---|")
    for flags in args.variants:
        rs = [r for r in runs if r["variant"] == flags]
        med = {q: statistics.median(r[q] for r in rs) for q in ("wall_s", "fvu", "l0", "dead")}
        rows.append({"variant": flags, "median": med, "dead": [r["dead"] for r in rs]})
        dead = ", ".join(f"{r['dead']:.1%}" for r in rs)
        print(f"| {flags or '(default)'} | {med['wall_s']:.1f} | {med['fvu']:.4f} | {med['l0']:.2f} | {dead} |")
    write_json(args.out, {"features": args.features, "steps": args.steps, "runs": runs, "rows": rows})
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
