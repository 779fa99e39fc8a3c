"""One writer per run, temporaries a killed process left are removed, and bytes reach the disk before a rename."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from monosemantic import io
from monosemantic.cli import main
from monosemantic.errors import UserError

SRC = str(Path(__file__).parents[1] / "src")
LOCK = ".monosemantic.lock"
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)$")
HOOK = "blocks.0.mlp.hook_post"


def refused(capsys, pid: int, args: list) -> None:
    """`monosemantic ARGS` stops with exit status 2 and one error line naming the lock's holder."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2, args
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("monosemantic: error")]
    assert len(errors) == 1 and f"(PID {pid})" in errors[0], (args, errors)


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time: what a refused writer must not touch."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_second_writer_gets_an_error_naming_the_holder_pid(tmp_path, holder):
    from monosemantic import writers

    proc = holder(tmp_path / "run")
    busy = rf"run: another monosemantic process \(PID {proc.pid}\) is writing here"
    with pytest.raises(UserError, match=busy), writers.hold(tmp_path / "run"):
        pass
    proc.send_signal(signal.SIGKILL)  # the kernel drops a dead process's lock
    proc.wait()
    with writers.hold(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK).read_text().strip() == str(os.getpid())
    assert list((tmp_path / "run").iterdir()) == []  # no lock file at rest


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    from monosemantic import writers

    with writers.hold(tmp_path), writers.hold(tmp_path):
        pass
    with writers.hold(tmp_path):
        pass


