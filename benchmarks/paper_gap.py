"""Why the paper recipe ends behind SAELens from initialisation: one difference changed at a time.

    python benchmarks/paper_gap.py --variants paper free eps clip clip-free   # 16,384 features, 300 steps each

Each variant trains our paper recipe from the same start on the same batches as
`sae_vs_saelens.py --recipes paper --start init` (its worker's `stream_batches`, `build_ours` and
`held_out_loss`: b_dec at the geometric median of the first batch, λ 0.008, lr 1e-3, no resampling,
bfloat16 active set), then reports the held-out MSE, L0 and the objective both tools minimise
(MSE + λ·Σ f_i‖W_dec,i‖). Variants, each one change from `paper`:

- `free`: SAELens's standard decoder: rows free, L1 weighted by their norms, no parallel-gradient
  removal (our April SAE class with the pre-encoder bias, and the paper's λ, lr and no warm-up);
- `eps`: Adam ε divided by d_in, as if the loss were summed over d_in like SAELens's;
- `clip`: the gradient clipped at 1 / d_in, SAELens's clip at 1 on its summed-MSE loss;
- `clip-free`: both `clip` and `free`, i.e. SAELens's recipe in our trainer (what is left between
  `clip` and SAELens, if this matches SAELens, is the paper's unit-norm decoder).

SAELens's own number for the same start is `sae_vs_saelens.py`'s (docs/benchmarks.md). Prints a
table and writes JSON (benchmarks/results/paper_gap.json). Results: docs/decisions.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from sae_bench_worker import BATCH, D_IN, N_EVAL, PAPER_L1, _peek, build_ours, held_out_loss, stream_batches

from monosemantic.io import write_json
from monosemantic.runtime import tune_allocator
from monosemantic.sae import train_sae
from monosemantic.sae.april import AprilSAE, AprilTrainConfig

DEFAULT_STORE = Path("runs/full/activations/A/blocks.0.mlp.hook_post")
VARIANTS = ["paper", "free", "eps", "clip", "clip-free"]


class _FreeDecoderSAE(AprilSAE):
    """SAELens's standard SAE with `apply_b_dec_to_input`: free decoder rows, norm-weighted L1, x − b_dec in."""

    pre_encoder_bias = True


def variant(name: str, sae: Any, cfg: Any, steps: int) -> tuple[Any, Any]:
    """The SAE and train config of one variant, from the paper recipe's `sae` and `cfg`."""
    if name in ("free", "clip-free"):
        free = _FreeDecoderSAE(sae.cfg)
        with torch.no_grad():
            for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(free, k).copy_(getattr(sae, k))
        april = AprilTrainConfig(
            l1_coeff=PAPER_L1 * D_IN,  # the same objective on the summed-MSE scale
            lr=cfg.lr,
            l1_warmup_fraction=0.0,
            lr_decay_fraction=0.0,
            # the April loss sums the MSE over d_in as SAELens's does, so SAELens's clip at 1 is 1 here
            max_grad_norm=None if cfg.max_grad_norm is None else cfg.max_grad_norm * D_IN,
            normalize_inputs=False,
            batch_size=BATCH,
            n_steps=steps,
            log_every=cfg.log_every,
            matmul_dtype=cfg.matmul_dtype,
        )
        return free, april
    if name == "eps":
        return sae, dataclasses.replace(cfg, adam_eps=cfg.adam_eps / D_IN)
    return sae, cfg  # paper, and clip (the worker's paper-clip recipe)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, default=DEFAULT_STORE, help="a harvested store")
    p.add_argument("--features", type=int, default=16384)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/paper_gap.json"))
    args = p.parse_args()
    if not args.activations.exists():
        raise SystemExit(f"{args.activations}: no harvested store (run `monosemantic demo --preset full` first)")
    tune_allocator()
    rows = []
    print(f"{'variant':>9} {'MSE':>7} {'L0':>6} {'l1':>7} {'objective':>9} {'s':>6}")
    for name in args.variants:
        train, held_out, _ = stream_batches(str(args.activations), args.steps, N_EVAL)
        first, train = _peek(train)
        recipe = "paper-clip" if name.startswith("clip") else "paper"  # build_ours sets the clip equal to SAELens's
        sae, cfg = build_ours(recipe, args.features, args.steps, "init", first, {"matmul_dtype": "bfloat16"})
        sae, cfg = variant(name, sae, cfg, args.steps)
        t0 = time.perf_counter()
        train_sae([sae], train, cfg)
        row = {"variant": name, **held_out_loss(sae.encode, sae.decode, held_out, sae.W_dec)}
        row |= {"objective": row["mse"] + PAPER_L1 * row["l1"], "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(
            f"{name:>9} {row['mse']:>7.4f} {row['l0']:>6.1f} {row['l1']:>7.2f} {row['objective']:>9.4f} "
            f"{row['seconds']:>6.0f}"
        )
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "features": args.features, "steps": args.steps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
