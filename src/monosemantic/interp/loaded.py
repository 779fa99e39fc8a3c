"""The dictionaries of a feature database, loaded for analysis: encode + decoder directions.

    dicts = load_dictionaries(conn, layout, model="A", hook=hooks.MLP_POST)
    f = dicts[0].encode(acts)            # [N, n_features]
    d = dicts[0].W_dec                   # [n_features, d_in], rows are feature directions

An SAE row (`kind='sae'`) is read from `layout.saes(model, hook)/name`; the neurons row
(`kind='neurons'`) is the identity dictionary: f = acts, W_dec = I, so "ablating a neuron" is zeroing
it and "pinning a neuron" sets it to a value. Every analysis then treats both the same way (the
paper compares features with neurons throughout, TM §8.6).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.errors import UserError
from monosemantic.paths import SAE_CONFIG, RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.subject import hook_dirname


@dataclass(frozen=True)
class Dictionary:
    """One dictionary of the database with its weights."""

    id: int
    """`dictionaries.id`."""
    name: str
    kind: str
    """'sae' or 'neurons'."""
    n_features: int
    encode: Callable[[Tensor], Tensor]
    """`acts [N, d_in]` → `f [N, n_features]` (f ≥ 0 for ReLU SAEs and neurons)."""
    W_dec: Tensor
    """`[n_features, d_in]` feature directions (unit-norm rows for the paper's SAE; I for neurons)."""
    sae: SparseAutoencoder | None = None


def _identity(x: Tensor) -> Tensor:
    return x


def load_dictionaries(
    conn: sqlite3.Connection,
    layout: RunLayout,
    model: str,
    hook: str,
    kinds: tuple[str, ...] = ("sae", "neurons"),
    names: tuple[str, ...] = (),
) -> list[Dictionary]:
    """The database's dictionaries of `model`/`hook` (of `kinds`; only `names` if given), by size.

    Raises a UserError when a named dictionary is missing or an SAE folder is not there.
    """
    rows = conn.execute(
        "SELECT id, name, kind, n_features FROM dictionaries WHERE model = ? AND hook = ? ORDER BY n_features, name",
        (model, hook),
    ).fetchall()
    rows = [r for r in rows if r[2] in kinds and (not names or r[1] in names)]
    missing = set(names) - {r[1] for r in rows}
    if missing:
        raise UserError(f"feature database: no dictionary {', '.join(sorted(missing))} of model {model} at {hook}")
    out = []
    for id_, name, kind, n in rows:
        if kind == "neurons":
            out.append(Dictionary(int(id_), name, kind, int(n), _identity, torch.eye(int(n))))
            continue
        folder = layout.saes(model, hook_dirname(hook)) / name  # `path:input` is the folder `path-input`
        if not (folder / SAE_CONFIG).is_file():
            raise UserError(f"{folder}: no SAE here for dictionary {name} of the feature database")
        sae = SparseAutoencoder.load(folder).eval().requires_grad_(False)
        if sae.cfg.n_features != n:
            raise UserError(f"{folder}: {sae.cfg.n_features} features, the database says {n}")
        out.append(Dictionary(int(id_), name, kind, int(n), sae.encode, sae.W_dec.detach(), sae))
    return out


def column_encoder(dictionary: Dictionary, cols: Tensor) -> Callable[[Tensor], Tensor]:
    """`acts [N, d_in]` → `f[:, cols]` `[N, len(cols)]`, computing only those columns where it can.

    The ReLU SAEs (the paper's and April 2024's) are elementwise after the encoder, so a column
    subset of W_enc gives the same numbers at a fraction of the cost (most of a large dictionary
    is dead or ultralow, and analyses skip those). TopK couples the features, so it encodes all
    of them and selects.
    """
    sae = dictionary.sae
    if sae is None or type(sae).activation is not SparseAutoencoder.activation:
        return lambda x: dictionary.encode(x)[:, cols]
    W_enc, b_enc = sae.W_enc.detach()[:, cols].contiguous(), sae.b_enc.detach()[cols]
    b_dec = sae.b_dec.detach() if sae.pre_encoder_bias else torch.zeros_like(sae.b_dec)
    return lambda x: torch.relu((x - b_dec) @ W_enc + b_enc)
