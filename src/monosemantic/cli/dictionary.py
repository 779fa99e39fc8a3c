"""Subcommands of the dictionary-learning stages: `harvest`, `sae train|eval|export|import`.

Wiring only: each builds its configs from the preset plus flags and calls a stage function.
`sae train` is where an activation store meets the trainer: the CLI opens the store and hands
`train_ladder` a plain iterator of batches (the trainer never learns where they came from).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from monosemantic import paths
from monosemantic.cli.args import add_dataclass_args, build, field_names, given
from monosemantic.errors import UserError

log = logging.getLogger("monosemantic")

MODEL_HELP = (
    "model name under RUN/transformer (default A), or a Hugging Face causal LM: a save_pretrained folder, a .gguf "
    "file, or hf:NAME for a hub name already in the local cache (its artifacts go under hf-<name>)"
)

CHECKPOINT_DIR = ".checkpoint"  # inside `sae train --out DIR` while training runs


def sae_checkpoints(layout: paths.RunLayout, model: str, hook: str) -> Path:
    """A run's SAE-training checkpoint folder: RUN/checkpoints/sae-MODEL-HOOK."""
    return layout.checkpoints(f"sae-{model}-{hook}")


def train_config_classes() -> dict[str, type]:
    from monosemantic.sae.registry import ARCHITECTURES

    return {name: a.train_config for name, a in ARCHITECTURES.items()}


RESUME_HELP = (
    "continue from the checkpoint an interrupted run left (an error if there is none); without it a "
    "checkpoint made with the same settings is resumed too, and --force discards it"
)


def add_sae_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """LadderConfig's flags, then the union of every architecture's train-config flags, then checkpointing."""
    from monosemantic.sae.checkpoint import CheckpointConfig
    from monosemantic.sae.ladder import LadderConfig

    seen: set[str] = set()
    add_dataclass_args(p, CheckpointConfig, prefix=prefix, seen=seen)
    add_dataclass_args(p, LadderConfig, prefix=prefix, seen=seen)
    for cls in train_config_classes().values():
        add_dataclass_args(p, cls, prefix=prefix, seen=seen, skip=("progress",))


def sae_configs(section: dict[str, Any], args: argparse.Namespace, prefix: str = "") -> tuple[Any, Any]:
    """(LadderConfig, the arch's train config) from a preset's `sae` section and the flags."""
    from monosemantic.sae.ladder import LadderConfig

    ladder_keys = field_names(LadderConfig)
    ladder = build(LadderConfig, {k: v for k, v in section.items() if k in ladder_keys}, args, prefix)
    cls = train_config_classes()[ladder.arch]
    own = field_names(cls)
    every = set().union(*(field_names(c) for c in train_config_classes().values()))
    typos = set(section) - every - ladder_keys  # a key no recipe knows would otherwise be dropped silently
    if typos:
        raise UserError(f"unknown SAE settings in preset: {', '.join(sorted(typos))}")
    others = every - own - ladder_keys
    stray = given(args, others | ({"k"} if ladder.arch != "topk" else set()), prefix)
    if stray:
        flags = ", ".join("--" + n.replace("_", "-") for n in sorted(stray))
        raise UserError(f"{flags}: not a setting of --arch {ladder.arch}")
    base = {k: v for k, v in section.items() if k not in ladder_keys and k in own}
    train = build(cls, base, args, prefix)
    return ladder, dataclasses.replace(train, progress=getattr(args, "progress", True))


def checkpoint_every(args: argparse.Namespace, prefix: str = "") -> int:
    from monosemantic.sae.checkpoint import CheckpointConfig

    return build(CheckpointConfig, {}, args, prefix).checkpoint_every


