"""How fast the activation store feeds SAE training: shuffled float32 batches per second from a harvested store.

    python benchmarks/activation_loader.py [--activations runs/default/activations/A/blocks.0.mlp.hook_post]

Reads `--batches` batches of 4,096 rows with `ActivationSource.batches` (the trainer's data path:
float16 shards, shuffled in windows, converted to float32) after one warm-up batch, and prints
rows/s and the time per batch, to compare with an SAE step's time (`sae_vs_saelens.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from monosemantic.activations.store import open_activations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, default=Path("runs/default/activations/A/blocks.0.mlp.hook_post"))
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/activation_loader.json"))
    args = p.parse_args()
    it = open_activations(args.activations).batches(args.batch_size, seed=1)
    t0 = time.perf_counter()
    next(it)  # the first shuffle window is read here
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.batches):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    row = {
        "first_batch_s": first,
        "median_batch_s": med,
        "mean_batch_s": statistics.mean(times),
        "rows_per_s_mean": args.batch_size / statistics.mean(times),
    }
    print(f"first batch (fills a shuffle window): {first:.2f} s")
    print(
        f"then: median {med * 1e3:.1f} ms/batch, mean {row['mean_batch_s'] * 1e3:.1f} ms, "
        f"{row['rows_per_s_mean']:,.0f} rows/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