def test_every_writer_of_a_run_refuses_a_second_one_with_one_line(tiny_run, tmp_path, holder, capsys):
    """Each command that writes a run, imports and `--out` folders inside it included, while another holds it."""
    text = tmp_path / "a.txt"
    text.write_text("some text\n" * 20)
    saelens, acts = tmp_path / "saelens", tmp_path / "acts.npy"
    assert main(["sae", "export", str(tiny_run / "sae" / "A" / HOOK / "tm2023-64"), str(saelens)]) == 0
    np.save(acts, np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree(run)
    proc = holder(run)
    common = ["--run", run, "--no-progress"]
    for args in (
        ["corpus", "build", *common, text],
        ["tokenize", *common],
        ["lm", "train", *common],
        ["lm", "shuffle", *common],
        ["harvest", *common],
        ["sae", "train", *common],
        ["sae", "train", "--activations", acts, "--out", run / "saes", "--no-progress"],
        ["sae", "eval", *common],
        ["sae", "import", saelens, run / "sae" / "A" / HOOK / "imported"],
        ["features", "build", *common],
        *(["features", name, *common] for name in ("ablate", "split", "map", "proxies", "universality", "explain")),
        ["demo", "--preset", "tiny", "--input", text, *common],
        ["demo", "--preset", "smollm2", "--input", text, *common],
    ):
        refused(capsys, proc.pid, args)
    assert tree(run) == {**before, LOCK: tree(run)[LOCK]}  # nothing was written


def test_exports_imports_and_a_database_elsewhere_lock_the_folder_they_write_in(tiny_run, tmp_path, holder, capsys):
    """An OUT outside any run is swapped in whole, so its writer holds the lock of the folder holding it."""
    sae = tiny_run / "sae" / "A" / HOOK / "tm2023-64"
    saelens = tmp_path / "saelens"
    assert main(["sae", "export", str(sae), str(saelens)]) == 0
    run, out = tmp_path / "run", tmp_path / "out"
    shutil.copytree(tiny_run, run)
    proc = holder(out)
    for args in (
        ["sae", "export", sae, out / "saelens"],
        ["sae", "export", sae.parent, out / "hub", "--format", "hub"],
        ["sae", "import", saelens, out / "imported"],
        ["features", "export", run, out / "neuronpedia"],
        ["export-html", run, out / "site", "--no-progress"],
        ["features", "ablate", "--run", run, "--db", out / "features.sqlite", "--no-progress"],
    ):
        refused(capsys, proc.pid, args)
    assert sorted(p.name for p in out.iterdir()) == [LOCK]
    proc.kill()
    proc.wait()
    assert main(["sae", "import", str(saelens), str(out / "imported")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["imported"]  # no lock file at rest


def test_readers_take_no_lock(tmp_path, holder, capsys):
    """`serve` and `export-html` read a run another process is writing."""
    import urllib.request

    from monosemantic.browser.synthetic import build_synthetic_db

    run = tmp_path / "run"
    (run / "features").mkdir(parents=True)
    build_synthetic_db(run / "features" / "features.sqlite", n_features=16)
    holder(run)
    assert main(["export-html", str(run), str(tmp_path / "site"), "--no-progress"]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "monosemantic", "serve", str(run), "--port", str(port)]
    server = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.returncode
                time.sleep(0.2)
    finally:
        server.kill()
        server.wait()


def test_sae_train_out_folder_takes_one_writer(tmp_path, holder, capsys):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32))
    out = tmp_path / "o"
    args = ["sae", "train", "--activations", tmp_path / "acts.npy", "--out", out, "--preset", "tiny"]
    args += ["--n-features", "16", "--no-progress", "--checkpoint-every", "1"]
    proc = holder(out)
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"(PID {proc.pid})" in err
    proc.kill()
    proc.wait()
    assert main([str(a) for a in args]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tm2023-16"]


def test_sweep_removes_what_no_live_process_holds(tmp_path):
    from monosemantic import writers

    stale_dir = Path(tempfile.mkdtemp(prefix=".corpus.", suffix=".tmp", dir=tmp_path))
    (stale_dir / "corpus.jsonl").write_text("x")
    _, stale_file = tempfile.mkstemp(prefix=".config.json.", suffix=".tmp", dir=tmp_path)
    live = Path(tempfile.mkdtemp(prefix=".tokens.", suffix=".tmp", dir=tmp_path))
    held = writers.lock_temporary(live)
    kept = [tmp_path / ".hidden", tmp_path / "x.tmp", tmp_path / ".a.b.tmp"]  # not names our writers make
    for p in kept:
        p.write_text("mine")
    (tmp_path / ".link.abcdefgh.tmp").symlink_to(stale_dir)  # never followed nor removed
    try:
        removed = writers.sweep(tmp_path)
    finally:
        os.close(held)
    assert sorted(removed) == sorted([stale_dir, Path(stale_file)])
    assert live.is_dir() and all(p.is_file() for p in kept) and (tmp_path / ".link.abcdefgh.tmp").is_symlink()


def test_a_killed_stage_leaves_temporaries_the_next_writer_removes(tmp_path):
    code = """
import os, sys
from pathlib import Path
from monosemantic.io import stage_dir, write_json
with stage_dir(Path(sys.argv[1]) / sys.argv[2]) as tmp:
    write_json(tmp / "a.json", {"x": 1})
    os.kill(os.getpid(), 9)
"""
    run, text = tmp_path / "run", tmp_path / "a.txt"
    text.write_text("some text\n" * 20)
    env = {**os.environ, "PYTHONPATH": SRC}
    for stage in ("tokens", "corpus"):
        proc = subprocess.run([sys.executable, "-c", code, str(run), stage], env=env, capture_output=True)
        assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in run.iterdir()]
    assert len(left) == 2 and all(TEMP.match(n) for n in left)
    # a command that writes the run removes both: the corpus's when it builds the corpus, and the
    # other when it takes the run's lock
    assert main(["corpus", "build", "--run", str(run), str(text), "--no-progress"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["corpus"]


def test_a_killed_parallel_harvest_leaves_rank_folders_the_next_harvest_removes(tiny_run, tmp_path):
    """torchrun's ranks write beside the store until rank 0 merges them; a kill before the merge leaves them."""
    from monosemantic import writers
    from monosemantic.activations import parallel

    run = tmp_path / "run"
    for stage in ("tokens", "transformer"):
        shutil.copytree(tiny_run / stage, run / stage)
    store = run / "activations" / "A" / HOOK
    for rank in range(3):  # each rank's share, whole, as a group of 3 killed before the merge leaves them
        parallel.rank_folder(store, rank).mkdir(parents=True)
        np.save(parallel.rank_folder(store, rank) / "acts_0000.npy", np.zeros((4, 8), np.float32))
    live = writers.lock_temporary(parallel.rank_folder(store, 2))  # a rank still alive keeps its folder
    try:
        assert main(["harvest", "--run", str(run), "--preset", "tiny", "--no-progress"]) == 0
        assert sorted(p.name for p in store.parent.iterdir()) == sorted([HOOK, parallel.rank_folder(store, 2).name])
    finally:
        os.close(live)
    assert main(["harvest", "--run", str(run), "--preset", "tiny", "--no-progress", "--force"]) == 0
    assert sorted(p.name for p in store.parent.iterdir()) == [HOOK]


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1]
    )
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    target = tmp_path / "a.json"
    io.write_json(target, {"v": 1})
    kinds = [(k, Path(p).name if k == "fsync" else p) for k, p in events]
    assert kinds[0][0] == "fsync" and TEMP.match(kinds[0][1])  # the temporary's bytes first
    assert kinds[1] == ("replace", str(target))
    assert events[2] == ("fsync", str(tmp_path))  # then the folder that holds the new name

    events.clear()
    with io.stage_dir(tmp_path / "stage") as tmp:
        (tmp / "data.bin").write_bytes(b"x" * 100)  # written without io's helpers: still flushed
    synced = [p for k, p in events if k == "fsync"]
    assert any(p.endswith("data.bin") for p in synced[: events.index(("replace", str(tmp_path / "stage")))])
    assert events[-1] == ("fsync", str(tmp_path))


def test_the_feature_database_is_written_with_synchronous_normal_at_least(tiny_run, tmp_path, monkeypatch):
    from monosemantic import paths
    from monosemantic.features import build, db
    from monosemantic.features.config import FeaturesConfig

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    modes = []
    real_finalize = db.finalize

    def finalize(conn):
        modes.append(conn.execute("PRAGMA synchronous").fetchone()[0])  # 0 OFF, 1 NORMAL, 2 FULL
        real_finalize(conn)

    monkeypatch.setattr(db, "finalize", finalize)
    cfg = FeaturesConfig(n_tokens=1024, analyses=("none",), saes=("tm2023-64",), neurons=False)
    build.build_features(paths.RunLayout(run), cfg, progress=False)
    assert modes and min(modes) >= 1
    assert json.loads((run / "features" / "config.json").read_text())["kind"] == "monosemantic.features"
