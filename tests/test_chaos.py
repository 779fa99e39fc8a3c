"""Chaos: the tiny demo SIGKILLed at 21 points spread over every stage and resumed each time ends with the same
feature database as an uninterrupted run, and leaves no temporary file or folder behind.

How the kill points are chosen, whatever the machine's load. An uninterrupted run (the reference) and the chaos
run start together, each a `python -m monosemantic demo` process on one thread, through `LAUNCHER`: it notes
the process's CPU seconds at every `demo: STAGE started` and `demo: STAGE took S s` log line, and in the chaos
run, when the stage it is told to kill starts, it arms a CPU-time timer whose signal is SIGKILL
(`timer_create` on the process's CPU clock). So a kill lands after a seeded random share of the stage's work,
measured in the CPU seconds the stage took in the reference (2-30 % for a stage's first kill, 2-60 % after: a
resumed stage has less left to do), anywhere in the process (inside C code too), and no wall clock is involved:
on a loaded machine both runs get slower, not the share of work done before the kill. The chaos loop targets
the first stage that is not finished yet and still short of its share of kills; where a kill landed is the
last stage that had started. Each stage takes 3 kills (a stage that ends before its third passes the rest to
the last stage), 21 in all. Then the demo runs to the end.

Compared: every table of the database, as a sha256 over its rows in a fixed order. Left out, because it
holds wall-clock times and so differs between two runs that are otherwise the same: the `seconds` entry
inside the JSON of `summary.value` (the case study's pass timings, analyses/proxies.py). `IGNORED` lists it;
a difference anywhere else fails the test.

Settings: the tiny preset on the test corpus, without model B (`--no-universality`: its stages are model A's
stages again) and without the UMAP step (`map`: half a minute of numba compilation per launch); SAE
checkpoints every 16 steps, so kills inside `sae train` exercise its resume too. About 100 CPU seconds: two and
a half minutes on the shared 2-core development machine at a load of 4 (docs/guide.md, "What is safe").
Linux only (`timer_create`), as CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import make_documents

N_KILLS = 21
PER_STAGE = 3
FIRST, LATER = (0.02, 0.3), (0.02, 0.6)
"""A kill comes after this share of the stage's CPU seconds in the reference, counted from the stage's start:
FIRST for its first kill, LATER after. A first kill lands in its stage even if the stage needed 3x less CPU
than in the reference; a later one may pass into the next stage (a resumed stage has less left to do)."""
SEED = 20261206
ANALYSES = "explain,ablations,split,proxies"
IGNORED: dict[tuple[str, str], set[str]] = {("summary", "value"): {"seconds"}}
"""(table, JSON column) -> keys dropped from its JSON at any depth before hashing: wall-clock timings."""
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)$")
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
}
STARTED = re.compile(r"demo: (.+) started")
TOOK = re.compile(r"demo: (.+) took [\d.]+ s.*")
CPU = re.compile(r"chaos: (.+) (started|ended) at ([\d.]+) s CPU")
LAUNCHER = r"""
import ctypes, logging, os, re, runpy, sys, time

class timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

class itimerspec(ctypes.Structure):
    _fields_ = [("interval", timespec), ("value", timespec)]

class sigevent(ctypes.Structure):  # glibc's: value, signo, notify (SIGEV_SIGNAL = 0), padded to 64 bytes
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("pad", ctypes.c_int * 12)]

def kill_after(cpu_s):
    # SIGKILL from the kernel once this process (all its threads) has run `cpu_s` more CPU seconds
    libc, timer, event = ctypes.CDLL(None, use_errno=True), ctypes.c_void_p(), sigevent(signo=9, notify=0)
    CLOCK_PROCESS_CPUTIME_ID = 2
    assert libc.timer_create(CLOCK_PROCESS_CPUTIME_ID, ctypes.byref(event), ctypes.byref(timer)) == 0
    when = itimerspec(value=timespec(int(cpu_s), int(cpu_s % 1 * 1e9)))
    assert libc.timer_settime(timer, 0, ctypes.byref(when), None) == 0

class Marks(logging.Filter):
    def filter(self, record):
        for when, pattern in (("started", r"demo: (.+) started"), ("ended", r"demo: (.+) took [\d.]+ s.*")):
            m = re.fullmatch(pattern, record.getMessage())
            if m:
                sys.stderr.write(f"chaos: {m.group(1)} {when} at {time.process_time():.4f} s CPU\n")
                if when == "started" and m.group(1) == os.environ.get("CHAOS_STAGE"):
                    kill_after(max(float(os.environ["CHAOS_CPU_S"]), 1e-3))
        return True

