"""One writer per run, temporaries a killed process left are removed, and bytes reach the disk before a rename."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from monosemantic import io
from monosemantic.cli import main
from monosemantic.errors import UserError

SRC = str(Path(__file__).parents[1] / "src")
LOCK = ".monosemantic.lock"
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)$")
HOLDER = """
import fcntl, os, sys, time
folder = sys.argv[1]
os.makedirs(folder, exist_ok=True)
fd = os.open(os.path.join(folder, ".monosemantic.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)  # the writers' protocol (writers.py): flock, then the PID in the file
os.write(fd, f"{os.getpid()}\\n".encode())
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder():
    """Start a process that holds a folder's writer lock; SIGKILLed at the end."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": SRC}
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


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


def test_cli_stages_refuse_a_second_writer_with_one_line(tmp_path, holder, capsys):
    text = tmp_path / "a.txt"
    text.write_text("some text\n" * 20)
    run = tmp_path / "run"
    proc = holder(run)
    for args in (
        ["corpus", "build", "--run", run, text, "--no-progress"],
        ["tokenize", "--run", run, "--no-progress"],
        ["features", "build", "--run", run, "--no-progress"],
        ["demo", "--preset", "tiny", "--input", text, "--run", run, "--no-progress"],
    ):
        assert main([str(a) for a in args]) == 2, args
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("monosemantic: error")]
        assert len(errors) == 1 and f"(PID {proc.pid})" in errors[0], errors
    assert sorted(p.name for p in run.iterdir()) == [LOCK]  # nothing was written


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
    import shutil

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