def add_parsers(sub: Any, common: Any) -> None:
    from monosemantic.activations.harvest import HarvestConfig
    from monosemantic.eval.report import EvalConfig

    hv = sub.add_parser(
        "harvest",
        help="store a model's activations (the SAE dataset)",
        description="Run model MODEL over contexts of the training split and store the activations of one hook "
        "(default: the 512 MLP neurons after the ReLU) in RUN/activations/MODEL/HOOK: 250 positions per "
        "context, shuffled across contexts, each row with its document, position and token ([TM] §2). "
        "MODEL may be a Hugging Face causal LM (folder, .gguf, hf:NAME) with --hook MODULE.PATH[:input|:output]: "
        "the run's corpus is first tokenized with its tokenizer into RUN/tokens-hf-<name>.",
    )
    common(hv)
    hv.add_argument("--model", default="A", help=MODEL_HELP)
    hv.add_argument("--ctx-len", type=int, default=None, help="context length of a Hugging Face model (default 256)")
    add_dataclass_args(hv, HarvestConfig)
    hv.set_defaults(func=cmd_harvest)

    sae = sub.add_parser("sae", help="sparse autoencoder stage").add_subparsers(dest="action", required=True)
    tr = sae.add_parser(
        "train",
        help="train a ladder of SAEs in one pass",
        description="Train one SAE per size in --n-features on one pass over the activations (the paper's "
        "recipe by default; --arch april2024 or topk for the later ones). With --run: the run's harvested "
        "store, writing RUN/sae/MODEL/HOOK/<arch>-<n>. With --activations PATH (a harvested folder, or any "
        "(N, d) float array in .npy or .safetensors) and --out DIR: writes DIR/<arch>-<n>. n_steps is capped "
        "at one pass over the data: rows are never repeated ([TM] §2).",
    )
    common(tr, run_required=False)
    tr.add_argument("--model", default="A", help=MODEL_HELP)
    tr.add_argument("--hook", default=None, help="hook of the run's store (default: the harvest preset's)")
    tr.add_argument("--activations", type=Path, help="train on this store or array instead of a run's")
    tr.add_argument("--out", type=Path, help="output folder with --activations")
    tr.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (cuda:N picks a GPU)")
    tr.add_argument("--resume", action="store_true", help=RESUME_HELP)
    tr.add_argument(
        "--prefetch",
        type=int,
        default=2,
        metavar="N",
        help="read the activations in a background thread up to N batches ahead of the training step "
        "(default 2; 0: no thread, read between steps)",
    )
    add_sae_args(tr)
    tr.set_defaults(func=cmd_sae_train)

    ev = sae.add_parser(
        "eval",
        help="evaluate a run's SAEs",
        description="For every SAE under RUN/sae/MODEL/HOOK: MSE, FVU, L0, L1, dead and dense features, the "
        "density histogram (PNG), and loss recovered with the reconstruction spliced into the model, against "
        "zero and mean ablation, with KL divergence ([TM] §7). Writes RUN/eval/MODEL/HOOK/<name>/metrics.json.",
    )
    common(ev)
    ev.add_argument("--model", default="A", help=MODEL_HELP)
    ev.add_argument("--ctx-len", type=int, default=None, help="context length of a Hugging Face model (default 256)")
    add_dataclass_args(ev, EvalConfig)
    ev.set_defaults(func=cmd_sae_eval)

    ex = sae.add_parser(
        "export",
        help="write an SAE in another tool's format",
        description="Write SAE_DIR in SAELens's folder format (sae_weights.safetensors + cfg.json "
        "that sae_lens.SAE.load_from_disk reads), input scaling and decoder norms folded in.",
    )
    ex.add_argument("sae_dir", type=Path)
    ex.add_argument("out", type=Path)
    ex.add_argument("--format", choices=["saelens"], default="saelens")
    ex.add_argument("--hook", default=None, help="hook name to record in SAELens's metadata")
    ex.set_defaults(func=cmd_sae_export)

    im = sae.add_parser(
        "import",
        help="read an SAE from another tool's format",
        description="Read a SAELens folder (standard or topk) into OUT as a monosemantic SAE.",
    )
    im.add_argument("saelens_dir", type=Path)
    im.add_argument("out", type=Path)
    im.add_argument("--format", choices=["saelens"], default="saelens")
    im.set_defaults(func=cmd_sae_import)


def harvest(
    layout: paths.RunLayout,
    model: str,
    cfg: Any,
    force: bool,
    progress: bool,
    ctx_len: int | None = None,
    tokens_cfg: Any = None,
) -> dict[str, Any]:
    from monosemantic.activations import harvest as stage

    return stage.run(layout, model, cfg, force=force, progress=progress, ctx_len=ctx_len, tokens_cfg=tokens_cfg)


def train_saes(
    source: Path,
    out_root: Path,
    ladder: Any,
    train: Any,
    device: str,
    force: bool,
    extra: dict[str, Any],
    checkpoint: tuple[Path, int, bool] | None = None,
    prefetch_depth: int = 2,
) -> dict[str, Path]:
    """Open the activations and train the ladder; `checkpoint` is (folder, every, resume).

    A thread reads the batches up to `prefetch_depth` ahead of the step (activations/prefetch.py;
    0: read in the loop). On the idle 2-core machine it made training 2–17 % faster, under heavy
    load the measurements went both ways (docs/LOG.md 2026-12-06).
    """
    from monosemantic.activations.prefetch import prefetch
    from monosemantic.activations.store import open_activations
    from monosemantic.runtime import pick_device
    from monosemantic.sae.ladder import train_ladder

    dev = pick_device(device)
    acts = open_activations(source)
    acts.check_sample()  # NaN/inf stop the command before training starts
    seed = train.seed if hasattr(train, "seed") else 0
    ckpt_dir, every, resume = checkpoint or (None, 0, False)
    return train_ladder(
        lambda skip: prefetch(acts.batches(train.batch_size, seed=seed, skip_rows=skip), prefetch_depth),
        acts.d,
        acts.n_rows,
        ladder,
        train,
        out_root,
        {"activations": str(source), **extra},
        force=force,
        device=dev,
        checkpoint_dir=ckpt_dir,
        checkpoint_every=every,
        resume=resume,
    )


