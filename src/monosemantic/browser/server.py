"""The browser in a background thread, for Python sessions and notebooks: `start(db)` → `.url`, `.stop()`.

    server = start("features.sqlite")          # a free port on 127.0.0.1
    print(server.url)                          # http://127.0.0.1:43817/
    server.stop()

The same app as `monosemantic serve` (`app.create_app`), served by uvicorn on a socket bound here,
so port 0 picks a free port and `url` names it before the first request. No text view: that needs
the run's model (`monosemantic serve RUN` has it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monosemantic.browser.app import create_app
from monosemantic.browser.limits import DEFAULT_HOSTS


@dataclass
class RunningBrowser:
    """A browser serving in a background thread; `stop()` shuts it down."""

    url: str
    """The overview page, e.g. http://127.0.0.1:43817/."""
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait (at most `timeout` seconds) for the thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> RunningBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    database: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> RunningBrowser:
    """Serve the feature database (a `.sqlite` file, or a run folder) until `stop()`; returns once it answers.

    Raises `features.db.DatabaseError` (one line naming the file) when there is no readable database,
    and TimeoutError when the server has not started within `timeout` seconds.
    """
    import uvicorn

    app = create_app(Path(database), hosts=(*DEFAULT_HOSTS, host))  # answers to the name its url gives
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="monosemantic-browser")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the browser did not start on {host}:{bound}")
        time.sleep(0.02)
    return RunningBrowser(f"http://{host}:{bound}/", server, thread)
