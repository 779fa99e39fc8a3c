"""Presets: named JSON files holding one section per stage config (STYLE P3).

`default` is the demo on the embedded corpus on 2 CPU cores, with model B and the universality analysis;
`full` the same pipeline on more data (about 47 minutes); `tiny` runs every stage in seconds and is what
the tests use; `smollm2` runs it on a pretrained model, SmolLM2-135M, instead of training one. A preset
may also be given as a path to a JSON file of the same shape. CLI flags override single fields on top of
the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monosemantic.errors import UserError
from monosemantic.io import read_json

if TYPE_CHECKING:  # the stage configs live beside their stages, which import torch
    from monosemantic.activations.harvest import HarvestConfig
    from monosemantic.data.corpus import CorpusConfig
    from monosemantic.data.tokenizer import TokenizerConfig
    from monosemantic.data.tokens import TokensConfig
    from monosemantic.eval.report import EvalConfig
    from monosemantic.features.config import FeaturesConfig
    from monosemantic.sae.ladder import LadderConfig
    from monosemantic.sae.train import TrainRecipe
    from monosemantic.transformer.model import TransformerConfig
    from monosemantic.transformer.train import LMTrainConfig

SECTIONS = ("corpus", "tokenizer", "tokens", "transformer", "lm", "harvest", "sae", "eval", "features")
DEMO_KEYS = {"universality", "control", "subject"}
"""The `demo` section holds the demo command's own defaults (its flags win)."""


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("monosemantic.presets").iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> dict[str, dict[str, Any]]:
    """Sections of a built-in preset by name, or of a JSON file by path."""
    if name in preset_names():
        path = Path(str(resources.files("monosemantic.presets") / f"{name}.json"))
    else:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"--preset {name}: no such preset (built in: {', '.join(preset_names())}) or file")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a preset must be a JSON object")
    unknown = set(raw) - set(SECTIONS) - {"_comment", "demo"}
    if unknown:
        raise UserError(f"{path}: unknown preset sections {', '.join(sorted(unknown))}")
    demo = raw.get("demo", {})
    if not isinstance(demo, dict) or set(demo) - DEMO_KEYS:
        raise UserError(f"{path}: the demo section may only set {', '.join(sorted(DEMO_KEYS))}")
    return {s: dict(raw.get(s, {})) for s in SECTIONS} | {"demo": dict(demo)}


@dataclass(frozen=True)
class RunConfig:
    """Every stage's config for one run: a preset's sections with the user's flags on top.

    The CLI builds it once per command (cli/common.py); `monosemantic.pipeline` reads it.
    """

    corpus: CorpusConfig
    tokenizer: TokenizerConfig
    tokens: TokensConfig
    transformer: TransformerConfig
    lm: LMTrainConfig
    harvest: HarvestConfig
    ladder: LadderConfig
    """The `sae` section's ladder: sizes, architecture, l1 sweep."""
    sae: TrainRecipe
    """The `sae` section's train config, of the ladder's architecture."""
    eval: EvalConfig
    features: FeaturesConfig
    universality: bool = False
    """The `demo` section: also train model B (`pipeline.model_b_config`) and run the universality analysis
    (paper §8.12); on in the built-in presets."""
    control: bool = False
    """The `demo` section: also shuffle model A's weights and train the ladder's largest SAE on the copy
    (`pipeline._control`), automated interpretability's control (paper §8.9)."""
    subject: str = ""
    """The `demo` section: a pretrained model fetched by name (transformer/pretrained.py, e.g. smollm2) as the
    subject instead of training model A (`pipeline.run_demo`); empty for the paper's own model."""
