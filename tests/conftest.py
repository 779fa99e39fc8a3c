"""Shared fixtures: offline hub settings, a seed per test, and a small deterministic corpus."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing may reach a model or dataset hub (README "Offline"); set before any HF import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    from monosemantic.runtime import seed_everything

    seed_everything(0)


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
    """Start a process that holds a folder's writer lock (writers.py); SIGKILLed at the end."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def one_thread():
    """Tiny tensors on a shared 2-core machine: a second OpenMP thread only spin-waits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser):
    parser.addoption("--skip-network", action="store_true", help="skip tests that fetch from npm/PyPI")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--skip-network"):
        skip = pytest.mark.skip(reason="--skip-network")
        for item in items:
            if "network" in item.keywords:
                item.add_marker(skip)


SUBJECTS = ["the whale", "the captain", "a sailor", "the ship", "the sea", "our crew", "the harpoon"]
VERBS = ["sees", "follows", "breaks", "finds", "loves", "fears", "carries"]
OBJECTS = ["the rope", "a storm", "the moon", "the old map", "a golden coin", "the white whale"]
OTHER = [
    "مرحبا بالعالم، هذا نص عربي قصير.",  # Arabic
    "שלום עולם, זהו טקסט בעברית.",  # Hebrew
    "你好，世界。这是一个简短的中文句子。",  # CJK
    "def add(a, b):\n    return a + b\n",
    "ACGTTGCAACGTGGCATTACG",
]


def make_documents(n_docs: int = 200, seed: int = 0) -> list[tuple[str, str]]:
    """(src, text) documents with learnable structure: templated sentences, counting, code, scripts."""
    r = random.Random(seed)
    docs = []
    for i in range(n_docs):
        kind = i % 4
        if kind == 0:
            text = " ".join(f"{r.choice(SUBJECTS)} {r.choice(VERBS)} {r.choice(OBJECTS)}." for _ in range(30))
            src = "prose/story"
        elif kind == 1:
            start = r.randint(0, 50)
            text = ", ".join(str(k) for k in range(start, start + 60))
            src = "synthetic/count"
        elif kind == 2:
            text = "\n".join(r.choice(OTHER) for _ in range(12))
            src = "multi/mixed"
        else:
            text = "\n".join(f"x_{k} = {r.randint(0, 99)} + {r.randint(0, 99)}" for k in range(25))
            src = "code/python"
        docs.append((src, text))
    return docs


@pytest.fixture
def documents() -> list[tuple[str, str]]:
    return make_documents()


@pytest.fixture
def corpus_jsonl(tmp_path) -> str:
    """A user's .jsonl corpus file ({"src", "text"} per line)."""
    path = tmp_path / "my_corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for src, text in make_documents(300):
            f.write(json.dumps({"src": src, "text": text}, ensure_ascii=False) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny demo run (corpus → model A → harvest → SAEs 64 and 128 → eval), built once.

    Without the feature database (the demo's last stage): the interp tests build theirs with the
    settings they check. Read-only for tests: copy it (`shutil.copytree`) before writing into it.
    """
    from monosemantic.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"src": s, "text": t}) + "\n" for s, t in make_documents(300)))
    run = root / "run"
    demo = ["demo", "--preset", "tiny", "--input", str(corpus), "--run", str(run), "--no-progress"]
    assert main([*demo, "--features-analyses", "none", "--no-universality"]) == 0
    shutil.rmtree(run / "features")
    return run
