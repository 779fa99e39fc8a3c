"""The dictionaries of a feature database, loaded for analysis: encode + decoder directions.

    dicts = load_dictionaries(conn, layout, model="A", hook=hooks.MLP_POST)
    f = dicts[0].encode(acts)            # [N, n_features]
    d = dicts[0].W_dec                   # [n_features, d_in], rows are feature directions

An SAE row (`kind='sae'`) is read from `layout.saes(model, hook)/name`; the neurons row
(`kind='neurons'`) is the identity dictionary: f = acts, W_dec = I, so "ablating a neuron" is zeroing
it and "pinning a neuron" sets it to a value. Every analysis then treats both the same way (the
paper compares features with neurons throughout, paper.md §8.6).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic import paths
from monosemantic.errors import UserError
from monosemantic.features.db import add_dictionary
from monosemantic.io import read_json
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


@dataclass(frozen=True)
class DictRow:
    """One row of `dictionaries`."""

    id: int
    name: str
    model: str
    hook: str
    kind: str
    n_features: int


def dictionaries(conn: sqlite3.Connection, model: str | None = None, kind: str | None = None) -> list[DictRow]:
    """Rows of `dictionaries`, optionally of one model and/or kind, SAEs in size order."""
    rows = conn.execute(
        "SELECT id, name, model, hook, kind, n_features FROM dictionaries"
        " WHERE (? IS NULL OR model = ?) AND (? IS NULL OR kind = ?) ORDER BY model, kind, n_features, name",
        (model, model, kind, kind),
    ).fetchall()
    return [DictRow(*r) for r in rows]


def neurons_row(conn: sqlite3.Connection, model: str) -> DictRow | None:
    rows = dictionaries(conn, model, "neurons")
    return rows[0] if rows else None


def load_saes(layout: paths.RunLayout, rows: list[DictRow]) -> dict[str, SparseAutoencoder]:
    """name -> SAE for the `kind='sae'` rows (all of one model)."""
    out = {}
    for r in rows:
        if r.kind != "sae":
            continue
        folder = layout.saes(r.model, hook_dirname(r.hook)) / r.name
        if not (folder / paths.SAE_CONFIG).is_file():
            raise UserError(f"{folder}: no SAE here, but the feature database lists {r.model}/{r.name}")
        out[r.name] = SparseAutoencoder.load(folder).eval()
    return out


def ensure_dictionaries(conn: sqlite3.Connection, layout: paths.RunLayout, model: str, hook: str) -> list[DictRow]:
    """The model's dictionaries, registering any missing ones found on disk (its neurons, its SAEs).

    The core build registers model A's; universality needs model B's, which have no feature rows
    of their own (`n_tokens` 0 marks a dictionary registered only to be matched against).
    """
    have = {r.name for r in dictionaries(conn, model)}
    folder = layout.transformer(model)
    if "neurons" not in have and (folder / paths.CONFIG).is_file():
        d_mlp = read_json(folder / paths.CONFIG)["model"]["d_mlp"]
        add_dictionary(conn, name="neurons", model=model, hook=hook, kind="neurons", n_features=d_mlp, n_tokens=0)
    root = layout.saes(model, hook)
    for sae_dir in sorted(root.glob("*")) if root.is_dir() else []:
        if sae_dir.name in have or not (sae_dir / paths.SAE_CONFIG).is_file():
            continue
        cfg = read_json(sae_dir / paths.SAE_CONFIG)
        n = int(cfg.get("n_features") or re.sub(r"\D", "", sae_dir.name.rpartition("-")[2]) or 0)
        add_dictionary(conn, name=sae_dir.name, model=model, hook=hook, kind="sae", n_features=n, n_tokens=0,
                       architecture=cfg.get("architecture"))  # fmt: skip
    conn.commit()
    return dictionaries(conn, model)
