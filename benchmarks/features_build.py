"""The feature-database build on a finished run: wall and CPU time, tokens/s, seconds per feature.

    python benchmarks/features_build.py --source runs/full --work /tmp/features_bench \\
        --saes tm2023-4096 --no-neurons --label sae4096
    python benchmarks/features_build.py --source runs/full --work /tmp/features_bench --label all

`--source` is only read: the script makes `--work` a run directory of symlinks to the source's
tokens, tokenizer, transformer, sae and eval folders and writes the database there. The issue's
target: 4,096 features over 1M tokens in at most 10 minutes on the 2-core machine; the reference
point is SAEDashboard 0.8 at about 0.17 s per feature (262k tokens, same machine). The machine is
shared, so the CPU time of this process is reported next to the wall time (on an idle machine the
wall time is about the CPU time divided by the threads the matmuls keep busy). Writes JSON to
benchmarks/results/features_build_<label>.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import time
from pathlib import Path

import torch

from monosemantic.features.build import build_features
from monosemantic.features.config import FeaturesConfig
from monosemantic.io import write_json
from monosemantic.paths import RunLayout
from monosemantic.runtime import tune_allocator

LINKED = ("tokens", "tokenizer", "transformer", "sae", "eval")
SAEDASHBOARD_S_PER_FEATURE = 0.17


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=Path("runs/full"), help="finished run (read only)")
    p.add_argument("--work", type=Path, default=Path("/tmp/features_bench"), help="scratch run dir (symlinks + DB)")
    p.add_argument("--n-tokens", type=int, default=1_048_576)
    p.add_argument("--saes", default="", help="SAE names to include (default: all)")
    p.add_argument("--no-neurons", dest="neurons", action="store_false")
    p.add_argument("--no-spill", dest="spill", action="store_false", help="pass 2 encodes again")
    p.add_argument("--label", default="all")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    tune_allocator()

    args.work.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = args.work / name
        if not link.is_symlink():
            link.symlink_to((args.source / name).resolve(), target_is_directory=True)
    cfg = FeaturesConfig(
        n_tokens=args.n_tokens, saes=tuple(s for s in args.saes.split(",") if s), neurons=args.neurons, spill=args.spill
    )
    load0 = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    path = build_features(RunLayout(args.work), cfg, force=True, progress=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load1 = os.getloadavg()[0]

    conn = sqlite3.connect(path)
    n_tokens = conn.execute("SELECT max(n_tokens) FROM dictionaries").fetchone()[0]
    dicts = conn.execute("SELECT name, n_features FROM dictionaries").fetchall()
    n_examples = conn.execute("SELECT count(*) FROM examples").fetchone()[0]
    conn.close()
    n_features = sum(n for _, n in dicts)
    result = {
        "label": args.label,
        "spill": args.spill,
        "dictionaries": [name for name, _ in dicts],
        "n_features": n_features,
        "n_tokens": n_tokens,
        "wall_s": wall,
        "cpu_s": cpu,
        "tokens_per_s": n_tokens / wall,
        "s_per_feature": wall / n_features,
        "cpu_s_per_feature": cpu / n_features,
        "vs_saedashboard": SAEDASHBOARD_S_PER_FEATURE / (wall / n_features),
        "db_mb": path.stat().st_size / 1e6,
        "kb_per_feature": path.stat().st_size / 1e3 / n_features,
        "n_examples": n_examples,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
        "load_avg_1min": [load0, load1],
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"features_build_{args.label}.json", result)
    print(f"{'dictionaries':<22} {', '.join(result['dictionaries'])}")
    for key, fmt in [
        ("n_features", ",d"), ("n_tokens", ",d"), ("wall_s", ".1f"), ("cpu_s", ".1f"), ("tokens_per_s", ",.0f"),
        ("s_per_feature", ".4f"), ("cpu_s_per_feature", ".4f"), ("vs_saedashboard", ".1f"), ("db_mb", ".1f"),
        ("kb_per_feature", ".1f"), ("n_examples", ",d"), ("peak_rss_mb", ",.0f"),
    ]:  # fmt: skip
        print(f"{key:<22} {result[key]:{fmt}}")
    print(f"{'load average (1 min)':<22} {load0:.1f} before, {load1:.1f} after")


if __name__ == "__main__":
    main()
