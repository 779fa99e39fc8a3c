"""The runnable examples (examples/), in their reduced form: each must run to the end, as a user runs it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_train_and_browse_runs_end_to_end(tmp_path: Path) -> None:
    """Trains on a tensor, evaluates, builds the database from arrays, serves it on a free port and stops."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, str(EXAMPLES / "train_and_browse.py"), "--small", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "fvu" in out and "browser stopped" in out
    assert out.count("bytes of HTML") == 3  # the overview, the SAE's feature list, a feature page
    with sqlite3.connect(tmp_path / "features.sqlite") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM dictionaries ORDER BY id")]
        n_examples = conn.execute("SELECT COUNT(*) FROM examples").fetchone()[0]
    assert names == ["neurons", "batchtopk"] and n_examples > 0
    assert (tmp_path / "batchtopk" / "cfg.json").is_file()
