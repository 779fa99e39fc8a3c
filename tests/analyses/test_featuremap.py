"""The feature map: planted clusters come out as clusters; the stage fills the database."""

import sqlite3

import numpy as np

from monosemantic.analyses.featuremap import MapConfig, cluster, cluster_label, embed, run_map
from monosemantic.paths import RunLayout


def test_two_planted_direction_clusters_become_two_hdbscan_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 64))
    # 40 directions around each centre (small noise), shuffled together
    X = np.concatenate([c + 0.15 * rng.normal(size=(40, 64)) for c in centres])
    truth = np.repeat([0, 1], 40)
    order = rng.permutation(80)
    X, truth = X[order], truth[order]
    labels = cluster(embed(X, 10, 15, 0.1, seed=0), min_cluster_size=3)
    assert set(labels) == {0, 1}
    assert all(len(set(labels[truth == t])) == 1 for t in (0, 1))
    xy = embed(X, 2, 15, 0.05, seed=0)
    assert xy.shape == (80, 2) and np.isfinite(xy).all()
    # 2-D: each planted group sits closer to itself than to the other
    m0, m1 = xy[truth == 0].mean(0), xy[truth == 1].mean(0)
    spread = max(np.linalg.norm(xy[truth == t] - m, axis=1).max() for t, m in ((0, m0), (1, m1)))
    assert np.linalg.norm(m0 - m1) > spread


def test_cluster_label_counts_each_member_once():
    label = cluster_label(["the the the", "the a", "a of", None], [None, None, None, None], n_words=2)
    assert label == "the · a"
    assert cluster_label(["x"], ["Arabic script", "Arabic script", None]) == "x — Arabic script"


def test_run_map_fills_the_database(tiny_run, tiny_db):
    conn = sqlite3.connect(tiny_db)
    got = run_map(conn, RunLayout(tiny_run), MapConfig(), progress=False)
    live = conn.execute(
        "SELECT count(*) FROM features f JOIN dictionaries d ON d.id = f.dictionary_id"
        " WHERE d.kind = 'sae' AND n_active > 0"
    ).fetchone()[0]
    assert got["n_features"] == live
    rows = conn.execute("SELECT umap_x, umap_y, cluster FROM features WHERE umap_x IS NOT NULL").fetchall()
    assert len(rows) == live and all(c is not None for _, _, c in rows)
    sizes = dict(conn.execute("SELECT id, size FROM clusters"))
    assert len(sizes) == got["n_clusters"]
    for cid, size in sizes.items():
        assert conn.execute("SELECT count(*) FROM features WHERE cluster = ?", (cid,)).fetchone()[0] == size
        assert size >= 3
    assert sum(sizes.values()) + got["n_noise"] == live
    # neurons are not on the map; a second run replaces the first (same seed, same map)
    assert (
        conn.execute("SELECT count(*) FROM features WHERE umap_x IS NOT NULL AND dictionary_id = 1").fetchone()[0] == 0
    )
    first = conn.execute("SELECT umap_x FROM features ORDER BY id").fetchall()
    run_map(conn, RunLayout(tiny_run), MapConfig(), progress=False)
    assert conn.execute("SELECT umap_x FROM features ORDER BY id").fetchall() == first
