"""Subcommands of the later interpretation analyses, on a run's feature database (TM §4–6).

    monosemantic features proxies      --run R      case studies: proxies vs features and neurons
    monosemantic features universality --run R      model A's features matched in model B
    monosemantic features explain      --run R      automated interpretability (offline or --explainer llm)
    monosemantic lm shuffle            --run R      the control model: A with shuffled weight matrices

Each reads and updates RUN/features/features.sqlite, which `monosemantic features build` creates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sqlite3
from typing import Any

from monosemantic import paths
from monosemantic.cli.args import add_dataclass_args, build
from monosemantic.errors import UserError


def database_path(layout: paths.RunLayout) -> Any:
    from monosemantic.interp import db

    return layout.root / "features" / db.FILENAME


def open_database(layout: paths.RunLayout) -> sqlite3.Connection:
    """The run's feature database, for reading and writing (schema version checked)."""
    from monosemantic.interp import db

    path = database_path(layout)
    try:
        db.open_readonly(path).close()
    except db.DatabaseError as e:
        raise UserError(str(e)) from None
    return sqlite3.connect(path)


def add_parsers(sub: Any, common: Any) -> None:
    """`proxies`, `universality`, `explain` under the `features` group (`sub` is its subparsers)."""
    from monosemantic.interp.autointerp import AutoInterpConfig
    from monosemantic.interp.llm import LLMConfig
    from monosemantic.interp.proxies import ProxyConfig
    from monosemantic.interp.universality import UniversalityConfig

    px = sub.add_parser(
        "proxies",
        help="case studies: each proxy's best feature and neuron (TM §5)",
        description="Score held-out tokens with each proxy (a log-likelihood ratio, TM appendix 'Feature "
        "Proxies': Arabic, Hebrew, base64, DNA, Cyrillic, CJK, HTML, hex, and --proxy ones), correlate with "
        "every feature of the model's SAEs and every neuron, and store the best of each with the specificity "
        "and sensitivity plots' data, over all tokens and without the synthetic/ sources.",
    )
    common(px)
    add_dataclass_args(px, ProxyConfig, skip=("custom",))
    px.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="NAME=regex:PATTERN|NAME=py:module:function",
        help="a proxy of your own (repeatable): a regular expression over the decoded text, or a function "
        "taking a context's token strings and returning one LLR per token",
    )
    px.set_defaults(func=cmd_proxies)

    un = sub.add_parser(
        "universality",
        help="match model A's features in model B (TM §6)",
        description="For each feature of each SAE of --model, the most activation-correlated feature of the "
        "same-named SAE of --other over the same held-out tokens, and the same for the neurons; stores "
        "matches and the median (the paper: 0.72 features, 0.46 neurons). Model B: `lm train --model B "
        "--seed 1`, `harvest --model B`, `sae train --model B` with A's settings.",
    )
    common(un)
    add_dataclass_args(un, UniversalityConfig)
    un.set_defaults(func=cmd_universality)

    ex = sub.add_parser(
        "explain",
        help="automated interpretability: explain and score features and neurons (TM §4)",
        description="Explain each sampled feature from half of its stored examples and score the explanation "
        "by how well a simulator predicts activations on the other half (Pearson r). Offline by default "
        "(token statistics, no language model); --explainer llm uses an OpenAI-compatible endpoint "
        "(--llm-base-url, --llm-model, key in $OPENAI_API_KEY or --llm-api-key-env), cached in "
        "RUN/features/llm_cache.",
    )
    common(ex)
    add_dataclass_args(ex, AutoInterpConfig)
    add_dataclass_args(ex, LLMConfig, prefix="llm")
    ex.set_defaults(func=cmd_explain)


def add_lm_parsers(lm: Any, common: Any) -> None:
    """`lm shuffle` under the `lm` group."""
    sh = lm.add_parser(
        "shuffle",
        help="write the control model: a copy with each weight matrix's entries shuffled",
        description="Write RUN/transformer/OUT (default MODEL-shuffled): MODEL with the entries of every weight "
        "matrix randomly permuted (biases and LayerNorm kept), the paper's randomized-transformer control "
        "(TM §4). Then `harvest --model OUT` and `sae train --model OUT` as for A.",
    )
    common(sh)
    sh.add_argument("--model", default="A", help="the trained model to copy (default A)")
    sh.add_argument("--out", default=None, help="name of the copy (default MODEL-shuffled)")
    sh.add_argument("--seed", type=int, default=0, help="seeds the permutations (default 0)")
    sh.set_defaults(func=cmd_lm_shuffle)


def cmd_proxies(args: argparse.Namespace) -> None:
    from monosemantic.interp.proxies import ProxyConfig, format_case_study, run_proxies

    layout = paths.RunLayout(args.run)
    cfg = dataclasses.replace(build(ProxyConfig, {}, args), custom=tuple(args.proxy))
    conn = open_database(layout)
    print(format_case_study(run_proxies(conn, layout, cfg, progress=args.progress)))


def cmd_universality(args: argparse.Namespace) -> None:
    from monosemantic.interp.universality import UniversalityConfig, format_universality, run_universality

    layout = paths.RunLayout(args.run)
    conn = open_database(layout)
    print(format_universality(run_universality(conn, layout, build(UniversalityConfig, {}, args), args.progress)))


def cmd_explain(args: argparse.Namespace) -> None:
    from monosemantic.interp import db
    from monosemantic.interp.autointerp import AutoInterpConfig, format_interpretability, run_autointerp
    from monosemantic.interp.llm import LLMConfig

    layout = paths.RunLayout(args.run)
    conn = open_database(layout)
    cfg, llm = build(AutoInterpConfig, {}, args), build(LLMConfig, {}, args, prefix="llm")
    summary = run_autointerp(conn, layout, cfg, progress=args.progress, llm=llm)
    db.finalize(conn)  # explanations are searchable text: rebuild the full-text index
    print(format_interpretability(summary))


def cmd_lm_shuffle(args: argparse.Namespace) -> None:
    from monosemantic.transformer.shuffle import write_shuffled

    body = write_shuffled(paths.RunLayout(args.run), args.model, args.out, args.seed, force=args.force)
    print(paths.RunLayout(args.run).transformer(body["name"]))
