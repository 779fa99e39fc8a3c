"""The demo's SAE ladder stage, one checkout of the code beside another, on the same activations.

    git worktree add --detach ../old 0cdaf33
    python benchmarks/ladder_stage.py --activations runs/default/activations/A/blocks.0.mlp.hook_post \\
        --code old=../old new=. --rounds 1 --out ladder_stage.json

Each run is `python -m monosemantic sae train --activations STORE --out TMP --preset default` with
PYTHONPATH pointing at that checkout's `src/` (so each uses its own code and its own default preset),
plus the `--flags` given for it (`--flags new="--l1-coeff 0.008"`), timed from spawn to exit. The
checkouts alternate within a round and their order flips between rounds. The table gives each
checkout's median seconds, its ratio to the first checkout, and the largest SAE's loss, MSE and L0
at the last logged step of its last run, from the trainer's own log.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import sae_process  # noqa: E402 (benchmarks/ is not a package)

from monosemantic.io import write_json  # noqa: E402

LAST_LOG = re.compile(r"step (\d+) sae (\d+): loss ([\d.]+) mse ([\d.]+) l1 [\d.]+ l0 ([\d.]+)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"ladder_stage.py: {what} {item!r} is not NAME=VALUE")
        out[name] = value
    return out


def run_stage(code: Path, store: Path, flags: list[str], work: Path) -> dict:
    """One `sae train` of the default preset's ladder with the code of `code`; seconds and the end of its log."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        cmd = [sys.executable, "-m", "monosemantic", "sae", "train", "--activations", str(store), "--out", tmp]
        cmd += ["--preset", "default", "--no-progress", *flags]
        wall, log = sae_process.timed(cmd, env={"PYTHONPATH": str(code.resolve() / "src")})
    last: dict[int, tuple] = {}
    for m in LAST_LOG.finditer(log):
        last[int(m.group(2))] = (int(m.group(1)), float(m.group(3)), float(m.group(4)), float(m.group(5)))
    step, loss, mse, l0 = last[max(last)] if last else (0, float("nan"), float("nan"), float("nan"))
    return {"wall_s": wall, "last_step": step, "loss": loss, "mse": mse, "l0": l0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, required=True, help="harvested store the ladder trains on")
    p.add_argument("--code", nargs="+", required=True, help="NAME=CHECKOUT, the first is the baseline")
    p.add_argument("--flags", nargs="*", default=[], help='NAME="extra sae train flags" for one checkout')
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ladder_stage.json"))
    args = p.parse_args()
    codes, flags = _pairs(args.code, "--code"), _pairs(args.flags, "--flags")
    args.work.mkdir(parents=True, exist_ok=True)
    runs = []
    for rnd in range(args.rounds):
        for name in list(codes) if rnd % 2 == 0 else list(codes)[::-1]:
            r = run_stage(Path(codes[name]), args.activations, flags.get(name, "").split(), args.work)
            r.update(name=name, round=rnd, load=os.getloadavg()[0])
            runs.append(r)
            end = f"loss {r['loss']:.4f} MSE {r['mse']:.4f} L0 {r['l0']:.2f}"
            print(f"round {rnd} {name:<10s} {r['wall_s']:7.1f} s  at step {r['last_step']}: {end}", flush=True)
    base = statistics.median(r["wall_s"] for r in runs if r["name"] == next(iter(codes)))
    rows = []
    print("\n| code | flags | s | ratio | largest SAE: loss / MSE / L0 |\n|---|---|---|---|---|")
    for name in codes:
        rs = [r for r in runs if r["name"] == name]
        med = statistics.median(r["wall_s"] for r in rs)
        rows.append({"name": name, "flags": flags.get(name, ""), "median_s": med, "ratio": med / base})
        end = f"{rs[-1]['loss']:.4f} / {rs[-1]['mse']:.4f} / {rs[-1]['l0']:.2f}"
        print(f"| {name} | {flags.get(name, '')} | {med:.1f} | {med / base:.2f} | {end} |")
    write_json(args.out, {"activations": str(args.activations), "codes": codes, "runs": runs, "rows": rows})
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
