"""Subcommands of the feature browser: `serve` (the live app) and `export-html` (a static copy).

Wiring only: the app is `browser.app.create_app`, the static site `browser.export.export_html`.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Any

from monosemantic import paths
from monosemantic.errors import UserError

DEFAULT_PORT = 8000


def database(run: Path) -> Path:
    """The feature database of a run directory (or `run` itself when it is a .sqlite file)."""
    path = run if run.is_file() else paths.RunLayout(run).features_db
    if not path.is_file():
        raise UserError(f"{path}: no feature database here (run `monosemantic features build` first)")
    return path


def serve_command(run: Path, port: int = DEFAULT_PORT) -> str:
    """The command line that serves `run`, as the demo prints it at the end."""
    return f"monosemantic serve {run}" + ("" if port == DEFAULT_PORT else f" --port {port}")


def add_parsers(sub: Any) -> None:
    sv = sub.add_parser(
        "serve",
        help="browse a run's features in a web browser (local, offline)",
        description="Serve RUN's feature database (RUN/features/features.sqlite, opened read-only) as a web app: "
        "the run overview, every dictionary's feature list with search, feature and neuron pages, the feature "
        "map and a live text view (runs the model and SAE on text you type). Every page has a JSON twin under "
        "/api. Binds to 127.0.0.1 unless --host is given; needs no network.",
    )
    sv.add_argument("run", type=Path, metavar="RUN", help="run directory (or a features.sqlite file)")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    sv.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (repeatable), e.g. behind a proxy or with --host 0.0.0.0; "
        "by default only 127.0.0.1, localhost, ::1 and the --host address are answered",
    )
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    sv.add_argument("--open", action="store_true", help="open the overview in the default web browser")
    sv.add_argument("--max-chars", type=int, default=2000, help="longest text the text view accepts (default 2000)")
    sv.add_argument("--text-timeout", type=float, default=10.0, help="text view time limit in seconds (default 10)")
    sv.add_argument("-v", "--verbose", action="store_true", help="log every request")
    sv.set_defaults(func=cmd_serve)

    ex = sub.add_parser(
        "export-html",
        help="write the feature browser as a static site",
        description="Write RUN's feature browser pages (overview, feature lists, every feature and neuron page, "
        "maps) into OUT as plain HTML files with their CSS and scripts, to open from disk or share. The live text "
        "view is left out (it needs the model).",
    )
    ex.add_argument("run", type=Path, metavar="RUN", help="run directory (or a features.sqlite file)")
    ex.add_argument(
        "out", type=Path, metavar="OUT", help="output folder (created; never the run or a folder around it)"
    )
    ex.add_argument(
        "--force", action="store_true", help="replace OUT if it is an earlier export (or an empty folder), nothing else"
    )
    ex.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    ex.set_defaults(func=cmd_export_html)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), as uvicorn would bind it; a busy port is a one-line UserError.

    Bound here, before anything is printed, and handed to uvicorn, so "port in use" comes first and
    no other process can take the port between the check and the serving.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-closed server's port is free
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"{host}:{port}: port in use by another program; pick another with --port") from None
        raise UserError(f"{host}:{port}: cannot listen here ({e.strerror})") from None
    sock.set_inheritable(True)
    return sock


def serve(run: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, open_browser: bool = False,
          max_chars: int = 2000, text_timeout: float = 10.0, verbose: bool = False,
          allow_hosts: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    from monosemantic.browser.app import TextLimits, create_app
    from monosemantic.browser.limits import DEFAULT_HOSTS
    from monosemantic.features.db import DatabaseError
    from monosemantic.features.textview import TextView

    path = database(run)
    wildcard = host in ("0.0.0.0", "::", "")
    hosts = (*DEFAULT_HOSTS, *(() if wildcard else (host,)), *allow_hosts)
    try:
        limits = TextLimits(max_chars=max_chars, timeout_s=text_timeout)
        app = create_app(run if run.is_dir() else path, limits, text_view=TextView, hosts=hosts)
    except DatabaseError as e:
        raise UserError(str(e)) from None
    sock = bind(host, port)
    url = f"http://{'127.0.0.1' if wildcard else host}:{port}/"
    if host not in DEFAULT_HOSTS:
        print(f"monosemantic: warning: serving on {host}: anyone who can reach this port can browse the run"
              + (" (add the names they use with --allow-host)" if wildcard else ""), file=sys.stderr)  # fmt: skip
    print(f"monosemantic: serving {path} at {url} (Ctrl-C to stop)", file=sys.stderr)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, log_level="info" if verbose else "warning", access_log=verbose)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is how a server stops
        pass
    finally:
        sock.close()


def cmd_serve(args: argparse.Namespace) -> None:
    serve(args.run, args.host, args.port, args.open, args.max_chars, args.text_timeout, args.verbose,
          tuple(args.allow_host))  # fmt: skip


def cmd_export_html(args: argparse.Namespace) -> None:
    from monosemantic.browser.export import export_html
    from monosemantic.features.db import DatabaseError
    from monosemantic.writers import hold_output

    try:  # the run is only read (no lock); OUT takes its writer lock (writers.hold_output)
        with hold_output(args.out):
            n = export_html(database(args.run), args.out, force=args.force, progress=args.progress, source=args.run)
    except DatabaseError as e:
        raise UserError(str(e)) from None
    print(f"{n} pages in {args.out}; open {args.out / 'index.html'}")
