"""λ sweep of the paper's SAE on a run's harvested activations: L0, FVU, dead and loss recovered.

    python benchmarks/l1_sweep.py --run runs/demo --n-features 4096 --l1 0.004,0.008 --lr 1e-3 --steps 400
    python benchmarks/l1_sweep.py --run runs/full --l1 0.008 --steps 1708 --resampling 4:0.025:0.0125,9:0.1:0.05

`--resampling` sweeps the resampling schedule too: each `N:EVERY:WINDOW` resamples N times, every
EVERY of the run, with a dead window of WINDOW of the run (the paper's, scaled: 4:0.025:0.0125).
`--directions input,centered` sweeps the resampled features' new decoder direction: the raw input
x (the paper's words) or x − b_dec. `--max-grad-norm 0,0.002` sweeps gradient clipping (0: none,
the paper's; on our loss scale, where SAELens's clip at 1 is 1/512). The table's "spike" is the
largest rise of the logged training MSE (a mean over `--log-every` steps) over its lowest value so
far, as a ratio: resampling that destabilises training shows there (1: the MSE never rose).

Trains one SAE per (size, λ) on one shared pass over the activations (normalised inputs, as the
CLI's default preset does), then evaluates all of them on the same held-out tokens in one pass.
Prints a table and writes JSON (benchmarks/results/l1_sweep.json). Used to choose the demo's λ
(docs/decisions.md, 2026-11-25).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from monosemantic.activations.store import open_activations
from monosemantic.data.tokens import TokenStore
from monosemantic.eval.report import evaluate_saes
from monosemantic.io import write_json
from monosemantic.runtime import tune_allocator
from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.sae.train import SAETrainConfig, train_sae
from monosemantic.transformer.hooks import MLP_POST
from monosemantic.transformer.model import load_transformer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--model", default="A")
    p.add_argument("--n-features", default="4096")
    p.add_argument("--l1", default="0.004,0.008")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--resampling", default="4:0.025:0.0125", help="N:EVERY:WINDOW[,...] (see the docstring)")
    p.add_argument("--directions", default="input", help="input,centered: the resampled decoder direction(s)")
    p.add_argument("--max-grad-norm", default="0", help="0,0.002: gradient clipping norm(s) (0: no clipping)")
    p.add_argument("--log-every", type=int, default=0, help="steps per training log row (0: a quarter of the run)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/l1_sweep.json"))
    args = p.parse_args()
    tune_allocator()

    schedules = [tuple(float(v) for v in spec.split(":")) for spec in args.resampling.split(",")]
    keys = [
        (int(n), float(l1), sched, direction, float(clip))
        for n in args.n_features.split(",")
        for l1 in args.l1.split(",")
        for sched in schedules
        for direction in args.directions.split(",")
        for clip in args.max_grad_norm.split(",")
    ]
    acts = open_activations(args.run / "activations" / args.model / MLP_POST)
    cfgs = [
        SAETrainConfig(
            l1_coeff=l1,
            lr=args.lr,
            n_steps=args.steps,
            batch_size=args.batch,
            normalize_inputs=True,
            log_every=args.log_every or max(args.steps // 4, 1),
            resample_n_batches=25,
            n_resamples=int(sched[0]),
            resample_every_fraction=sched[1],
            dead_window_fraction=sched[2],
            resample_direction=direction,
            max_grad_norm=clip or None,
        )
        for _, l1, sched, direction, clip in keys
    ]
    saes = [SparseAutoencoder(SAEConfig(acts.d, n), generator=torch.Generator().manual_seed(n)) for n, *_ in keys]
    t0 = time.perf_counter()
    results = train_sae(saes, acts.batches(args.batch, seed=0), cfgs)
    seconds = time.perf_counter() - t0
    model = load_transformer(args.run / "transformer" / args.model)
    windows = torch.from_numpy(TokenStore(args.run / "tokens").val.windows(model.cfg.ctx_len + 1, args.eval_tokens))
    names = {
        f"{n}/{l1:g}/{':'.join(f'{v:g}' for v in sch)}/{d}/{c:g}": s
        for (n, l1, sch, d, c), s in zip(keys, saes, strict=True)
    }
    metrics = evaluate_saes(names, model, MLP_POST, windows)

    rows = []
    head = f"{'features':>8} {'λ':>8} {'resampling':>16} {'direction':>9} {'clip':>6} {'steps':>6} {'L0':>8}"
    print(f"{head} {'FVU':>6} {'dead %':>7} {'loss rec':>8} {'spike':>6}")
    for (n, l1, _, direction, clip), (name, m), result in zip(keys, metrics.items(), results, strict=True):
        worst = spike(result.history)
        row = {
            "n_features": n,
            "l1_coeff": l1,
            "lr": args.lr,
            "steps": args.steps,
            "resampling": name.split("/")[2],
            "direction": direction,
            "max_grad_norm": clip or None,
            "spike": worst,
            "history": [{k: r[k] for k in ("step", "mse", "l0", "dead_fraction")} for r in result.history],
            "resampled": result.resampled,
            "batch": args.batch,
            "l0": m["l0"],
            "fvu": m["fvu"],
            "dead_frac": m["dead_frac"],
            "dense_frac": m["dense_frac"],
            "loss_recovered": m["loss_recovered"],
        }
        rows.append(row)
        print(
            f"{n:>8} {l1:>8g} {name.split('/')[2]:>16} {direction:>9} {clip:>6g} {args.steps:>6} {m['l0']:>8.1f} "
            f"{m['fvu']:>6.3f} {100 * m['dead_frac']:>7.2f} {m['loss_recovered']:>8.3f} {worst:>6.2f}"
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "train_seconds": seconds,
        "s_per_step": seconds / args.steps,
        "eval_tokens": args.eval_tokens,
        "run": str(args.run),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"meta": meta, "rows": rows})


def spike(history: list[dict[str, float]]) -> float:
    """The largest ratio of a logged MSE to the lowest MSE logged before it (1.0 if it never rose)."""
    worst, best = 1.0, float("inf")
    for row in history:
        worst, best = max(worst, row["mse"] / best), min(best, row["mse"])
    return worst


if __name__ == "__main__":
    main()
