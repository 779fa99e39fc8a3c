"""Step by step through one `monosemantic sae train` run: which path each step took, its L0 and its seconds.

    python benchmarks/step_trace.py --activations TRAIN.npy -- --n-features 16384 --n-steps 700
    PYTHONPATH=../old/src python benchmarks/step_trace.py --activations TRAIN.npy --out old.json -- ...

Runs the CLI's `sae train --activations STORE --out TMP --preset default` in this process (flags after
`--` are passed on) with a timer around `Stepper.gradients`, the dense or sparse gradient computation of
one SAE's step (sparse_step.py), and records each call: step, path (the one the step took), L0 of the
batch, seconds. Prints the totals per path and the steps around each resampling (where L0 jumps and
`auto` goes dense), and writes every call to JSON. Counting L0 adds one pass over the activations to
each step, so compare the totals of two traces, not a trace with an untraced run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from monosemantic.cli import main as cli_main
from monosemantic.io import write_json
from monosemantic.sae import sparse_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activations", type=Path, required=True, help="a harvested store or a [rows, d_in] .npy")
    p.add_argument("--preset", default="default")
    p.add_argument("--around", type=int, default=6, help="steps shown after each resampling")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/step_trace.json"))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="after --: more `sae train` flags")
    args = p.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    calls: list[dict] = []
    gradients = sparse_step.Stepper.gradients

    def traced(self, sae, cfg, x, step, dead):  # type: ignore[no-untyped-def]
        path = "sparse" if self.sparse else "dense"
        t0 = time.perf_counter()
        terms = gradients(self, sae, cfg, x, step, dead)
        seconds = time.perf_counter() - t0
        f = terms.f
        active = int((f.values() > 0).sum()) if f.layout == torch.sparse_csr else int((f > 0).sum())
        calls.append({"step": step, "path": path, "l0": active / x.shape[0], "seconds": seconds})
        return terms

    sparse_step.Stepper.gradients = traced  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["sae", "train", "--activations", str(args.activations), "--out", tmp, "--preset", args.preset]
        code = cli_main([*argv, "--no-progress", "--force", *rest])
    if code:
        sys.exit(code)
    print("| path | steps | seconds |\n|---|---|---|")
    for path in ("dense", "sparse"):
        mine = [c for c in calls if c["path"] == path]
        print(f"| {path} | {len(mine)} | {sum(c['seconds'] for c in mine):.1f} |")
    print(f"| all | {len(calls)} | {sum(c['seconds'] for c in calls):.1f} |")
    jumps = [i for i in range(1, len(calls)) if calls[i]["l0"] > 4 * max(calls[i - 1]["l0"], 1.0)]
    for i in jumps:
        row = ", ".join(f"{c['path'][0]} {c['l0']:.0f} {c['seconds']:.2f}s" for c in calls[i : i + args.around])
        print(f"step {calls[i]['step']}: {row}")
    write_json(args.out, {"argv": sys.argv[1:], "calls": calls})
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
