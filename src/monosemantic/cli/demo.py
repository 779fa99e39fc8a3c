"""`monosemantic demo`: every stage into one run directory (`monosemantic.pipeline.run_demo`), then the summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from monosemantic import paths, pipeline
from monosemantic.cli import browser
from monosemantic.cli.args import add_dataclass_args
from monosemantic.cli.common import add_common, add_sae_args, checkpoint_every, run_config, section_classes


def add_parsers(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the pipeline end to end (corpus → model A → SAEs → eval → feature database)",
        description="Run every stage on the embedded corpus (or --input) into one run directory. "
        "Interrupted? Run the same command again: finished stages are skipped and LM training "
        "resumes from its last checkpoint.",
    )
    add_common(demo, run_required=False)
    demo.add_argument(
        "--input",
        nargs="*",
        default=None,
        metavar="INPUT",
        help="use these texts instead of the embedded corpus (files, folders, globs, hf:NAME)",
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue the training stage an interrupted demo left a checkpoint for (an error if there is none); "
        "without it the same command resumes too, and --force starts over",
    )
    demo.add_argument("--open", action="store_true", help="at the end, serve the feature browser and open it")
    demo.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="compute dtype of every stage at once: bfloat16 autocast (float32 weights and optimizer state) or "
        "float32; a stage's own --lm-dtype, --harvest-dtype, --sae-dtype, --eval-dtype, --features-dtype wins "
        "(default: each stage's own: auto for the LM and the default preset's SAEs, i.e. bfloat16 where the "
        "device multiplies it natively and float32 elsewhere; float32 for the others)",
    )
    demo.add_argument(
        "--subject-dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="weight dtype of the subject model in every stage that runs it (harvest, eval, features), separate "
        "from the SAEs'; a stage's own --harvest-subject-dtype, --eval-subject-dtype, --features-subject-dtype wins "
        "(default float32)",
    )
    demo.add_argument(
        "--hook",
        default=None,
        metavar="MODULE[:input]",
        help="the site of every stage that reads one (harvest, eval, features) at once, e.g. "
        "model.layers.15.mlp.down_proj:input with --preset smollm2; a stage's own --harvest-hook, --eval-hook, "
        "--features-hook wins (default: the preset's)",
    )
    demo.add_argument(
        "--universality",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after model A's evaluation, train model B (A's settings with every seed + 1: init, data order, "
        "harvest, SAE), harvest it and train the ladder's largest SAE on it, so the feature database gets the "
        "paper's universality analysis (paper §8.12; about 10 min with the default preset); --no-universality skips "
        "model B (default: the preset's demo section, on in the built-in presets)",
    )
    demo.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train the paper's control (paper §8.9): model A with each weight matrix's entries shuffled, "
        "harvested like A, with the ladder's largest SAE, scored by automated interpretability beside A's "
        "(default: the preset's demo section, on in default and full)",
    )
    demo.set_defaults(func=cmd_demo)
    for section, c in section_classes().items():
        add_dataclass_args(demo, c, skip=("vocab_size",) if section == "transformer" else (), prefix=section)
    add_sae_args(demo, prefix="sae")


def cmd_demo(args: argparse.Namespace) -> None:
    from monosemantic import distributed
    from monosemantic.eval.report import format_table
    from monosemantic.io import read_json

    run = args.run or Path("runs") / Path(args.preset).stem
    layout = paths.RunLayout(run)
    cfg = run_config(args, prefixed=True)
    print(f"monosemantic demo: run directory {run}", file=sys.stderr)
    options = pipeline.DemoOptions(
        inputs=tuple(args.input or ()),
        force=args.force,
        resume=args.resume,
        progress=args.progress,
        checkpoint_every=checkpoint_every(args, "sae"),
    )

    def on_eval(evals: dict) -> None:  # the SAE table as soon as it exists, before the slower database
        print(format_table(evals), file=sys.stderr)

    result = pipeline.run_demo(layout, cfg, options, on_eval=on_eval)  # model A, or a pretrained subject
    if not distributed.is_main():
        return  # rank 0 prints the summary
    split, manifest, acts = result.tokens["splits"], result.manifest, result.activations
    rows = [
        ("corpus", f"{manifest.get('n_documents', '?')} documents, {manifest.get('n_bytes', 0) / 1e6:.1f} MB"),
        ("tokens", f"{split['train']['n_tokens']:,} train, {split['val']['n_tokens']:,} validation"),
    ]
    if cfg.subject:
        rows.append(("model", f"{cfg.subject}: {acts['model']}"))
    else:
        m = read_json(layout.transformer("A") / paths.METRICS)
        rows += [
            ("model A", f"val loss {m['val_loss']:.3f} nats/token on {m['val_tokens']:,} tokens"),
            ("baselines", f"bigram {m['bigram_loss']:.3f}, unigram {m['unigram_loss']:.3f}"),
            (
                "training",
                f"{m['train_tokens']:,} tokens in {m['train_seconds']:.0f} s ({m['tokens_per_s']:,.0f} tokens/s)",
            ),
        ]
    rows += [
        ("harvest", f"{acts['n_rows']:,} activations of {cfg.harvest.hook} ({acts['d']}-d)"),
        ("features", f"{result.database}"),
        ("time", ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())),
    ]
    for k, v in rows:
        print(f"{k:<10} {v}")
    print()
    print(format_table(result.evals))
    print(pipeline.interp_summary(result.database))
    print(f"\nbrowse the features:  {browser.serve_command(run)}")
    if args.open:
        browser.serve(run, open_browser=True)
