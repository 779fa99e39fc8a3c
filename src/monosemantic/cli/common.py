"""What every command shares: the run/preset flags, and the `RunConfig` built once from the preset and flags."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from monosemantic.cli.args import add_dataclass_args, build, field_names, given
from monosemantic.config import RunConfig, load_preset, preset_names
from monosemantic.errors import UserError

MODEL_HELP = (
    "model name under RUN/transformer (default A), or a Hugging Face causal LM: a save_pretrained folder, a .gguf "
    "file, or hf:NAME for a hub name already in the local cache (its artifacts go under hf-<name>)"
)
RESUME_HELP = (
    "continue from the checkpoint an interrupted run left (an error if there is none); without it a "
    "checkpoint made with the same settings is resumed too, and --force discards it"
)


def add_common(p: argparse.ArgumentParser, run_required: bool = True) -> None:
    """--run, --preset, --force, --no-progress, --verbose."""
    p.add_argument(
        "--run",
        "--run-dir",  # the spelling for torchrun, whose own parser reads `--run` as its `--run-path`
        dest="run",
        type=Path,
        required=run_required,
        help="run directory (created if missing)" + ("" if run_required else "; default runs/<preset>"),
    )
    p.add_argument(
        "--preset",
        default="default",
        help=f"built-in preset ({', '.join(preset_names())}) or a JSON file of the same shape; flags override it",
    )
    p.add_argument("--force", action="store_true", help="redo stages whose artifacts already exist")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def section_classes() -> dict[str, type]:
    """Preset section -> the stage config it holds (imported here: stage modules import torch).

    "sae" is not here: it holds a LadderConfig plus an architecture's train config (`sae_configs`).
    """
    from monosemantic.activations.harvest import HarvestConfig
    from monosemantic.data.corpus import CorpusConfig
    from monosemantic.data.tokenizer import TokenizerConfig
    from monosemantic.data.tokens import TokensConfig
    from monosemantic.eval.report import EvalConfig
    from monosemantic.features.config import FeaturesConfig
    from monosemantic.transformer.model import TransformerConfig
    from monosemantic.transformer.train import LMTrainConfig

    return {
        "corpus": CorpusConfig,
        "tokenizer": TokenizerConfig,
        "tokens": TokensConfig,
        "transformer": TransformerConfig,
        "lm": LMTrainConfig,
        "harvest": HarvestConfig,
        "eval": EvalConfig,
        "features": FeaturesConfig,
    }


def train_config_classes() -> dict[str, type]:
    """Architecture name -> its train config class (the SAE registry's recipes)."""
    from monosemantic.sae.registry import ARCHITECTURES

    return {name: a.train_config for name, a in ARCHITECTURES.items()}


def add_sae_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """LadderConfig's flags, then the union of every architecture's train-config flags, then checkpointing."""
    from monosemantic.sae.checkpoint import CheckpointConfig
    from monosemantic.sae.ladder import LadderConfig

    seen: set[str] = set()
    add_dataclass_args(p, CheckpointConfig, prefix=prefix, seen=seen)
    add_dataclass_args(p, LadderConfig, prefix=prefix, seen=seen)
    for cls in train_config_classes().values():
        add_dataclass_args(p, cls, prefix=prefix, seen=seen, skip=("progress",))


RUN_SETTINGS = frozenset({"batch_size", "n_steps", "log_every", "step", "matmul_dtype", "dtype"})
"""The `sae` settings of a preset that describe the run, not the recipe: the only ones applied when
`--arch` is not the preset's (`arch`, default tm2023), whose λ, lr and clipping are tuned for it alone."""


def sae_configs(section: dict[str, Any], args: argparse.Namespace, prefix: str = "") -> tuple[Any, Any]:
    """(LadderConfig, the arch's train config) from a preset's `sae` section and the flags.

    The section's recipe settings apply to the preset's architecture only; another `--arch` gets
    its own recipe's defaults plus the section's `RUN_SETTINGS` (docs/decisions.md, "Recipes fit
    to the run")."""
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
    stray = given(args, others | ({"k"} if ladder.arch not in ("topk", "batchtopk") else set()), prefix)
    if stray:
        flags = ", ".join("--" + n.replace("_", "-") for n in sorted(stray))
        raise UserError(f"{flags}: not a setting of --arch {ladder.arch}")
    base = {k: v for k, v in section.items() if k not in ladder_keys and k in own}
    preset_arch = section.get("arch", "tm2023")
    if ladder.arch != preset_arch:  # a preset's recipe settings are tuned for its own architecture
        base = {k: v for k, v in base.items() if k in RUN_SETTINGS}
    train = build(cls, base, args, prefix)
    return ladder, dataclasses.replace(train, progress=getattr(args, "progress", True))


def checkpoint_every(args: argparse.Namespace, prefix: str = "") -> int:
    from monosemantic.sae.checkpoint import CheckpointConfig

    return build(CheckpointConfig, {}, args, prefix).checkpoint_every


def run_config(args: argparse.Namespace, flagged: tuple[str, ...] = (), prefixed: bool = False) -> RunConfig:
    """The preset (loaded once) with the user's flags on top, as one typed RunConfig.

    A stage command applies its flags to the sections it declares (`flagged`, plus "sae" when it takes SAE
    flags); the other sections come from the preset alone, so another stage's `--hook` or
    `--checkpoint-every` never reaches them. `demo` (`prefixed`) has every section's flags, each with its
    section as a prefix (`--lm-n-steps`), and its `--dtype` (`--subject-dtype`, `--hook`) sets every stage's dtype
    (subject dtype, hook) that it does not set itself.
    """
    preset = load_preset(args.preset)
    none = argparse.Namespace()
    classes = section_classes()
    for name in ("dtype", "subject_dtype", "hook"):  # demo's --dtype, --subject-dtype, --hook: each stage's not set
        if prefixed and getattr(args, name, None) is not None:
            for k in [*classes, "sae"]:
                if hasattr(args, f"{k}.{name}") and getattr(args, f"{k}.{name}") is None:
                    setattr(args, f"{k}.{name}", getattr(args, name))

    def section(k: str, cls: type) -> Any:
        if prefixed:
            return build(cls, preset[k], args, prefix=k)
        return build(cls, preset[k], args if k in flagged else none)

    built = {k: section(k, c) for k, c in classes.items()}
    if prefixed:
        ladder, train = sae_configs(preset["sae"], args, prefix="sae")
    else:
        ladder, train = sae_configs(preset["sae"], args if "sae" in flagged else none)
    universality = getattr(args, "universality", None)
    if universality is None:
        universality = bool(preset["demo"].get("universality", True))
    control = getattr(args, "control", None)
    if control is None:
        control = bool(preset["demo"].get("control", False))
    subject = str(preset["demo"].get("subject", ""))
    return RunConfig(**built, ladder=ladder, sae=train, universality=universality, control=control, subject=subject)
