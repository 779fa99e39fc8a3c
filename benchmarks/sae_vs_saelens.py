"""SAE training side by side with SAELens: activations/s, loss after equal steps, peak memory, matmul peak.

    python benchmarks/sae_vs_saelens.py                                   # the table in docs/benchmarks.md
    python benchmarks/sae_vs_saelens.py --features 4096 --recipes paper topk --steps 12 --rounds 2

Every measurement is one fresh subprocess (`--worker`), so each gets the allocator it would get by
default (ours: `runtime.tune_allocator()`, which the CLI applies at start-up; SAELens: glibc's) and
its own peak RSS; with `--tcmalloc` every pair is also run with tcmalloc preloaded. The parent
alternates the two tools pair by pair and round by round (the machine is shared) and reports
medians over rounds and the ratio.

Both tools train the same SAE shape on the same batches of harvested activations (the first
`warmup + steps` batches of `--activations`, scaled once so that E‖x‖ = √d_in) from the same
initial weights, copied into SAELens's SAE. Two starts:

- `sparse` (steady state): our init with b_dec at the geometric median of the first batch and, for
  the L1 recipes, each b_enc set so the feature fires on ~32 of `n_features` inputs of the first
  batch: L0 ≈ 32 from step 1, the regime a trained dictionary is in for most of its run;
- `init` (a whole run): the recipe's own init, so the dense early phase (L0 in the hundreds) counts;
  `--steps` then sets the run length.

Recipes ([ours] vs [SAELens]): `paper` tm2023 (λ 0.008 on the mean MSE, lr 1e-3: the demo's) vs
`standard` with apply_b_dec_to_input and l1 = d_in·λ; `april` April 2024 vs `standard` with its
April settings (the same recipe); `topk` TopK k=32 vs `topk` k=32;
`topk-clip` and `paper-clip` the same with our gradient clipped as SAELens's trainer always clips
its own (norm 1 on its loss; 1 / d_in on the paper recipe's mean MSE); `batchtopk` BatchTopK k=32
(Bussmann et al.'s lr 3e-4, β2 0.99 for ours; SAELens's BatchTopK trainer with its defaults and lr
3e-4); `jumprelu` JumpReLU with Gemma Scope's STE, λ 0.05 on unit-norm inputs (ours rescales them,
SAELens gets λ·d_in, θ₀ and ε × √d_in on the same √d_in-scaled data), β1 0 and lr 1e-3 in both, no
warm-ups.
Both starts set b_dec to the geometric median of the first batch before the copy, so the two
tools start equal (SAELens's trainer has no data init). Activations/s is the median over steps
after warm-up of the time between successive batch fetches (`init`: steps × batch over the
training wall time). MSE (mean over elements) and L0 are measured on 4 held-out batches with each tool's final weights.

Without `--activations` (a fresh clone has no harvested store) the batches are planted sparse
features (`sae/synthetic.py`) in d_in = 512.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from monosemantic.io import write_json

DEFAULT_STORE = Path("runs/full/activations/A/blocks.0.mlp.hook_post")
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
BATCH = 4096


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, default=DEFAULT_STORE, help="harvested store (synthetic if missing)")
    p.add_argument("--features", type=int, nargs="+", default=[4096, 16384])
    recipes = ["paper", "paper-clip", "topk", "topk-clip", "april", "batchtopk", "jumprelu"]
    p.add_argument("--recipes", nargs="+", default=["paper", "topk", "april"], choices=recipes)
    p.add_argument("--start", choices=["sparse", "init", "process"], default="sparse")
    p.add_argument(
        "--ours-flags",
        default="",
        help="--start process: extra `sae train` flags for ours, one string (e.g. '--b-enc-init sparse')",
    )
    p.add_argument("--work", type=Path, default=Path("benchmarks/results/process"), help="--start process: data")
    p.add_argument(
        "--tune-runs",
        type=int,
        default=4,
        help="--start process: at most this many SAELens runs to bring its L0 within 20 %% of ours (the closest "
        "is kept, and the table shows both L0s)",
    )
    p.add_argument(
        "--saelens-l1",
        nargs="+",
        default=[],
        metavar="FEATURES=L1",
        help="--start process: SAELens's first L1 coefficient for that size (e.g. 16384=6.1; default d_in × 0.008), "
        "where an earlier run has shown where its L0 lies; tuning goes on from there",
    )
    p.add_argument("--steps", type=int, default=10, help="measured steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--matmul-dtype",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16", "dense"],
        help="our encoder product's dtype(s) (`matmul_dtype`); each is one more run of ours. `dense`: our "
        "plain autograd step in float32 (`step='dense'`), the reference the fast paths are checked against",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads in both tools (default: torch's)")
    p.add_argument("--device", default="cpu", help="where both tools train (cpu, cuda): one card for both")
    p.add_argument("--tcmalloc", action="store_true", help="also run every pair with tcmalloc preloaded")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sae_vs_saelens.json"))
    p.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        from sae_bench_worker import run_worker  # noqa: PLC0415 (benchmarks/ is on sys.path)

        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return

    if args.start == "process":
        whole_process(args)
        return
    from sae_bench_worker import matmul_peaks  # noqa: PLC0415

    t_start = time.time()
    peaks = matmul_peaks(args.device)
    print(f"matmul peak on this machine: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f}")
    print(f"load average at start: {os.getloadavg()}", flush=True)
    allocs = ["default", "tcmalloc"] if args.tcmalloc else ["default"]
    results: list[dict] = []
    for rnd in range(args.rounds):
        for n_features in args.features:
            for recipe in args.recipes:
                for alloc in allocs:
                    ours = [f"ours:{d}" for d in args.matmul_dtype]
                    tools = ["saelens", *ours] if rnd % 2 == 0 else [*ours, "saelens"]
                    for tool in tools:
                        spec = {
                            "tool": tool.split(":")[0],
                            "recipe": recipe,
                            "n_features": n_features,
                            "steps": args.steps,
                            "warmup": args.warmup,
                            "start": args.start,
                            "alloc": alloc,
                            "activations": str(args.activations),
                            "matmul_dtype": tool.split(":")[1] if ":" in tool else "float32",
                            "threads": args.threads,
                            "device": args.device,
                        }
                        r = _spawn(spec)
                        r.update(spec, round=rnd, load=os.getloadavg()[0])
                        # a whole run's throughput: every step (warm-up included) over the training wall time
                        r["run_act_per_s"] = (args.warmup + args.steps) * BATCH / r["wall_s"]
                        results.append(r)
                        print(_one_line(r), flush=True)
    rows = _table(results, peaks, whole_run=args.start == "init")
    write_json(args.out, {"peaks": peaks, "runs": results, "rows": rows})  # atomic, as every artifact
    print(f"\nwall {time.time() - t_start:.0f} s; load average at end: {os.getloadavg()}; JSON: {args.out}")


def whole_process(args: argparse.Namespace) -> None:
    """`--start process`: each tool's command from spawn to saved weights, alternating, medians over rounds.

    SAELens's L1 coefficient is tuned in round 0 (at most `--tune-runs` runs, default 4, a secant step on log L0
    against log λ from d_in · 0.008, the paper recipe's λ on its summed MSE, or from `--saelens-l1`) until its
    held-out L0 is within 20 % of ours; the tuning runs are kept in the JSON. Both are scored on the same held-out
    rows.
    """
    import math
    import tempfile

    import sae_process  # noqa: PLC0415 (benchmarks/ is on sys.path)

    steps = args.steps
    train, held = sae_process.prepare(str(args.activations), steps * BATCH, args.work)
    print(f"data: {train} ({steps} steps of {BATCH}), held out {held}; load {os.getloadavg()}", flush=True)
    flags = args.ours_flags.split()
    d_in = int(__import__("numpy").load(train, mmap_mode="r").shape[1])
    runs: list[dict] = []
    l1: dict[int, float] = {}
    try:
        first_l1 = {int(m): float(v) for m, v in (a.split("=") for a in args.saelens_l1)}
    except ValueError:
        raise SystemExit(f"--saelens-l1: expected FEATURES=L1 pairs, got {' '.join(args.saelens_l1)}") from None
    for rnd in range(args.rounds):
        for m in args.features:
            for tool in ("ours", "saelens") if rnd % 2 == 0 else ("saelens", "ours"):
                with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                    if tool == "ours":
                        r = sae_process.run_ours(train, held, m, steps, flags, Path(tmp))
                    elif m in l1:
                        r = sae_process.run_saelens(train, held, m, steps, l1[m], Path(tmp))
                    else:  # tune λ against our L0 of this round
                        target = next(x["l0"] for x in reversed(runs) if x["tool"] == "ours" and x["m"] == m)
                        lam, tried = first_l1.get(m, d_in * 0.008), []
                        for _ in range(args.tune_runs):
                            r = sae_process.run_saelens(train, held, m, steps, lam, Path(tmp))
                            tried.append(r)
                            print(f"  tuning SAELens m={m}: λ {lam:.4g} → L0 {r['l0']:.1f} (ours {target:.1f})")
                            if abs(r["l0"] / target - 1) <= 0.2:
                                break
                            slope = -1.0
                            if len(tried) > 1 and tried[-2]["l0"] != r["l0"]:
                                a, b = tried[-2], r
                                slope = (math.log(b["l0"]) - math.log(a["l0"])) / math.log(
                                    b["l1_coefficient"] / a["l1_coefficient"]
                                )
                                slope = min(slope, -0.2)
                            lam *= math.exp((math.log(target) - math.log(r["l0"])) / slope)
                        r = min(tried, key=lambda t: abs(math.log(t["l0"] / target)))
                        l1[m] = r["l1_coefficient"]
                        r = {**r, "tuning": tried}
                r.update(tool=tool, m=m, round=rnd, load=os.getloadavg()[0])
                runs.append(r)
                print(
                    f"round {rnd} {tool:8s} m={m:<6d} {r['wall_s']:7.1f} s  FVU {r['fvu']:.4f}  L0 {r['l0']:.1f}"
                    f"  (load {r['load']:.1f})",
                    flush=True,
                )
    rows = []
    print("\n| m | SAELens s | ours s | ratio | SAELens FVU / L0 (λ) | ours FVU / L0 |\n|---|---|---|---|---|---|")
    for m in args.features:
        s = [r for r in runs if r["m"] == m and r["tool"] == "saelens"]
        o = [r for r in runs if r["m"] == m and r["tool"] == "ours"]
        med = {
            k: {q: statistics.median(r[q] for r in rs) for q in ("wall_s", "fvu", "l0")}
            for k, rs in (("s", s), ("o", o))
        }
        ratio = med["s"]["wall_s"] / med["o"]["wall_s"]
        rows.append({"n_features": m, "saelens": med["s"], "ours": med["o"], "ratio": ratio, "saelens_l1": l1[m]})
        print(
            f"| {m} | {med['s']['wall_s']:.0f} | {med['o']['wall_s']:.0f} | **{ratio:.2f}×** | "
            f"{med['s']['fvu']:.4f} / {med['s']['l0']:.1f} ({l1[m]:.3g}) | "
            f"{med['o']['fvu']:.4f} / {med['o']['l0']:.1f} |"
        )
    write_json(args.out, {"mode": "process", "steps": steps, "ours_flags": flags, "runs": runs, "rows": rows})
    print(f"JSON: {args.out}")


def _spawn(spec: dict) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    if spec["alloc"] == "tcmalloc":
        env["LD_PRELOAD"] = TCMALLOC
    if spec["tool"] == "saelens" or spec["alloc"] == "tcmalloc":
        env["MONOSEMANTIC_DEFAULT_MALLOC"] = "1"  # SAELens gets glibc's defaults; tcmalloc replaces malloc
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker failed: {spec}\n{out.stderr[-3000:]}")


def _one_line(r: dict) -> str:
    return (
        f"round {r['round']} {r['tool']:8s} {r['matmul_dtype']:8s} {r['recipe']:10s} m={r['n_features']:<6d} "
        f"{r['alloc']:8s} "
        f"{r['act_per_s']:8.0f} act/s  mse {r['mse']:.4f}  L0 {r['l0']:.1f}  peak {r['peak_mib']:.0f} MiB  "
        f"(load {r['load']:.1f})"
    )


def _table(results: list[dict], peaks: dict, whole_run: bool = False) -> list[dict]:
    """Medians over rounds per (m, recipe, allocator, our dtype), against the same SAELens runs.

    With `whole_run` (`--start init`) activations/s is the whole run's (steps × batch / training
    wall time, the dense early phase and our switch to the sparse step included), not the median step.
    """
    from sae_bench_worker import PAPER_L1  # noqa: PLC0415

    rows, objectives = [], []
    keys = sorted({(r["n_features"], r["recipe"], r["alloc"]) for r in results})
    print(
        "\n| m | recipe | allocator | ours: encoder dtype | SAELens act/s | ours act/s | ratio | "
        "SAELens MSE / L0 | ours MSE / L0 | peak MiB (SAELens / ours) | % of fp32 peak (SAELens / ours) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, recipe, alloc in keys:
        same = [r for r in results if (r["n_features"], r["recipe"], r["alloc"]) == (m, recipe, alloc)]
        s = _summary([r for r in same if r["tool"] == "saelens"], m, peaks, whole_run)
        for dtype in sorted({r["matmul_dtype"] for r in same if r["tool"] == "ours"}, reverse=True):
            o = _summary([r for r in same if r["tool"] == "ours" and r["matmul_dtype"] == dtype], m, peaks, whole_run)
            ratio = o["act_per_s"] / s["act_per_s"]
            rows.append(
                {
                    "n_features": m,
                    "recipe": recipe,
                    "alloc": alloc,
                    "matmul_dtype": dtype,
                    "saelens": s,
                    "ours": o,
                    "ratio": ratio,
                }
            )
            print(
                f"| {m} | {recipe} | {alloc} | {dtype} | {s['act_per_s']:,.0f} | {o['act_per_s']:,.0f} | "
                f"**{ratio:.2f}×** | {s['mse']:.4f} / {s['l0']:.1f} | {o['mse']:.4f} / {o['l0']:.1f} | "
                f"{s['peak_mib']:,.0f} / {o['peak_mib']:,.0f} | "
                f"{100 * s['peak_fraction']:.0f} % / {100 * o['peak_fraction']:.0f} % |"
            )
            if recipe.startswith("paper") and "l1" in s and "l1" in o:  # the objective both tools minimise
                obj = {k: v["mse"] + PAPER_L1 * v["l1"] for k, v in (("saelens", s), ("ours", o))}
                rows[-1]["objective"] = obj
                objectives.append(
                    f"m={m} {dtype}: SAELens {obj['saelens']:.4f} (l1 {s['l1']:.2f}), "
                    f"ours {obj['ours']:.4f} (l1 {o['l1']:.2f}): {100 * (obj['ours'] / obj['saelens'] - 1):+.2f} %"
                )
    if objectives:
        print(f"\nHeld-out objective MSE + λ·Σ f_i‖W_dec,i‖ (λ = {PAPER_L1}, the paper recipe's loss in both tools):")
        print("\n".join(objectives))
    return rows


def _summary(runs: list[dict], m: int, peaks: dict, whole_run: bool = False) -> dict:
    act = statistics.median(r["run_act_per_s" if whole_run else "act_per_s"] for r in runs)
    out = {
        "act_per_s": act,
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "mse": statistics.median(r["mse"] for r in runs),
        "l0": statistics.median(r["l0"] for r in runs),
        "peak_mib": max(r["peak_mib"] for r in runs),
        # dense-equivalent work: 6 products of batch × d_in × m multiply-adds per step
        "peak_fraction": 6 * 2 * 512 * m * act / (peaks["float32"] * 1e9),
    }
    if all("l1" in r for r in runs):
        out["l1"] = statistics.median(r["l1"] for r in runs)
    return out


if __name__ == "__main__":
    main()
