"""`monosemantic features ablate|split|map` on the tiny run's feature database."""

import json
import shutil
import sqlite3

import numpy as np
import torch

from monosemantic.analyses.examples import stream_slices
from monosemantic.cli import main
from monosemantic.data.tokens import TokenStore
from monosemantic.features.build import build_features
from monosemantic.features.config import FeaturesConfig
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer

from .test_ablation import manual_deltas


def test_the_three_commands_fill_their_tables(tiny_run, tiny_db, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "features").mkdir()
    shutil.copy(tiny_db, run / "features/features.sqlite")
    args = ["--run", str(run), "--no-progress"]
    assert (
        main(["features", "ablate", *args, "--n-samples", "1", "--n-new-tokens", "4", "--dictionaries", "tm2023-64"])
        == 0
    )
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"tm2023-64"} and counts["tm2023-64"]["ablated"] > 0
    assert main(["features", "split", *args, "--n-tokens", "2048", "--threshold", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["logit_links"] > 0
    assert (
        main(["features", "map", "--db", str(run / "features/features.sqlite"), "--run", str(run), "--no-progress"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["n_features"] > 0
    conn = sqlite3.connect(run / "features/features.sqlite")
    for table in ("ablations", "pinned", "logit_links", "clusters"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
    assert conn.execute("SELECT min(act_cosine) FROM splits").fetchone()[0] > 0.5
    assert conn.execute("SELECT count(*) FROM pinned WHERE length(sample) > 0").fetchone()[0] > 0


def test_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert main(["features", "ablate", "--run", str(tiny_run), "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no feature database here" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert main(["features", "map", "--run", str(tiny_run), "--db", str(tmp_path / "junk.sqlite")]) == 2
    assert "not a feature database" in capsys.readouterr().err
    assert main(["features", "split", "--run", str(tiny_run), "--threshold", "1.5"]) == 2
    assert "threshold" in capsys.readouterr().err


def test_ablate_on_the_database_that_features_build_writes(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = build_features(
        RunLayout(run), FeaturesConfig(n_tokens=4096, top_k=4, n_intervals=2, analyses=("none",)), progress=False
    )
    assert (
        main(["features", "ablate", "--run", str(run), "--no-progress", "--n-samples", "1", "--n-new-tokens", "3"]) == 0
    )
    capsys.readouterr()
    conn = sqlite3.connect(path)
    did = conn.execute("SELECT id FROM dictionaries WHERE name = 'tm2023-64'").fetchone()[0]
    feat, off, pos, mi, abl = conn.execute(
        "SELECT feature, ctx_offset, ctx_pos, max_index, ablation_json FROM examples"
        " WHERE dictionary_id = ? AND kind = 'top' AND rank = 0 ORDER BY feature LIMIT 1",
        (did,),
    ).fetchone()
    model = load_transformer(run / "transformer/A").eval().requires_grad_(False)
    sae = SparseAutoencoder.load(run / f"sae/A/{hooks.MLP_POST}/tm2023-64")
    tokens = torch.from_numpy(stream_slices(TokenStore(run / "tokens").val, np.array([off]), model.cfg.ctx_len))
    with torch.no_grad():
        deltas, _, _ = manual_deltas(model, tokens, lambda x: x - sae.encode(x)[..., feat, None] * sae.W_dec[feat])
    abl = json.loads(abl)
    want = [None if p == 0 else float(deltas[0, p - 1]) for p in range(pos - mi, pos - mi + len(abl))]
    assert [a is None for a in abl] == [w is None for w in want]
    assert np.allclose([a for a in abl if a is not None], [w for w in want if w is not None], atol=2e-4)
    assert abl[mi + 1] != 0.0  # the max token's feature helped (or hurt) the next prediction
    assert conn.execute("SELECT count(*) FROM examples WHERE kind = 'top' AND ablation_json IS NULL").fetchone()[0] == 0
