"""The SAE architectures by the name written in cfg.json: model classes, one table (STYLE P14).

    tm2023     model.SparseAutoencoder   Towards Monosemanticity (2023): the default
    april2024  april.AprilSAE            Anthropic's April 2024 update (paper.md §10.5)
    topk       topk.TopKSAE              Gao et al. 2024: TopK + AuxK
    batchtopk  batchtopk.BatchTopKSAE    Bussmann et al. 2024: BatchTopK + AuxK, saved as JumpReLU
    jumprelu   jumprelu.JumpReLUSAE      Rajamanoharan et al. 2024 (Gemma Scope): JumpReLU + L0 (jumprelu_train.py);
                                         also what imported Gated and BatchTopK SAEs run as

`SAE_CLASSES` is that table. It lives in model.py, where `SparseAutoencoder.load` dispatches
through it, and each class joins it with `@register_sae` where it is defined; importing this module
(the package `__init__` does) imports every architecture's file, so the table is complete. No
trainer is imported: each recipe's train config joins `recipe.TRAIN_CONFIGS` the same way, from
tm2023.py, april.py, topk.py, batchtopk.py and jumprelu_train.py. `ARCHITECTURES` lists the trainable
classes only (every class here is).

    cls = SAE_CLASSES["topk"]
    sae = cls(cls.config_class(d_in=512, n_features=4096))
    train_sae([sae], batches, TRAIN_CONFIGS["topk"](n_steps=1000))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from monosemantic.sae.april import AprilSAE
from monosemantic.sae.batchtopk import BatchTopKSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.jumprelu_train import JumpReLUTrainConfig
from monosemantic.sae.model import SAE_CLASSES, SparseAutoencoder
from monosemantic.sae.recipe import TRAIN_CONFIGS, TrainConfig
from monosemantic.sae.topk import TopKSAE

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "SAE_CLASSES",
    "AprilSAE",
    "Architecture",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "JumpReLUTrainConfig",
    "TopKSAE",
]

DEFAULT_ARCHITECTURE = "tm2023"  # the paper's recipe


@dataclass(frozen=True)
class Architecture:
    """One SAE variant: its model class and the train config (recipe) that trains it."""

    sae: type[SparseAutoencoder]
    """The model class; its shape config is `sae.config_class`."""
    train_config: type[TrainConfig]
    """Its frozen train-config dataclass; `train_sae` takes an instance."""


def _trainable() -> list[str]:
    return [name for name, cls in SAE_CLASSES.items() if cls.trainable]


class _Architectures(Mapping[str, Architecture]):
    """The trainable `SAE_CLASSES` paired with `TRAIN_CONFIGS`, read when asked (tm2023's joins when tm2023.py
    is imported, as train.py does). Inference-only classes (`trainable` False; none at present) are not in it."""

    def __getitem__(self, name: str) -> Architecture:
        if name not in _trainable():
            raise KeyError(name)
        if name not in TRAIN_CONFIGS:
            raise LookupError(f"no train config registered for {name!r}: import monosemantic.sae.train first")
        return Architecture(SAE_CLASSES[name], TRAIN_CONFIGS[name])

    def __contains__(self, name: object) -> bool:
        return name in _trainable()

    def __iter__(self) -> Iterator[str]:
        return iter(_trainable())

    def __len__(self) -> int:
        return len(_trainable())


ARCHITECTURES: Mapping[str, Architecture] = _Architectures()
"""{name: Architecture(model class, train config)}, kept for callers that want both at once (the CLI)."""
