"""Fixtures of the browser tests: a synthetic feature database, a run around it, a live server."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from monosemantic.browser.synthetic import build_synthetic_db

LOCAL = "http://127.0.0.1"
"""The base URL of in-process test clients: a host the app answers to (browser/limits.py)."""


@pytest.fixture(scope="session")
def feature_db(tmp_path_factory) -> Path:
    """Synthetic database: neurons (32), A tm2023-64 and tm2023-128, B tm2023-128, hostile text."""
    return build_synthetic_db(tmp_path_factory.mktemp("browser_db") / "features.sqlite", n_features=128)


@pytest.fixture(scope="session")
def browser_run(tmp_path_factory, tiny_run, feature_db) -> Path:
    """A run directory: the tiny run's tokenizer, model and SAEs (linked) and the synthetic database.

    The synthetic A dictionaries are named like the tiny run's SAEs (tm2023-64, tm2023-128), so the
    text view runs the real model and SAE.
    """
    run = tmp_path_factory.mktemp("browser_run")
    for name in ("tokenizer", "transformer", "sae"):
        (run / name).symlink_to(tiny_run / name, target_is_directory=True)
    (run / "features").mkdir()
    (run / "features" / "features.sqlite").symlink_to(feature_db)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` in a thread on a free localhost port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