logging.getLogger("monosemantic").addFilter(Marks())  # the pipeline's logger (pipeline.py)
sys.argv[0] = "monosemantic"
runpy.run_module("monosemantic", run_name="__main__", alter_sys=True)
"""


def demo(corpus: Path, run: Path, kill: tuple[str, float] | None = None) -> subprocess.Popen:
    """The demo through LAUNCHER; `kill` = (stage, CPU seconds after its start) arms its SIGKILL."""
    cmd = [sys.executable, "-c", LAUNCHER, "demo", "--preset", "tiny", "--input", str(corpus), "--run", str(run)]
    cmd += ["--no-progress", "--no-universality", "--features-analyses", ANALYSES, "--sae-checkpoint-every", "16"]
    env = {**ENV, "CHAOS_STAGE": kill[0], "CHAOS_CPU_S": repr(kill[1])} if kill else ENV
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)


class Reference:
    """The uninterrupted run, read in a thread: each stage's order and CPU seconds as soon as they are known."""

    def __init__(self, corpus: Path, run: Path) -> None:
        self.proc = demo(corpus, run)
        self.order: list[str] = []
        self.marks: dict[tuple[str, str], float] = {}
        self.log: list[str] = []
        self.ended = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            with self.changed:
                if m := CPU.fullmatch(line.rstrip()):
                    self.marks[m.group(1), m.group(2)] = float(m.group(3))
                    if m.group(2) == "started":
                        self.order.append(m.group(1))
                self.changed.notify_all()
        self.proc.wait()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def known(self) -> tuple[list[str], bool]:
        """The stages started so far, in order, and whether the run has ended (then that is all of them)."""
        with self.changed:
            return list(self.order), self.ended

    def wait_past(self, n: int) -> None:
        """Wait until more than `n` stages have started, or the run has ended."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.order) > n or self.ended, timeout=600)

    def cpu(self, stage: str) -> float:
        """The stage's CPU seconds in this run, waiting for it to finish (it runs ahead of the chaos run)."""
        with self.changed:
            self.changed.wait_for(lambda: (stage, "ended") in self.marks or self.ended, timeout=600)
        assert (stage, "ended") in self.marks, "".join(self.log[-20:])
        return self.marks[stage, "ended"] - self.marks[stage, "started"]

    def finish(self) -> list[str]:
        self.thread.join(timeout=600)
        assert self.proc.returncode == 0, "".join(self.log[-20:])
        return self.order


def _without(value: object, keys: set[str]) -> object:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def table_hashes(path: Path) -> dict[str, str]:
    """sha256 of every table's rows (sorted; the IGNORED JSON keys dropped), by table name."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            cols = [c[0] for c in cursor.description]
            rows = []
            for row in cursor:
                cells = list(row)
                for i, col in enumerate(cols):
                    keys = IGNORED.get((table, col))
                    if keys and isinstance(cells[i], str):
                        cells[i] = json.dumps(_without(json.loads(cells[i]), keys), sort_keys=True)
                rows.append(repr(cells))
            out[table] = hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()
        return out
    finally:
        conn.close()


def leftovers(run: Path) -> list[str]:
    """Temporaries, lock files and checkpoints a finished run must not hold."""
    found = []
    for dirpath, dirnames, filenames in os.walk(run):
        for name in [*dirnames, *filenames]:
            if TEMP.match(name) or name.startswith((".spill", ".monosemantic.lock")) or name == "checkpoints":
                found.append(str(Path(dirpath, name).relative_to(run)))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kill timer is Linux's timer_create")
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_database(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"src": s, "text": t}) + "\n" for s, t in make_documents(300)))
    t0 = time.monotonic()
    reference = Reference(corpus, tmp_path / "reference")
    run = tmp_path / "chaos"
    rng = random.Random(SEED)
    landed: Counter[str] = Counter()
    done: set[str] = set()
    launches = 0
    while True:
        stages, finished = reference.known()
        todo = [s for s in stages if s not in done]
        short = [s for s in todo if landed[s] < PER_STAGE]
        if short:
            target = short[0]
        elif not finished:  # the reference has not shown every stage yet
            reference.wait_past(len(stages))
            continue
        elif todo and sum(landed.values()) < N_KILLS:  # a stage ended before its share: the rest go last
            target = todo[-1]
        else:
            break
        share = rng.uniform(*(LATER if landed[target] else FIRST))
        proc = demo(corpus, run, kill=(target, share * reference.cpu(target)))
        launches += 1
        _, err = proc.communicate(timeout=600)
        current: str | None = None
        for line in err.splitlines():  # the stage the kill landed in: the last one that started
            if m := STARTED.fullmatch(line):
                current = m.group(1)
            elif m := TOOK.fullmatch(line):
                done.add(m.group(1))
        if proc.returncode == 0:  # the last stage ended before the kill: the run is complete
            break
        assert proc.returncode == -signal.SIGKILL, f"exited {proc.returncode} before the kill: {err[-3000:]}"
        assert current is not None
        landed[current] += 1
    final = demo(corpus, run)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-3000:]
    stages = reference.finish()

    assert sum(landed.values()) >= 20 and set(stages) <= set(landed), (dict(landed), stages, launches)
    want = table_hashes(tmp_path / "reference" / "features" / "features.sqlite")
    got = table_hashes(run / "features" / "features.sqlite")
    assert got == want, sorted(t for t in want if got.get(t) != want[t])
    assert leftovers(run) == []
    print(
        f"\nchaos: {sum(landed.values())} kills in {launches} launches, {dict(landed)}; {time.monotonic() - t0:.0f} s"
    )
