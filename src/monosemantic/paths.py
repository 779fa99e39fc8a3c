"""Where each stage's artifacts live: the run directory and the source cache (STYLE P9).

    runs/<name>/
      run_config.json                 the preset and overrides the run was started with
      corpus/                         corpus.jsonl  manifest.json  config.json
      tokenizer/                      tokenizer.json  config.json
      tokens/                         train_000.bin  val_000.bin  train_docs.npy  val_docs.npy  config.json
      transformer/<model>/            config.json  model.safetensors  metrics.json  train_log.jsonl
      checkpoints/transformer-<model>/ ckpt.safetensors + ckpt.json while training runs
      activations/<model>/<hook>/     config.json  acts_0000.npy  rows_0000.npy ...
      sae/<model>/<hook>/<arch>-<n>/  sae.safetensors  cfg.json  training.json  train_log.jsonl
      eval/<model>/<hook>/<arch>-<n>/ metrics.json  density.png  config.json
      features/                       features.sqlite (features/db.py), read by the browser  config.json

Every stage folder also holds `provenance.json`, the content hashes of the inputs it was built
from (provenance.py). Every file name is a constant here, so no other module spells one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from monosemantic.errors import UserError

CONFIG = "config.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
CORPUS_JSONL = "corpus.jsonl"
TOKENIZER_JSON = "tokenizer.json"
MODEL_WEIGHTS = "model.safetensors"
TRAIN_LOG = "train_log.jsonl"
RUN_CONFIG = "run_config.json"
# A saved SAE folder: sparsify's names, and SAELens's tensor names inside (sae/model.py).
SAE_WEIGHTS = "sae.safetensors"
SAE_CONFIG = "cfg.json"
FEATURES_DB = "features.sqlite"  # the feature database (features/db.py), read by the browser
TRAINING_JSON = "training.json"  # beside a trained SAE: the recipe, the data, what happened
IMPORTED_JSON = "imported.json"  # beside an imported SAE (`sae import`): its format, folder and metadata
PROVENANCE = "provenance.json"  # in every stage folder: the content hashes of its inputs (provenance.py)


NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""A model, hook or checkpoint name: one folder name, so the path it makes stays inside the run
(no `/`, and no leading dot, which rules out `.` and `..`)."""


def _name(value: str, what: str) -> str:
    if not NAME.fullmatch(value):
        raise UserError(f"{value!r}: not a {what} name (letters, digits and _ . -, not starting with a dot): "
                        "names stay inside the run folder")  # fmt: skip
    return value


def cache_dir() -> Path:
    """User cache for downloaded sources: $MONOSEMANTIC_CACHE, else $XDG_CACHE_HOME/monosemantic."""
    if env := os.environ.get("MONOSEMANTIC_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "monosemantic"


def run_around(path: str | os.PathLike[str]) -> Path | None:
    """The run folder `path` lies in (`path` itself excluded), or None: the nearest folder above it that
    holds a built corpus or tokens stage. An export or import into a run takes the run's lock (writers.py)."""
    for folder in Path(os.path.abspath(path)).parents:
        if any((folder / stage / CONFIG).is_file() for stage in ("corpus", "tokens")):
            return folder
    return None


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory; creating a layout touches nothing on disk."""

    root: Path

    @property
    def run_config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    # Every name below becomes a folder inside the run; `_name` refuses one that would leave it (`../x`).

    def transformer(self, model: str = "A") -> Path:
        return self.root / "transformer" / _name(model, "model")

    def checkpoints(self, stage: str) -> Path:
        """RUN/checkpoints/STAGE; `checkpoints("")` is the folder of them all."""
        return self.root / "checkpoints" / (_name(stage, "checkpoint") if stage else "")

    def activations(self, model: str, hook: str) -> Path:
        return self.root / "activations" / _name(model, "model") / _name(hook, "hook")

    def saes(self, model: str, hook: str) -> Path:
        return self.root / "sae" / _name(model, "model") / _name(hook, "hook")

    def eval(self, model: str, hook: str) -> Path:
        return self.root / "eval" / _name(model, "model") / _name(hook, "hook")

    @property
    def features(self) -> Path:
        """The feature database's stage folder (`config.json`, the database, the LLM cache)."""
        return self.root / "features"

    @property
    def features_db(self) -> Path:
        """The feature database (features/db.py), read by the browser."""
        return self.features / FEATURES_DB
