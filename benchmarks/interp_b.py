"""The paper's case-study, universality and automated-interpretability numbers on a finished run.

    python benchmarks/interp_b.py case-study   --run runs/default --db /tmp/me/features.sqlite
    python benchmarks/interp_b.py universality --run runs/default --db /tmp/me/features.sqlite
    python benchmarks/interp_b.py autointerp   --run runs/default --db /tmp/me/features.sqlite

Reads the run (never writes into it); the feature database `--db` is created if missing with the
run's dictionaries registered (the core `features build` pass fills the rest). Prints each table
and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from monosemantic.interp import db
from monosemantic.interp.loading import ensure_dictionaries
from monosemantic.paths import RunLayout
from monosemantic.runtime import tune_allocator
from monosemantic.transformer.hooks import MLP_POST


def _open(path: Path, layout: RunLayout, models: list[str]):
    conn = db.create(path) if not path.exists() else __import__("sqlite3").connect(path)
    for m in models:
        if layout.transformer(m).is_dir():
            ensure_dictionaries(conn, layout, m, MLP_POST)
    return conn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["case-study", "universality", "autointerp"])
    p.add_argument("--run", type=Path, default=Path("runs/default"))
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--n-tokens", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    tune_allocator()
    layout = RunLayout(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.what == "case-study":
        from monosemantic.interp.proxies import ProxyConfig, format_case_study, run_proxies

        conn = _open(args.db, layout, ["A"])
        summary = run_proxies(conn, layout, ProxyConfig(n_tokens=args.n_tokens, batch_size=16))
        print(format_case_study(summary))
    elif args.what == "universality":
        from monosemantic.interp.universality import UniversalityConfig, format_universality, run_universality

        conn = _open(args.db, layout, ["A", "B"])
        summary = run_universality(conn, layout, UniversalityConfig(n_tokens=args.n_tokens))
        print(format_universality(summary))
    else:
        from monosemantic.interp.autointerp import AutoInterpConfig, format_interpretability, run_autointerp

        conn = _open(args.db, layout, ["A", "A-shuffled"])
        summary = run_autointerp(conn, layout, AutoInterpConfig())
        print(format_interpretability(summary))
    seconds = time.perf_counter() - t0
    print(f"{seconds:.0f} s")
    out = args.out / f"{args.what.replace('-', '_')}.json"
    out.write_text(json.dumps({"run": str(args.run), "seconds": seconds, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
