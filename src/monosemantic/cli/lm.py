"""`monosemantic lm train` (the paper's one-layer transformer) and `lm shuffle` (the randomized control)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from monosemantic import paths
from monosemantic.cli.args import add_dataclass_args
from monosemantic.cli.common import RESUME_HELP, add_common, run_config, section_classes
from monosemantic.writers import hold


def add_parsers(sub: Any) -> None:
    S = section_classes()
    TransformerConfig, LMTrainConfig = S["transformer"], S["lm"]
    lm = sub.add_parser("lm", help="subject model stage").add_subparsers(dest="action", required=True)
    lt = lm.add_parser(
        "train",
        help="train the one-layer transformer",
        description="Train the paper's one-layer transformer (residual 128, 512 ReLU neurons) on "
        "RUN/tokens into RUN/transformer/MODEL. Checkpoints go to RUN/checkpoints; an interrupted "
        "run resumes from the last one. Twin models: --model A --seed 0, --model B --seed 1.",
    )
    add_common(lt)
    lt.add_argument("--model", default="A", help="model name, the folder under RUN/transformer (default A)")
    lt.add_argument("--resume", action="store_true", help=RESUME_HELP)
    add_dataclass_args(lt, TransformerConfig, skip=("vocab_size",))
    add_dataclass_args(lt, LMTrainConfig)
    lt.set_defaults(func=cmd_lm_train)
    sh = lm.add_parser(
        "shuffle",
        help="write the control model: a copy with each weight matrix's entries shuffled",
        description="Write RUN/transformer/OUT (default MODEL-shuffled): MODEL with the entries of every weight "
        "matrix randomly permuted (biases and LayerNorm kept), the paper's randomized-transformer control "
        "(paper.md §8). Then `harvest --model OUT` and `sae train --model OUT` as for A.",
    )
    add_common(sh)
    sh.add_argument("--model", default="A", help="the trained model to copy (default A)")
    sh.add_argument("--out", default=None, help="name of the copy (default MODEL-shuffled)")
    sh.add_argument("--seed", type=int, default=0, help="seeds the permutations (default 0)")
    sh.set_defaults(func=cmd_lm_shuffle)


def cmd_lm_train(args: argparse.Namespace) -> None:
    from monosemantic.transformer import train

    cfg = run_config(args, ("transformer", "lm"))
    layout = paths.RunLayout(args.run)
    with hold(args.run):
        result = train.run(
            layout, cfg.transformer, cfg.lm, args.model, force=args.force, progress=args.progress, resume=args.resume
        )
    print(json.dumps(result.get("metrics", {}), indent=2))


def cmd_lm_shuffle(args: argparse.Namespace) -> None:
    from monosemantic.transformer.shuffle import write_shuffled

    with hold(args.run):
        body = write_shuffled(paths.RunLayout(args.run), args.model, args.out, args.seed, force=args.force)
    print(paths.RunLayout(args.run).transformer(body["name"]))