def evaluate(
    layout: paths.RunLayout, model: str, cfg: Any, force: bool, progress: bool, ctx_len: int | None = None
) -> dict[str, Any]:
    from monosemantic.eval import report
    from monosemantic.transformer.subject import HF_PREFIX, hook_dirname, is_run_model, subject_key

    key, hook_dir = subject_key(layout, model), hook_dirname(cfg.hook)
    own = is_run_model(layout, model)
    root = layout.saes(key, hook_dir)
    found = [p for p in root.glob("*") if (p / paths.SAE_CONFIG).is_file()]
    # natural order: tm2023-512 before tm2023-1024
    found.sort(key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    folders = {p.name: p for p in found}
    if not folders:
        raise UserError(f"{root}: no SAEs to evaluate; run `monosemantic sae train --run {layout.root}`")
    return report.run(
        layout.transformer(model) if own else model.removeprefix(HF_PREFIX),
        folders,
        layout.tokens if own else layout.root / f"tokens-{key}",
        layout.eval(key, hook_dir),
        cfg,
        force=force,
        progress=progress,
        ctx_len=ctx_len,
    )


def cmd_harvest(args: argparse.Namespace) -> None:
    from monosemantic.cli import configs

    cfgs = configs(args)
    harvest(
        paths.RunLayout(args.run), args.model, cfgs["harvest"], args.force, args.progress, args.ctx_len, cfgs["tokens"]
    )


def cmd_sae_train(args: argparse.Namespace) -> None:
    from monosemantic.activations.harvest import HarvestConfig
    from monosemantic.config import load_preset

    ladder, train = sae_configs(load_preset(args.preset)["sae"], args)
    if args.prefetch < 0:
        raise UserError(f"--prefetch must be 0 or more, got {args.prefetch}")
    if args.activations is not None:
        if args.out is None:
            raise UserError("--activations needs --out DIR for the SAEs")
        ckpt = (args.out / CHECKPOINT_DIR, checkpoint_every(args), args.resume)
        folders = train_saes(
            args.activations, args.out, ladder, train, args.device, args.force, {}, ckpt, args.prefetch
        )
    else:
        if args.run is None:
            raise UserError("give --run RUN (the run's harvested activations) or --activations PATH --out DIR")
        from monosemantic.transformer.subject import hook_dirname, subject_key

        layout = paths.RunLayout(args.run)
        # the preset's hook, without this command's flags: `--checkpoint-every 0` is an SAE setting, and
        # applied to every section it would reach LMTrainConfig (which needs it > 0)
        hook = args.hook or build(HarvestConfig, load_preset(args.preset)["harvest"], argparse.Namespace()).hook
        key, hook_dir = subject_key(layout, args.model), hook_dirname(hook)
        store = layout.activations(key, hook_dir)
        if not (store / paths.CONFIG).is_file():
            raise UserError(f"{store}: no activations yet; run `monosemantic harvest --run {layout.root}`")
        folders = train_saes(
            store,
            layout.saes(key, hook_dir),
            ladder,
            train,
            args.device,
            args.force,
            {"model": key, "hook": hook},
            (sae_checkpoints(layout, key, hook_dir), checkpoint_every(args), args.resume),
            args.prefetch,
        )
    for name, folder in folders.items():
        print(f"{name:<16} {folder}")


def cmd_sae_eval(args: argparse.Namespace) -> None:
    from monosemantic.cli import configs
    from monosemantic.eval.report import format_table

    print(
        format_table(
            evaluate(
                paths.RunLayout(args.run), args.model, configs(args)["eval"], args.force, args.progress, args.ctx_len
            )
        )
    )


def cmd_sae_export(args: argparse.Namespace) -> None:
    from monosemantic.sae.saelens import export_saelens

    print(export_saelens(args.sae_dir, args.out, hook_name=args.hook))


def cmd_sae_import(args: argparse.Namespace) -> None:
    from monosemantic.io import stage_dir
    from monosemantic.sae.saelens import import_saelens

    sae = import_saelens(args.saelens_dir)
    with stage_dir(args.out) as tmp:
        sae.save(tmp)
    print(args.out)
