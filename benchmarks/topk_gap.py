"""Why our TopK run from initialisation ends behind SAELens's: change one difference at a time.

    python benchmarks/topk_gap.py --features 1024 --steps 300                      # every variant
    python benchmarks/topk_gap.py --features 1024 --steps 300 --variants ours ours:clip saelens

Same set-up as `sae_vs_saelens.py --recipes topk --start init` (its worker builds the SAE, loads
and scales the batches, and copies the weights into SAELens): TopK k = 32, lr 1e-4, batch 4,096,
the same batches and the same initial weights; MSE (mean over elements) and L0 on 4 held-out
batches. Each variant changes one thing against its tool's default:

    ours               our TopKTrainConfig (unit-norm decoder, ε 6.25e-10, b_dec at the geometric
                       median, no clipping, the sparse step)
    ours:clip          + the total gradient norm clipped to 1 (SAELens's trainer always does this)
    ours:eps           + Adam ε 1e-8 (SAELens: torch's default)
    ours:bdec0         + b_dec left at 0 (SAELens's trainer gets our weights before our median init)
    ours:dense         + the autograd step instead of the sparse one (same loss and gradients)
    ours:free          + a free decoder (no unit-norm rows, no parallel-gradient removal)
    ours:clip+free     both
    saelens            SAELens 6.x TopKTrainingSAE + SAETrainer as the benchmark runs it
    saelens:noclip     without its clip_grad_norm_(…, 1.0)
    saelens:norescale  rescale_acts_by_decoder_norm False (its default is True)
    saelens:bdecmed    b_dec set to our geometric median before training

Needs sae_lens (run it in the benchmark venv, docs/benchmarks.md). Writes one JSON (io.write_json).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sae_bench_worker import BATCH, N_EVAL, build_ours, held_out_loss, load_batches, saelens_copy  # noqa: E402

from monosemantic.io import write_json  # noqa: E402

OURS = ["ours", "ours:clip", "ours:eps", "ours:bdec0", "ours:dense", "ours:free", "ours:clip+free"]
LOG_EVERY = 25  # our variants log their mean training MSE this often
SAELENS = ["saelens", "saelens:noclip", "saelens:norescale", "saelens:bdecmed"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, default=Path("runs/full/activations/A/blocks.0.mlp.hook_post"))
    p.add_argument("--features", type=int, default=1024)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--variants", nargs="+", default=OURS + SAELENS, choices=OURS + SAELENS)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/topk_gap.json"))
    args = p.parse_args()

    t0 = time.time()
    xs, source = load_batches(str(args.activations), args.steps + N_EVAL)
    train, held_out = xs[: args.steps], xs[args.steps :]
    spec = {"matmul_dtype": "float32"}
    init, _ = build_ours("topk", args.features, args.steps, "init", train[0], spec)  # the shared initial weights
    with torch.no_grad():  # b_dec 0, as the benchmark copied it then: `ours` re-inits it, `bdec0` and `saelens` keep it
        init.b_dec.zero_()
    results: dict[str, dict] = {}

    ours = [v for v in args.variants if v.startswith("ours")]
    if ours:  # one pass over the stream, one SAE per variant (train_sae takes a config per SAE)
        results.update(_train_ours(init, ours, args.steps, train, held_out))
    for v in (v for v in args.variants if v.startswith("saelens")):
        results[v] = _train_saelens(init, v, args.steps, train, held_out)
        print(f"{v:20s} mse {results[v]['mse']:.4f}  L0 {results[v]['l0']:.1f}", flush=True)

    print("\n| variant | MSE | L0 |\n|---|---|---|")
    for v in args.variants:
        print(f"| {v} | {results[v]['mse']:.4f} | {results[v]['l0']:.1f} |")
    write_json(
        args.out,
        {"features": args.features, "steps": args.steps, "batch": BATCH, "source": source, "results": results},
    )
    print(f"\nwall {time.time() - t0:.0f} s; JSON: {args.out}")


def _train_ours(init, variants: list[str], steps: int, train, held_out) -> dict[str, dict]:
    from monosemantic.sae import train_sae
    from monosemantic.sae.topk import TopKSAE, TopKTrainConfig

    class FreeTopKSAE(TopKSAE):
        """TopK with a free decoder: SAELens's TopK keeps no unit-norm constraint."""

        unit_norm_decoder = False

    base = TopKTrainConfig(batch_size=BATCH, n_steps=steps, log_every=LOG_EVERY, matmul_dtype="float32")
    saes, cfgs = [], []
    for v in variants:
        changes = set(v.split(":")[1].split("+")) if ":" in v else set()
        sae = copy.deepcopy(init)
        if "free" in changes:
            free = FreeTopKSAE(sae.cfg)
            free.load_state_dict(sae.state_dict())
            sae = free
        cfg = dataclasses.replace(
            base,
            max_grad_norm=1.0 if "clip" in changes else None,
            adam_eps=1e-8 if "eps" in changes else base.adam_eps,
            b_dec_init="keep" if "bdec0" in changes else "geometric_median",
            step="dense" if "dense" in changes else "auto",
        )
        saes.append(sae)
        cfgs.append(cfg)
    t0 = time.time()
    runs = train_sae(saes, iter(train), cfgs)
    print(f"ours: {len(saes)} variants trained in {time.time() - t0:.0f} s", flush=True)
    out = {}
    for v, sae, run in zip(variants, saes, runs, strict=True):
        out[v] = held_out_loss(sae.encode, sae.decode, held_out)
        out[v]["train_mse"] = {int(row["step"]): row["mse"] for row in run.history}  # means over LOG_EVERY steps
        print(f"{v:20s} mse {out[v]['mse']:.4f}  L0 {out[v]['l0']:.1f}", flush=True)
    return out


def _train_saelens(init, variant: str, steps: int, train, held_out) -> dict:
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from monosemantic.sae.geometric_median import geometric_median

    sae, cfg = saelens_copy(init, "topk", steps)
    change = variant.split(":")[1] if ":" in variant else ""
    if change == "norescale":
        new = TopKTrainingSAE(
            TopKTrainingSAEConfig(
                d_in=sae.cfg.d_in,
                d_sae=sae.cfg.d_sae,
                k=32,
                apply_b_dec_to_input=True,
                rescale_acts_by_decoder_norm=False,
            )
        )
        new.load_state_dict(sae.state_dict())
        sae = new
    if change == "bdecmed":  # what our trainer does: the median of the first 16,384 inputs
        with torch.no_grad():
            sae.b_dec.copy_(geometric_median(torch.cat(train)[:16_384]))
    clip = torch.nn.utils.clip_grad_norm_
    no_clip = (lambda params, max_norm, *a, **k: torch.zeros(())) if change == "noclip" else clip
    t0 = time.time()
    with mock.patch("torch.nn.utils.clip_grad_norm_", no_clip):
        SAETrainer(cfg=cfg, sae=sae, data_provider=iter(train)).fit()
    result = held_out_loss(sae.encode, sae.decode, held_out)
    result["train_s"] = time.time() - t0
    return result


if __name__ == "__main__":
    main()
