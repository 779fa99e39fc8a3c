"""Stage 4: dictionary learning with sparse autoencoders (does not import transformer/ or data/).

model.py             SAEConfig + SparseAutoencoder (the 2023 paper): encode / decode / forward, save / load
april.py             AprilSAE + AprilTrainConfig: Anthropic's April 2024 recipe
topk.py              TopKSAE + TopKTrainConfig: TopK with the AuxK loss (Gao et al. 2024)
batchtopk.py         BatchTopKSAE + BatchTopKTrainConfig: BatchTopK (Bussmann et al. 2024), saved as JumpReLU
jumprelu.py          JumpReLUSAE: the JumpReLU model (Gemma Scope), also Gated and BatchTopK SAEs as published
jumprelu_train.py    JumpReLUTrainConfig: the Gemma Scope training recipe (STE, L0 penalty)
registry.py          SAE_CLASSES: {"tm2023", "april2024", "topk", "batchtopk", "jumprelu"} -> model class
recipe.py            TrainConfig (the settings every recipe shares), TrainRecipe, TRAIN_CONFIGS: name -> train config
loss.py              pure 2023 losses: reconstruction_mse, l1_penalty, total_loss, per_example_loss
schedule.py          λ warm-up and lr decay as pure functions of the step
constraints.py       unit-norm decoder rows, the parallel-gradient removal, one optimizer step
geometric_median.py  Weiszfeld, for the b_dec init
resample.py          the paper's dead-feature resampling
normalize.py         Normalizer: one scalar scale, fitted so E‖x‖ = √d_in; folds into an SAE
synthetic.py         planted sparse directions: ground truth for tests and benchmarks
saelens.py           export to / import from the SAELens folder format
foreign.py           import from sparsify and Gemma Scope folders; `import_sae` picks the format
sparse_step.py       the hand-written training step over the active features; each recipe gives its loss terms
tm2023.py            SAETrainConfig: the 2023 paper's recipe (re-exported by train.py)
train.py             train_sae(saes, batches, cfg) -> list[TrainResult], any architecture
checkpoint.py        SAECheckpointer: crash-safe checkpoints of train_sae (state, RNGs, data position)

ladder.py            LadderConfig + train_ladder: several sizes (or a λ sweep, --auto-l1) in one pass, saved
sweep.py             the --auto-l1 rule: candidates, held-out FVU, the choice

Importing the package imports the models (every architecture, so `SparseAutoencoder.load` can build
any of them) but not the trainer: `SAETrainConfig`, `TrainResult`, `train_sae`, `LadderConfig`,
`train_ladder` and the SAELens converters are looked up on first use, so the stages that only load
SAEs never import the trainer. The names in `__all__` are the public API (docs/api.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from monosemantic.sae.april import AprilSAE, AprilTrainConfig
from monosemantic.sae.batchtopk import BatchTopKSAE, BatchTopKTrainConfig
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.jumprelu_train import JumpReLUTrainConfig
from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.sae.normalize import Normalizer
from monosemantic.sae.registry import ARCHITECTURES, SAE_CLASSES
from monosemantic.sae.synthetic import mean_max_cosine, planted_features
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

if TYPE_CHECKING:
    from monosemantic.sae.ladder import LadderConfig, train_ladder
    from monosemantic.sae.saelens import export_saelens, import_saelens
    from monosemantic.sae.train import SAETrainConfig, TrainResult, train_sae

__all__ = [
    "ARCHITECTURES",
    "SAE_CLASSES",
    "AprilSAE",
    "AprilTrainConfig",
    "BatchTopKSAE",
    "BatchTopKTrainConfig",
    "JumpReLUSAE",
    "JumpReLUTrainConfig",
    "LadderConfig",
    "Normalizer",
    "SAEConfig",
    "SAETrainConfig",
    "SparseAutoencoder",
    "TopKSAE",
    "TopKSAEConfig",
    "TopKTrainConfig",
    "TrainResult",
    "export_saelens",
    "import_saelens",
    "mean_max_cosine",
    "planted_features",
    "train_ladder",
    "train_sae",
]

_LAZY = {
    "SAETrainConfig": "train",
    "TrainResult": "train",
    "train_sae": "train",
    "LadderConfig": "ladder",
    "train_ladder": "ladder",
    "export_saelens": "saelens",
    "import_saelens": "saelens",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # the trainer on first use only (module docstring)
        return getattr(importlib.import_module(f"monosemantic.sae.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
