"""Subcommands of the interpretation stage: `features build` (the feature database).

Wiring only: the flags come from `FeaturesConfig` (cli/args.py) and `build_features` does the work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monosemantic import paths
from monosemantic.cli import interp_analyses, interp_b
from monosemantic.cli.args import add_dataclass_args, build


def add_parsers(sub: Any, common: Any) -> None:
    from monosemantic.interp.build import FeaturesConfig

    features = sub.add_parser("features", help="feature database stage").add_subparsers(dest="action", required=True)
    fb = features.add_parser(
        "build",
        help="build the feature database (SQLite) of a run's SAEs and neurons",
        description="Stream held-out tokens (the validation split) through model MODEL and every SAE under "
        "RUN/sae/MODEL/HOOK (or --saes), plus the model's neurons, and write RUN/features/features.sqlite: per "
        "feature its density, mean and max activation, a log-spaced activation histogram, the top activating "
        "examples, samples from each activation interval and random samples (each with the activations over a "
        "window of tokens), the activation share per corpus source, and logit weights (reference §8.3, §9). "
        "Two passes over the tokens; memory does not grow with --n-tokens. Skipped when complete unless --force. "
        "MODEL may be a Hugging Face causal LM (folder, .gguf, hf:NAME) with --hook MODULE.PATH[:input|:output], "
        "as for harvest and sae train; the analyses that need the run's own model are then skipped. Under "
        "torchrun the passes are sharded across the processes and rank 0 writes the database.",
    )
    fb.add_argument(
        "--run", "--run-dir", dest="run", type=Path, required=True, help="run directory (with tokens/, sae/, ...)"
    )
    fb.add_argument("--force", action="store_true", help="rebuild even if the database is complete")
    fb.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    fb.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_dataclass_args(fb, FeaturesConfig)
    fb.set_defaults(func=cmd_features_build)
    interp_analyses.add_actions(features, common)  # features ablate | split | map
    interp_b.add_parsers(features, common)  # features proxies | universality | explain


def cmd_features_build(args: argparse.Namespace) -> None:
    from monosemantic import distributed
    from monosemantic.interp import db
    from monosemantic.interp.build import FeaturesConfig, build_features

    path = build_features(paths.RunLayout(args.run), build(FeaturesConfig, {}, args), args.force, args.progress)
    if not distributed.is_main():
        return  # under torchrun rank 0 writes the database (and may still be writing it)
    conn = db.open_readonly(path)
    try:
        for name, kind, n, n_tokens in conn.execute("SELECT name, kind, n_features, n_tokens FROM dictionaries"):
            alive = conn.execute(
                "SELECT count(*) FROM features f JOIN dictionaries d ON d.id = f.dictionary_id"
                " WHERE d.name = ? AND f.n_active > 0",
                (name,),
            ).fetchone()[0]
            print(f"{name:<16} {kind:<8} {n:>6,} features, {alive:>6,} active on {n_tokens:,} tokens")
    finally:
        conn.close()
    print(path)
