"""`monosemantic features ablate|split|map` on the tiny run's feature database."""

import json
import shutil
import sqlite3

from monosemantic.cli import main


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
