"""The feature browser: a read-only local web app over a run's feature database (TM's three views).

    queries.py    SQL against interp.db's schema (parameterised), returning plain dicts
    plots.py      inline SVG charts rendered on the server (no JS, no CDN)
    app.py        the Starlette app: HTML pages, their JSON twins under /api, errors
    server.py     `start(db)`: the app in a background thread on a free port (Python sessions, notebooks)
    export.py     the same pages as a static site that opens from disk
    synthetic.py  a synthetic feature database for tests, the benchmark and trying things out

It never imports torch: the live text view imports `interp.textview` inside its route. The public
names below (docs/api.md) are looked up on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monosemantic.browser.app import create_app
    from monosemantic.browser.export import export_html
    from monosemantic.browser.server import RunningBrowser, start

__all__ = ["RunningBrowser", "create_app", "export_html", "start"]

_WHERE = {"RunningBrowser": "server", "start": "server", "create_app": "app", "export_html": "export"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"monosemantic.browser.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
