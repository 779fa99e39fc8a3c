"""`monosemantic harvest`: store a model's activations at one hook, the SAEs' dataset."""

from __future__ import annotations

import argparse
from typing import Any

from monosemantic import paths, pipeline
from monosemantic.cli.args import add_dataclass_args
from monosemantic.cli.common import MODEL_HELP, add_common, run_config
from monosemantic.writers import hold


def add_parsers(sub: Any) -> None:
    from monosemantic.activations.harvest import HarvestConfig

    hv = sub.add_parser(
        "harvest",
        help="store a model's activations (the SAE dataset)",
        description="Run model MODEL over contexts of the training split and store the activations of one hook "
        "(default: the 512 MLP neurons after the ReLU) in RUN/activations/MODEL/HOOK: 250 positions per "
        "context, shuffled across contexts, each row with its document, position and token (paper.md §2). "
        "MODEL may be a Hugging Face causal LM (folder, .gguf, hf:NAME) with --hook MODULE.PATH[:input|:output]: "
        "the run's corpus is first tokenized with its tokenizer into RUN/tokens-hf-<name>.",
    )
    add_common(hv)
    hv.add_argument("--model", default="A", help=MODEL_HELP)
    hv.add_argument("--ctx-len", type=int, default=None, help="context length of a Hugging Face model (default 256)")
    add_dataclass_args(hv, HarvestConfig)
    hv.set_defaults(func=cmd_harvest)


def cmd_harvest(args: argparse.Namespace) -> None:
    cfg = run_config(args, ("harvest", "tokens"))
    with hold(args.run):
        pipeline.harvest(
            paths.RunLayout(args.run), args.model, cfg.harvest, args.force, args.progress, args.ctx_len, cfg.tokens
        )
