"""LM training throughput: tokens/s of the paper's one-layer transformer, float32 vs bfloat16 autocast.

    python benchmarks/lm_throughput.py [--vocab 8192] [--batch 32] [--steps 20] [--out benchmarks/results/lm.json]

Alternates the configurations step by step in one process (the machine is shared and noisy) and
reports the median step time after warm-up, and the ratio to float32.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from monosemantic.io import write_json
from monosemantic.transformer.model import Transformer, TransformerConfig
from monosemantic.transformer.train import LMTrainConfig, make_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=[8192])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tuned-malloc", action="store_true", help="apply runtime.tune_allocator() first")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lm_throughput.json"))
    args = p.parse_args()
    if args.tuned_malloc:
        from monosemantic.runtime import tune_allocator

        assert tune_allocator()

    setups = []
    for vocab in args.vocab:
        for dtype in ("float32", "bfloat16"):
            torch.manual_seed(0)
            model = Transformer(TransformerConfig(vocab_size=vocab))
            opt = make_optimizer(model, LMTrainConfig())
            setups.append({"vocab": vocab, "dtype": dtype, "model": model, "opt": opt, "times": []})
    x = {v: torch.randint(0, v, (args.batch, 257)) for v in args.vocab}
    for step in range(args.warmup + args.steps):
        for s in setups:  # alternate, so drift in machine load hits every setup alike
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s["dtype"] == "bfloat16"):
                loss = s["model"].loss(x[s["vocab"]])
            loss.backward()
            s["opt"].step()
            s["opt"].zero_grad(set_to_none=True)
            if step >= args.warmup:
                s["times"].append(time.perf_counter() - t0)

    rows = []
    for s in setups:
        med = statistics.median(s["times"])
        rows.append(
            {"vocab": s["vocab"], "dtype": s["dtype"], "median_step_s": med, "tokens_per_s": args.batch * 256 / med}
        )
    base = {r["vocab"]: r["tokens_per_s"] for r in rows if r["dtype"] == "float32"}
    print(f"{'vocab':>6} {'dtype':>9} {'step s':>8} {'tokens/s':>9} {'vs fp32':>8}")
    for r in rows:
        r["ratio_vs_float32"] = r["tokens_per_s"] / base[r["vocab"]]
        print(
            f"{r['vocab']:>6} {r['dtype']:>9} {r['median_step_s']:8.3f} {r['tokens_per_s']:9.0f} "
            f"{r['ratio_vs_float32']:8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "ctx_len": 256,
        "steps": args.steps,
        "tuned_malloc": args.tuned_malloc,
    }
    write_json(args.out, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
