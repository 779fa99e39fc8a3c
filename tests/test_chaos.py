"""Chaos: the tiny demo SIGKILLed at 21 points spread over every stage and resumed each time ends with the same
feature database as an uninterrupted run, and leaves no temporary file or folder behind.

How the kill points are chosen, cheaply. An uninterrupted run (the reference) and the chaos run start
together, each a `python -m monosemantic demo` process on one thread. The demo logs `demo: STAGE started`
and `demo: STAGE took S s` around every stage (a finished stage is skipped and logs both at once). The chaos
loop targets the first stage that is not finished yet and still short of its share of kills: it launches the
demo, waits for that stage's `started` line, sleeps a seeded random fraction of the stage's
duration in the reference run (2-10 % for its first kill, 2-35 % after: a resumed stage has less left to
do), and SIGKILLs. Where the kill landed is the last stage that had started and
not finished; each stage takes 3 kills (a stage that ends before its third passes the rest to the last
stage), 21 in all. Then the demo runs to the end.

Compared: every table of the database, as a sha256 over its rows in a fixed order. Left out, because it
holds wall-clock times and so differs between two runs that are otherwise the same: the `seconds` entry
inside the JSON of `summary.value` (the case study's pass timings, analyses/proxies.py). `IGNORED` lists it;
a difference anywhere else fails the test.

Settings: the tiny preset on the test corpus, without model B (`--no-universality`: its stages are model A's
stages again) and without the UMAP step (`map`: half a minute of numba compilation per launch); SAE
checkpoints every 16 steps, so kills inside `sae train` exercise its resume too. About two minutes on the
2-core development machine (see docs/guide.md, "What is safe").
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
FIRST, LATER = (0.02, 0.1), (0.02, 0.35)
"""A kill comes a fraction of the stage's reference duration after the stage starts, drawn from FIRST for the
stage's first kill and LATER after: small, because a resumed stage has less left to do, and a kill that
comes after its stage has ended lands in a later one and leaves the skipped stages without any."""
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
STARTED = re.compile(r"demo: (.+) started$")
TOOK = re.compile(r"demo: (.+) took ([\d.]+) s")


def demo(corpus: Path, run: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "monosemantic", "demo", "--preset", "tiny", "--input", str(corpus), "--run", str(run)]
    cmd += ["--no-progress", "--no-universality", "--features-analyses", ANALYSES, "--sae-checkpoint-every", "16"]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)


class Reference:
    """The uninterrupted run, read in a thread: each stage's order and duration as soon as it is known."""

    def __init__(self, corpus: Path, run: Path) -> None:
        self.proc = demo(corpus, run)
        self.order: list[str] = []
        self.seconds: dict[str, float] = {}
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
                if m := STARTED.search(line.rstrip()):
                    self.order.append(m.group(1))
                elif m := TOOK.search(line):
                    self.seconds[m.group(1)] = float(m.group(2))
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

    def duration(self, stage: str) -> float:
        """The stage's seconds in this run, waiting for it to finish (it runs ahead of the chaos run)."""
        with self.changed:
            self.changed.wait_for(lambda: stage in self.seconds or self.ended, timeout=600)
        assert stage in self.seconds, "".join(self.log[-20:])
        return self.seconds[stage]

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
        proc = demo(corpus, run)
        launches += 1
        assert proc.stderr is not None
        current: str | None = None
        for line in proc.stderr:
            if m := STARTED.search(line.rstrip()):
                current = m.group(1)
                if current == target:
                    break
            elif m := TOOK.search(line):
                done.add(m.group(1))
        else:
            assert proc.wait() == 0  # it finished before reaching the target: nothing left to kill
            break
        time.sleep(rng.uniform(*(LATER if landed[target] else FIRST)) * reference.duration(target))
        proc.send_signal(signal.SIGKILL)
        for line in proc.stderr:  # what it logged before it died: the stage the kill landed in
            if m := STARTED.search(line.rstrip()):
                current = m.group(1)
            elif m := TOOK.search(line):
                done.add(m.group(1))
        if proc.wait() == 0:  # the last stage ended before the kill: the run is complete
            break
        assert proc.returncode == -signal.SIGKILL, f"exited {proc.returncode} before the kill"
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
