"""What each stage of `demo --preset smollm2` costs per unit, on small slices, and the preset extrapolated.

    PYTHONPATH=src python benchmarks/smollm2_stages.py --run runs/smollm2

Needs the run's SmolLM2 tokens (`tokens-hf-SmolLM2-135M-Instruct.Q4_1/`, which the demo's harvest writes
first) and the converted model in the cache. Measures, in one process, wall and CPU seconds of:

- the forward that stops at the hook (`activations.capture`) for layers 0, 2 and 7, per token;
- the whole forward with the logits (the eval's splice runs it six times per batch), per token;
- one SAE training step of the preset's TopK ladder (1,536 / 3,072 / 6,144 features, batch 1,024) and of the
  paper's L1 recipe at the same sizes, from initialisation (its first steps are dense), per row;
- the case studies' encoders (every SAE of the ladder on the neurons), per token.

Then multiplies each by the preset's sizes (800,000 harvested rows, 8,192 eval tokens × 6 runs, 1,048,576
case-study tokens, 131,072 database tokens × 2 passes). CPU seconds carry over between a loaded and an idle
machine; wall seconds do not. Prints a table and writes benchmarks/results/smollm2_stages.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from monosemantic.activations.capture import capture
from monosemantic.data.tokens import TokenStore
from monosemantic.features.stream import held_out_contexts
from monosemantic.io import write_json
from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.sae.sparse_step import Stepper
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig
from monosemantic.sae.train import SAETrainConfig
from monosemantic.transformer.hf import load_hf
from monosemantic.transformer.pretrained import PRETRAINED, pretrained_model

SIZES = (1536, 3072, 6144)
PRESET = {"harvest_rows": 800_000, "eval_token_runs": 6 * 8192, "case_tokens": 1 << 20, "db_tokens": 2 * 131_072}


def clock(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/smollm2"))
    p.add_argument("--contexts", type=int, default=8, help="contexts of 256 tokens per forward measurement")
    p.add_argument("--steps", type=int, default=4, help="SAE steps timed per recipe (after one warm-up)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "smollm2_stages.json")
    args = p.parse_args()
    folder = pretrained_model("smollm2")
    model, _ = load_hf(str(folder))
    store = TokenStore(args.run / f"tokens-hf-{PRETRAINED['smollm2'].name}")
    tokens = torch.from_numpy(held_out_contexts(store, 256, args.contexts * 256).tokens)
    n_tok = tokens.numel()
    per: dict[str, tuple[float, float]] = {}  # unit -> (wall s, CPU s) per token or row
    with torch.inference_mode():
        model(tokens[:1, :8])  # warm-up
        for layer in (0, 2, 7):
            module = model.find_module(f"model.layers.{layer}.mlp.down_proj")
            w, c = clock(lambda m=module: capture(model, tokens, m, "input"))
            per[f"forward to layer {layer}, per token"] = (w / n_tok, c / n_tok)
        w, c = clock(lambda: model(tokens[:4]))
        per["whole forward, per token"] = (w / tokens[:4].numel(), c / tokens[:4].numel())
        x = capture(model, tokens, model.find_module("model.layers.0.mlp.down_proj"), "input").reshape(-1, 1536)
    x = (x / x.norm(dim=1).mean() * 1536**0.5).float()  # normalised as the trainer does
    batch = x[:1024].contiguous()
    for name, make, cfg in (
        ("TopK ladder step", lambda n: TopKSAE(TopKSAEConfig(1536, n, k=32)), TopKTrainConfig(batch_size=1024)),
        ("L1 ladder step", lambda n: SparseAutoencoder(SAEConfig(1536, n)), SAETrainConfig(batch_size=1024)),
    ):
        saes = [make(n) for n in SIZES]
        steppers = [Stepper.for_recipe(s, cfg) for s in saes]
        dead = [torch.zeros(n, dtype=torch.bool) for n in SIZES]
        times = []
        runs = list(zip(saes, steppers, dead, strict=True))
        for i in range(args.steps + 1):
            w, c = clock(lambda i=i, runs=runs, cfg=cfg: [st.gradients(s, cfg, batch, i + 1, d) for s, st, d in runs])
            if i:
                times.append((w, c))
        per[f"{name}, per row"] = (np.median([t[0] for t in times]) / 1024, np.median([t[1] for t in times]) / 1024)
    with torch.inference_mode():
        saes = [TopKSAE(TopKSAEConfig(1536, n, k=32)).eval() for n in SIZES]
        w, c = clock(lambda: [s.encode(x) for s in saes])
    per["case-study encoders, per token"] = (w / len(x), c / len(x))
    est = {
        "harvest (layer 0)": ("forward to layer 0, per token", PRESET["harvest_rows"] * 256 / 250),
        "SAE ladder (TopK)": ("TopK ladder step, per row", PRESET["harvest_rows"]),
        "SAE ladder (L1, from init)": ("L1 ladder step, per row", PRESET["harvest_rows"]),
        "eval splices": ("whole forward, per token", PRESET["eval_token_runs"]),
        "case studies: forward": ("forward to layer 0, per token", PRESET["case_tokens"]),
        "case studies: encoders": ("case-study encoders, per token", PRESET["case_tokens"]),
        "database passes: forward": ("forward to layer 0, per token", PRESET["db_tokens"]),
    }
    load = os.getloadavg()[0]
    print(f"per unit (torch threads {torch.get_num_threads()}, load {load:.1f}):")
    for k, (w, c) in per.items():
        print(f"  {k:<36} {w * 1e3:9.3f} ms wall {c * 1e3:9.3f} ms CPU")
    print("the preset, extrapolated:")
    rows = {}
    for stage, (unit, n) in est.items():
        w, c = per[unit]
        rows[stage] = {"units": n, "wall_s": w * n, "cpu_s": c * n}
        print(f"  {stage:<28} {n:>10,} units  {w * n:8.0f} s wall  {c * n:8.0f} s CPU")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"date": time.strftime("%Y-%m-%d"), "load_average": load, "threads": torch.get_num_threads(),
                          "per_unit": {k: {"wall_s": w, "cpu_s": c} for k, (w, c) in per.items()},
                          "preset": json.loads(json.dumps(rows))})  # fmt: skip


if __name__ == "__main__":
    main()
