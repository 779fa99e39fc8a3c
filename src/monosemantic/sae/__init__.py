"""Stage 4: dictionary learning with sparse autoencoders (does not import transformer/ or data/).

model.py             SAEConfig + SparseAutoencoder (the 2023 paper): encode / decode / forward, save / load
april.py             AprilSAE + AprilTrainConfig: Anthropic's April 2024 recipe
topk.py              TopKSAE + TopKTrainConfig: TopK with the AuxK loss (Gao et al. 2024)
jumprelu.py          JumpReLUSAE: JumpReLU inference (Gemma Scope), also Gated and BatchTopK as published
registry.py          SAE_CLASSES: {"tm2023", "april2024", "topk", "jumprelu"} -> model class (what `load` dispatches on)
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
train.py             SAETrainConfig + train_sae(saes, batches, cfg) -> list[TrainResult], any architecture
checkpoint.py        SAECheckpointer: crash-safe checkpoints of train_sae (state, RNGs, data position)

Importing the package imports the models (every architecture, so `SparseAutoencoder.load` can build
any of them) but not the trainer: `SAETrainConfig`, `TrainResult` and `train_sae` are looked up in
train.py on first use, so the stages that only load SAEs never import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monosemantic.sae.april import AprilSAE, AprilTrainConfig
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.sae.registry import ARCHITECTURES, SAE_CLASSES
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

if TYPE_CHECKING:
    from monosemantic.sae.train import SAETrainConfig, TrainResult, train_sae

__all__ = [
    "ARCHITECTURES",
    "SAE_CLASSES",
    "AprilSAE",
    "AprilTrainConfig",
    "JumpReLUSAE",
    "SAEConfig",
    "SAETrainConfig",
    "SparseAutoencoder",
    "TopKSAE",
    "TopKSAEConfig",
    "TopKTrainConfig",
    "TrainResult",
    "train_sae",
]

_FROM_TRAIN = ("SAETrainConfig", "TrainResult", "train_sae")


def __getattr__(name: str) -> Any:
    if name in _FROM_TRAIN:  # the trainer on first use only (module docstring)
        from monosemantic.sae import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
