"""Automated interpretability when an explanation may name only *classes* of tokens, never single tokens.

    python benchmarks/autointerp_classes.py --run runs/default --classes 64 128 256 512 1024 2048 --max-classes 4

Every (C, M) pair is `monosemantic features explain --explainer classes --n-classes C --max-classes M`
(analyses/token_classes.py: an explanation names at most M of C classes of tokens, never a token; the demo
scores C = 256, M = 4 beside the token lookup). Fewer classes are coarser concepts; C = the vocabulary is
the token lookup again. The class pair writes only its summary, so the database's explanations are kept.
Prints one table and writes JSON.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from monosemantic import paths
from monosemantic.analyses.autointerp import AutoInterpConfig, run_autointerp
from monosemantic.io import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a demo run (only its class-pair summary is rewritten)")
    p.add_argument("--classes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--max-classes", type=int, nargs="+", default=[4], help="classes one explanation may name")
    p.add_argument("--models", nargs="+", default=["A", "A-shuffled"])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/autointerp_classes.json"))
    args = p.parse_args()
    layout = paths.RunLayout(args.run)
    rows = []
    for n_classes in args.classes:
        for m in args.max_classes:
            conn = sqlite3.connect(layout.root / "features" / "features.sqlite")
            cfg = AutoInterpConfig(explainer="classes", n_classes=n_classes, max_classes=m, models=tuple(args.models))
            t0 = time.perf_counter()
            summary = run_autointerp(conn, layout, cfg, progress=False)
            conn.close()
            print(f"{n_classes} classes, at most {m}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for r in summary["dictionaries"]:
                rows.append({"classes": n_classes, "max_classes": m, **r})
    print("| classes | names at most | model | dictionary | median ρ | single-token | median ρ without single-token |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['classes']} | {r['max_classes']} | {r['model']} | {r['dictionary']} | {r['median']:.2f} | "
            f"{r['single_token_share']:.0%} | {r['median_multi_token']:.2f} |"
        )
    write_json(args.out, {"argv": sys.argv[1:], "rows": rows})
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
