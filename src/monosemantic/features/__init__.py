"""STAGE 6: the feature database (`features build`): held-out tokens through the model and its
dictionaries, streamed into per-feature records, written to one SQLite file.

`db` (the schema and its read/write helpers) is torch-free: it is the seam with `browser`, which
imports nothing else from here. The paper's analyses that run after the core records live in
`monosemantic.analyses`; `build_features` runs the steps its caller passes in.
`build_from_arrays` (arrays.py) builds the same tables from token ids and activations alone, with
no run folder (docs/api.md). The public names below are looked up on first use, so importing the
package (the browser imports `features.db`) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monosemantic.features.arrays import build_from_arrays
    from monosemantic.features.build import build_features
    from monosemantic.features.config import FeaturesConfig

__all__ = ["FeaturesConfig", "build_features", "build_from_arrays"]

_WHERE = {"FeaturesConfig": "config", "build_features": "build", "build_from_arrays": "arrays"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"monosemantic.features.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
