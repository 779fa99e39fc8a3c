"""The SAE architectures by the name written in cfg.json: one dict, in one place (STYLE P14).

    tm2023     model.SparseAutoencoder + train.SAETrainConfig    Towards Monosemanticity (2023): the default
    april2024  april.AprilSAE + april.AprilTrainConfig           Anthropic's April 2024 update (ref §10.5)
    topk       topk.TopKSAE + topk.TopKTrainConfig               Gao et al. 2024: TopK + AuxK

`SparseAutoencoder.load` dispatches through this dict, and a CLI `--arch` flag picks from its keys:

    arch = ARCHITECTURES["topk"]
    sae = arch.sae(arch.sae.config_class(d_in=512, n_features=4096))
    train_sae([sae], batches, arch.train_config(n_steps=1000))
"""

from __future__ import annotations

from dataclasses import dataclass

from monosemantic.sae.april import AprilSAE, AprilTrainConfig
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.topk import TopKSAE, TopKTrainConfig
from monosemantic.sae.train import SAETrainConfig, TrainRecipe


@dataclass(frozen=True)
class Architecture:
    """One SAE variant: its model class and the train config (recipe) that trains it."""

    sae: type[SparseAutoencoder]
    """The model class; its shape config is `sae.config_class`."""
    train_config: type[TrainRecipe]
    """Its frozen train-config dataclass; `train_sae` takes an instance."""


ARCHITECTURES: dict[str, Architecture] = {
    "tm2023": Architecture(SparseAutoencoder, SAETrainConfig),
    "april2024": Architecture(AprilSAE, AprilTrainConfig),
    "topk": Architecture(TopKSAE, TopKTrainConfig),
}
DEFAULT_ARCHITECTURE = "tm2023"  # the paper's recipe
