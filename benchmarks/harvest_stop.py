"""The harvest's forward that stops at the hook (activations.capture) against the whole forward.

    PYTHONPATH=src python benchmarks/harvest_stop.py                                  # a random 32-layer Llama
    PYTHONPATH=src python benchmarks/harvest_stop.py --model path/to/SmolLM2-135M-Instruct.Q4_1.gguf --layers 0 2 7 29

For each hooked layer (the input of `model.layers.L.mlp.down_proj`, a gated MLP's neurons), one batch
of `--batch` contexts of `--ctx-len` tokens, as the harvest runs them: `capture` (a forward hook that
stores the activation and raises, so nothing after the hooked module runs) against the plain forward
with a hook that only records (every later layer, the final norm and the unembedding run). Median
wall and CPU seconds of `--rounds` rounds, alternating; the activations must be identical
(`torch.equal`). Without `--model` the subject is a random `LlamaForCausalLM` of SmolLM2-135M's
proportions at a third of its width (32 layers, d 192, 512 neurons, vocabulary 49,152), built
in-process. Prints a table and writes benchmarks/results/harvest_stop.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from monosemantic.activations.capture import capture
from monosemantic.io import write_json
from monosemantic.transformer.hf import HFSubject, load_hf


def random_llama(n_layers: int) -> HFSubject:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=192, intermediate_size=512, num_hidden_layers=n_layers,
                      num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=True)  # fmt: skip
    return HFSubject(LlamaForCausalLM(cfg).eval(), 256, f"random Llama, {n_layers} layers, d 192")


def full_forward(model: HFSubject, tokens: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """The plain version: the whole forward, logits included, recording the module's input."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        model(tokens)
    finally:
        handle.remove()
    return seen[0]


def timed(fn) -> tuple[torch.Tensor, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a Hugging Face model (folder or .gguf); default a random Llama")
    p.add_argument("--n-layers", type=int, default=32, help="layers of the random Llama")
    p.add_argument("--layers", type=int, nargs="*", default=None, help="hooked layers (default 0, n/8, n/4 - 1, n/2)")
    p.add_argument("--batch", type=int, default=8, help="contexts per forward")
    p.add_argument("--ctx-len", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "harvest_stop.json")
    args = p.parse_args()
    model = random_llama(args.n_layers) if args.model is None else load_hf(args.model, ctx_len=args.ctx_len)[0]
    n = int(model.hf.config.num_hidden_layers)
    layers = args.layers if args.layers is not None else sorted({0, n // 8, n // 4 - 1, n // 2})
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.vocab_size, (args.batch, args.ctx_len), generator=g)
    rows = []
    with torch.inference_mode():
        model(tokens[:1, :16])  # warm-up: first-call allocations
        for layer in layers:
            module = model.find_module(f"model.layers.{layer}.mlp.down_proj")
            stop, full, same = [], [], True
            for _ in range(args.rounds):
                a, w, c = timed(lambda: capture(model, tokens, module, "input"))  # noqa: B023
                stop.append((w, c))
                b, w, c = timed(lambda: full_forward(model, tokens, module))  # noqa: B023
                full.append((w, c))
                same = same and torch.equal(a, b)
            row = {
                "layer": layer,
                "fraction_of_layers": (layer + 1) / n,
                "stop_wall_s": statistics.median(w for w, _ in stop),
                "full_wall_s": statistics.median(w for w, _ in full),
                "stop_cpu_s": statistics.median(c for _, c in stop),
                "full_cpu_s": statistics.median(c for _, c in full),
                "identical": same,
            }
            row["speedup_wall"] = row["full_wall_s"] / row["stop_wall_s"]
            row["speedup_cpu"] = row["full_cpu_s"] / row["stop_cpu_s"]
            row["stop_tokens_per_s"] = tokens.numel() / row["stop_wall_s"]
            rows.append(row)
    load = os.getloadavg()[0]
    print(f"{model.source}: {n} layers, {args.batch} x {args.ctx_len} tokens per forward, "
          f"median of {args.rounds}, torch threads {torch.get_num_threads()}, load {load:.1f}")  # fmt: skip
    head = ("layer", "of n", "stop s", "full s", "× wall", "× CPU", "stop tok/s")
    print(" ".join(f"{h:>10}" for h in head), "identical")
    for r in rows:
        cells = (r["layer"], f"{r['fraction_of_layers']:.2f}", f"{r['stop_wall_s']:.3f}", f"{r['full_wall_s']:.3f}",
                 f"{r['speedup_wall']:.2f}", f"{r['speedup_cpu']:.2f}", f"{r['stop_tokens_per_s']:,.0f}")  # fmt: skip
        print(" ".join(f"{c:>10}" for c in cells), r["identical"])
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "load_average": load, "torch": torch.__version__}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"date": date.today().isoformat(), "model": model.source, "n_layers": n,
                          "batch": args.batch, "ctx_len": args.ctx_len, "rounds": args.rounds,
                          "machine": machine, "rows": rows})  # fmt: skip
    print(f"wrote {args.out}")
    if not all(r["identical"] for r in rows):
        raise SystemExit("the activations differ between the two forwards")


if __name__ == "__main__":
    main()
