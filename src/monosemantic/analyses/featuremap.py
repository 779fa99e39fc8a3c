"""The feature map: a UMAP co-embedding of decoder directions, with clusters (TM appendix "Feature UMAPs").

    monosemantic features map --run runs/default

Each feature is its decoder direction (`W_dec[i]`, d_mlp-dimensional). The directions of several
dictionaries are embedded jointly, as the paper embeds A/0 and A/1 together (paper.md §8.14):

- 2-D UMAP, `n_neighbors=15, metric="cosine", min_dist=0.05` (the paper's first map; its second,
  with a third dictionary added, uses `min_dist=0.01`) → `features.umap_x`, `umap_y`;
- clusters: HDBSCAN with `min_cluster_size=3` on a separate 10-D UMAP (`min_dist=0.1`) →
  `features.cluster` (−1: noise) and one `clusters` row each, labelled by the words most common
  among its members' `top_tokens` (and their explanation, where the database has one).

Features that never fired (density 0) are left out: their directions never trained and would only
add noise (they keep NULL coordinates). Seeded: umap-learn with a `random_state` runs
single-threaded and gives the same map on the same machine. The paper orders its cluster list by a
1-D UMAP of the medoids; we do not (clusters are numbered by HDBSCAN).
"""

from __future__ import annotations

import logging
import sqlite3
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from monosemantic.analyses.loader import load_dictionaries
from monosemantic.features import db
from monosemantic.paths import RunLayout
from monosemantic.transformer import hooks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapConfig:
    """Which dictionaries go on the map, and the paper's UMAP and HDBSCAN settings."""

    model: str = "A"
    """Model whose dictionaries are mapped."""
    hook: str = hooks.MLP_POST
    """Hook the dictionaries read."""
    dictionaries: tuple[str, ...] = ()
    """Dictionary names to co-embed; empty = every SAE of the model at the hook."""
    min_density: float = 0.0
    """Map only features with density above this (0: every feature that ever fired)."""
    n_neighbors: int = 15
    """UMAP neighbours (TM: 15)."""
    min_dist: float = 0.05
    """Minimum distance of the 2-D map (TM: 0.05 for A/0 + A/1; 0.01 with A/2 added)."""
    cluster_dims: int = 10
    """Dimensions of the UMAP the clusters are found in (TM: 10)."""
    cluster_min_dist: float = 0.1
    """Minimum distance of that UMAP (TM: 0.1)."""
    min_cluster_size: int = 3
    """HDBSCAN's smallest cluster (TM: 3)."""
    seed: int = 0
    """UMAP random_state."""

    def __post_init__(self) -> None:
        for name in ("n_neighbors", "cluster_dims", "min_cluster_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2, got {getattr(self, name)}")


def embed(X: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """UMAP of the rows of `X [n, d]` under the cosine metric → `[n, n_components]` float32."""
    import umap  # heavy (numba); imported when a map is made

    n_neighbors = min(n_neighbors, len(X) - 1)
    reducer = umap.UMAP(
        n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed
    )
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded runs are single-threaded
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(reducer.fit_transform(X), dtype=np.float32)


def cluster(Y: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN labels `[n]` of the points `Y [n, k]`: 0, 1, ... per cluster, −1 for noise."""
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(Y).astype(np.int64)


def cluster_label(top_tokens: list[str | None], explanations: list[str | None], n_words: int = 3) -> str:
    """A short label: the `n_words` words found in most members' `top_tokens` (each member counted
    once per word), then the most common explanation if any member has one."""
    words: Counter[str] = Counter()
    for t in top_tokens:
        words.update(set((t or "").split()))
    label = " · ".join(w for w, _ in words.most_common(n_words)) or "(no top tokens)"
    said = Counter(e for e in explanations if e)
    return f"{label} — {said.most_common(1)[0][0]}" if said else label


def run_map(conn: sqlite3.Connection, layout: RunLayout, cfg: MapConfig, progress: bool = True) -> dict:
    """Co-embed the chosen dictionaries; write umap_x/umap_y/cluster and `clusters` (replacing any
    earlier map). Returns {"n_features", "n_clusters", "n_noise"}."""
    dicts = load_dictionaries(conn, layout, cfg.model, cfg.hook, kinds=("sae",), names=cfg.dictionaries)
    keys, dirs, tops, expl = [], [], [], []
    for d in dicts:
        rows = conn.execute(
            "SELECT feature, top_tokens, explanation FROM features"
            " WHERE dictionary_id = ? AND density > ? AND n_active > 0 ORDER BY feature",
            (d.id, cfg.min_density),
        ).fetchall()
        idx = [r[0] for r in rows]
        keys += [(d.id, f) for f in idx]
        dirs.append(d.W_dec[idx].float().numpy())
        tops += [r[1] for r in rows]
        expl += [r[2] for r in rows]
    conn.execute("UPDATE features SET umap_x = NULL, umap_y = NULL, cluster = NULL")
    conn.execute("DELETE FROM clusters")
    if len(keys) < cfg.cluster_dims + 2:
        log.warning("feature map: only %d live features; no map made", len(keys))
        conn.commit()
        return {"n_features": 0, "n_clusters": 0, "n_noise": 0}
    X = np.concatenate(dirs)
    log.info("UMAP of %d decoder directions from %s", len(X), ", ".join(d.name for d in dicts))
    xy = embed(X, 2, cfg.n_neighbors, cfg.min_dist, cfg.seed)
    labels = cluster(embed(X, cfg.cluster_dims, cfg.n_neighbors, cfg.cluster_min_dist, cfg.seed), cfg.min_cluster_size)
    conn.executemany(
        "UPDATE features SET umap_x = ?, umap_y = ?, cluster = ? WHERE dictionary_id = ? AND feature = ?",
        ((float(x), float(y), int(c), d, f) for (d, f), (x, y), c in zip(keys, xy, labels, strict=True)),
    )
    n_clusters = int(labels.max()) + 1
    db.insert_rows(
        conn,
        "clusters",
        (
            {
                "id": c,
                "label": cluster_label([tops[k] for k in members], [expl[k] for k in members]),
                "size": len(members),
            }
            for c in range(n_clusters)
            for members in [np.flatnonzero(labels == c)]
        ),
    )
    db.set_summary(
        conn,
        "umap",
        {"dictionaries": [d.name for d in dicts], "n_features": len(keys), **{k: getattr(cfg, k) for k in _SETTINGS}},
    )
    conn.commit()
    return {"n_features": len(keys), "n_clusters": n_clusters, "n_noise": int((labels < 0).sum())}


_SETTINGS = ("n_neighbors", "min_dist", "cluster_dims", "cluster_min_dist", "min_cluster_size", "seed")
