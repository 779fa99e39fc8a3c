"""Stage 5: is the dictionary any good? (paper.md §7; may import transformer/, sae/ and data/).

metrics.py      pure fns: mse, normalized_mse, fvu, l0, l1, feature_density, density_summary,
                density_histogram; streaming ReconstructionStats / FeatureStats; the density PNG
activations.py  evaluate_on_activations(sae, acts): the metrics that need no model, from a tensor
splice.py       loss recovered: the SAE reconstruction spliced into the forward, vs zero / mean ablation
report.py       EvalConfig; evaluate_sae(s) -> metrics dict; the stage run() -> eval/<sae>/metrics.json

The public names below (docs/api.md) are looked up on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monosemantic.eval.activations import evaluate_on_activations
    from monosemantic.eval.report import EvalConfig, evaluate_sae, evaluate_saes

__all__ = ["EvalConfig", "evaluate_on_activations", "evaluate_sae", "evaluate_saes"]

_WHERE = {
    "evaluate_on_activations": "activations",
    "EvalConfig": "report",
    "evaluate_sae": "report",
    "evaluate_saes": "report",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"monosemantic.eval.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
