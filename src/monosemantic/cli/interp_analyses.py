"""Subcommands of the paper's analyses on a built feature database: `features ablate|split|map`.

Each opens RUN/features/features.sqlite read-write, runs one analysis of `monosemantic.interp`
and replaces that analysis's rows (a re-run redoes it; the rest of the database is untouched).
SQLite commits per dictionary, so an interrupted run leaves a valid database: run it again.

`add_actions` adds the three commands to the `features` group that cli/interp.py makes.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

from monosemantic import paths
from monosemantic.cli.args import add_dataclass_args, build
from monosemantic.errors import UserError
from monosemantic.interp import db  # stdlib only


def add_actions(group: Any, common: Any) -> None:
    from monosemantic.interp.ablation import AblationConfig
    from monosemantic.interp.featuremap import MapConfig
    from monosemantic.interp.splitting import SplitConfig

    specs = [
        (
            "ablate",
            AblationConfig,
            cmd_ablate,
            "ablate each feature on its top contexts; pinned samples",
            "For every feature with top examples: subtract its contribution f·d from the true MLP activation on "
            "every token of each context, finish the forward, and store the change in log-likelihood of each "
            "window token (examples.ablation_json), the mean loss change and the most promoted / suppressed next "
            "tokens (ablations). Then sample continuations of --prompt with the feature pinned at its max "
            "activation (pinned). Neurons too (ablation zeroes them). [TM] appendix 'Feature Ablations', §4.",
        ),
        (
            "split",
            SplitConfig,
            cmd_split,
            "feature splitting across the SAE ladder; automata links",
            "Match the features of each pair of consecutive SAE sizes (and smallest to largest) by the paper's "
            "masked activation cosine on held-out tokens, links above --threshold, with the decoder cosine "
            "beside (splits). Then, for every feature, the features whose top tokens its logit effect raises "
            "most (logit_links, the paper's 'finite state automata'). [TM] 'Feature Splitting', footnote 32.",
        ),
        (
            "map",
            MapConfig,
            cmd_map,
            "UMAP of decoder directions with HDBSCAN clusters",
            "Co-embed the decoder directions of the chosen SAEs with a 2-D UMAP (cosine, n_neighbors 15, "
            "min_dist 0.05: features.umap_x/umap_y) and cluster them with HDBSCAN (min_cluster_size 3) on a "
            "10-D UMAP (features.cluster, clusters with labels). [TM] appendix 'Feature UMAPs'.",
        ),
    ]
    for name, cls, func, help_, description in specs:
        p = group.add_parser(name, help=help_, description=description)
        common(p)
        p.add_argument(
            "--db", type=Path, default=None, help="the feature database (default RUN/features/features.sqlite)"
        )
        add_dataclass_args(p, cls)
        p.set_defaults(func=func, config_class=cls)


def database_path(args: argparse.Namespace) -> Path:
    return args.db or paths.RunLayout(Path(args.run)).features / db.FILENAME


def open_for_update(path: Path) -> sqlite3.Connection:
    """Open an existing feature database read-write, checking its schema version."""
    if not path.is_file():
        raise UserError(f"{path}: no feature database here (run `monosemantic features build` first)")
    conn = sqlite3.connect(path)
    try:
        version = db.get_meta(conn, "schema_version")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise UserError(f"{path}: not a feature database ({e})") from None
    if version != db.SCHEMA_VERSION:
        conn.close()
        raise UserError(f"{path}: schema version {version}, this monosemantic writes {db.SCHEMA_VERSION}")
    return conn


def _run(args: argparse.Namespace, run: Any) -> None:
    cfg = build(args.config_class, {}, args)
    layout = paths.RunLayout(args.run)
    if not (layout.transformer(cfg.model) / paths.CONFIG).is_file():
        raise UserError(f"{layout.transformer(cfg.model)}: no model here; is --run {args.run} a run directory?")
    conn = open_for_update(database_path(args))
    try:
        print(json.dumps(run(conn, layout, cfg, progress=args.progress), indent=2))
    finally:
        conn.close()


def cmd_ablate(args: argparse.Namespace) -> None:
    from monosemantic.interp.ablation import run_ablation

    _run(args, run_ablation)


def cmd_split(args: argparse.Namespace) -> None:
    from monosemantic.interp.splitting import run_split

    _run(args, run_split)


def cmd_map(args: argparse.Namespace) -> None:
    from monosemantic.interp.featuremap import run_map

    _run(args, run_map)
