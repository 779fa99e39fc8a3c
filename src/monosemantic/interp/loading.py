"""The database's dictionaries as loaded modules: a model, its hook, and the SAEs trained on it.

The analyses after the core pass (`proxies`, `universality`, `autointerp`) read which dictionaries
exist from the `dictionaries` table and load the matching folders of the run
(`RunLayout.transformer(model)`, `RunLayout.saes(model, hook) / name`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from torch import nn

from monosemantic import paths
from monosemantic.errors import UserError
from monosemantic.interp.db import add_dictionary
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.subject import hook_dirname


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


def load_model(layout: paths.RunLayout, model: str) -> nn.Module:
    from monosemantic.transformer.train import load_transformer

    folder = layout.transformer(model)
    if not (folder / paths.CONFIG).is_file():
        raise UserError(f"{folder}: no model {model}; run `monosemantic lm train --run {layout.root} --model {model}`")
    return load_transformer(folder).eval()


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
    import re

    from monosemantic.io import read_json

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
