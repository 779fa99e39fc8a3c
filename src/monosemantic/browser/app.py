"""The live browser: a Starlette app over one run's feature database, opened read-only.

    app = create_app(Path("runs/default"))      # then: uvicorn.run(app, host="127.0.0.1")

Pages (each with a JSON twin at /api + the same path, for scripts):
    /                          run overview
    /dict/{d}                  feature list (?q= &sort= &desc=1 &min_density= &max_density= &min_act=
                               &min_score= &source= &min_share= &page=)
    /dict/{d}/feature/{f}      feature (or neuron) page
    /dict/{d}/map              feature map
    /text?text=...&d=          live text view (runs model and SAE; input length and time limited)

Each worker thread keeps its own read-only connection. Responses carry a Server-Timing header
(the benchmark reads it) and a Content-Security-Policy that allows only the app's own scripts.
Unknown ids are a 404 page, malformed parameters (a search FTS5 cannot read included) a 400 page,
anything else a 500 page without a traceback. In front of the routes, `limits.Limits` checks the
Host header, the query string, the body size and the origin of POSTs; the text view's POST body
is one flat JSON object (a nested value is refused, so is deep nesting).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from monosemantic import paths
from monosemantic.browser import queries, views
from monosemantic.browser.limits import DEFAULT_HOSTS, Limits
from monosemantic.browser.render import CSP, Links, environment, plain_visible
from monosemantic.features import db

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class TextLimits:
    """Bounds on the live text view: its input is whatever a visitor types."""

    max_chars: int = 2000
    """Longest accepted input; longer is a 400."""
    timeout_s: float = 10.0
    """Wall-clock limit of one analysis (waiting for the model included); past it, a 503."""


class Browser:
    """State shared by the routes: the database path, per-thread connections, templates."""

    def __init__(
        self, db_path: Path, run: Path | None, limits: TextLimits, text_view: Callable[[Path], Any] | None
    ) -> None:
        self.db_path, self.run, self.limits, self._make_textview = db_path, run, limits, text_view
        self._local = threading.local()
        self.env = environment()
        self.links = Links(export=False)
        self.nav = queries.dictionaries(self.conn())
        self.text_lock = threading.Lock()
        self._textview: Any = None

    def conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = db.open_readonly(self.db_path)
        return c

    def page(self, template: str, ctx: dict[str, Any], api: str | None, status: int = 200) -> HTMLResponse:
        html = self.env.get_template(template).render(links=self.links, nav_dicts=self.nav, api=api, csp=CSP, **ctx)
        return HTMLResponse(html, status_code=status)

    def textview(self) -> Any:
        """The model and SAEs for the text view, made on first use by the factory the caller passed in
        (`features.textview.TextView`, which imports torch: the browser itself never does)."""
        if self._textview is None:
            if self._make_textview is None:
                raise HTTPException(503, "the text view is not available in this server (no model runner)")
            if self.run is None:
                raise HTTPException(503, "the text view needs a run directory (model and SAEs)")
            self._textview = self._make_textview(self.run)
        return self._textview


def _int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None
    if abs(n) >= 2**62:  # past SQLite's INTEGER: nothing has that id
        raise HTTPException(404, f"no such {name}")
    return n


def _float(value: str | None, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number") from None


def list_query(params: Any) -> queries.ListQuery:
    try:
        return queries.ListQuery(
            sort=params.get("sort", "feature"),
            desc=params.get("desc", "") not in ("", "0", "false"),
            q=params.get("q", ""),
            min_density=_float(params.get("min_density"), "min_density"),
            max_density=_float(params.get("max_density"), "max_density"),
            min_act=_float(params.get("min_act"), "min_act"),
            min_score=_float(params.get("min_score"), "min_score"),
            source=params.get("source", ""),
            min_share=_float(params.get("min_share"), "min_share") or 0.5,
            page=_int(params.get("page", "1"), "page"),
        )
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


def _routes(b: Browser) -> list[Route | Mount]:
    def both(path: str, template: str, build: Callable[[Request], dict[str, Any] | None], what: str) -> list[Route]:
        """The HTML page at `path` and its JSON twin at /api`path`, from one context builder."""

        def html(request: Request) -> Response:
            ctx = build(request)
            if ctx is None:
                raise HTTPException(404, f"no such {what}")
            query = f"?{request.url.query}" if request.url.query else ""
            return b.page(template, ctx, api="/api" + request.url.path + query)

        def api(request: Request) -> Response:
            ctx = build(request)
            if ctx is None:
                raise HTTPException(404, f"no such {what}")
            return JSONResponse(ctx)

        return [Route(path, html), Route("/api" + path, api)]

    def overview(request: Request) -> dict[str, Any]:
        ctx = views.overview(b.conn())
        ctx["neuron_dict"] = next((d["id"] for d in ctx["dictionaries"] if d["kind"] == "neurons"), None)
        return ctx

    def dictionary(request: Request) -> dict[str, Any] | None:
        d = _int(request.path_params["d"], "dictionary")
        q = list_query(request.query_params)
        if q.source and q.source not in queries.sources(b.conn(), d):
            raise HTTPException(400, "unknown source")
        try:
            return views.dictionary_page(b.conn(), d, q)
        except sqlite3.OperationalError as e:  # FTS5 refusing a search it cannot parse is the request's fault
            if q.q:
                raise HTTPException(400, f"search text not understood ({e})") from None
            raise

    def feature(request: Request) -> dict[str, Any] | None:
        p = request.path_params
        return views.feature_page(b.conn(), _int(p["d"], "dictionary"), _int(p["f"], "feature"))

    def feature_map(request: Request) -> dict[str, Any] | None:
        return views.map_page(b.conn(), _int(request.path_params["d"], "dictionary"))

    return [
        *both("/", "overview.html", overview, "page"),
        *both("/dict/{d}", "dictionary.html", dictionary, "dictionary"),
        *both("/dict/{d}/feature/{f}", "feature.html", feature, "feature"),
        *both("/dict/{d}/map", "map.html", feature_map, "dictionary"),
        Route("/text", _text_route(b, json=False), methods=["GET"]),
        Route("/api/text", _text_route(b, json=True), methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _text_route(b: Browser, json: bool) -> Callable:
    async def route(request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            try:
                body = jsonlib.loads(await request.body())
            except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
                raise HTTPException(400, 'the body must be JSON: {"text": ..., "d": ...}') from None
            if not isinstance(body, dict):
                raise HTTPException(400, "the body must be a JSON object")
            if any(isinstance(v, dict | list) for v in body.values()):
                raise HTTPException(400, "the body must be a flat JSON object (nested values are refused)")
            params.update({k: str(v) for k, v in body.items()})
        # browsers submit a textarea's line breaks as CRLF
        text = params.get("text", "").replace("\r\n", "\n")
        if len(text) > b.limits.max_chars:
            raise HTTPException(400, f"the text view takes at most {b.limits.max_chars} characters")
        choices = b.nav
        d = _int(params.get("d", str(_default_dict(choices))), "d")
        info = next((x for x in choices if x["id"] == d), None)
        if info is None:
            raise HTTPException(404, "no such dictionary")
        result = None
        if text.strip():
            result = await _analyze(b, text, info)
        ctx = {"text": text, "d": d, "choices": choices, "result": result,
               "max_chars": b.limits.max_chars, "timeout_s": b.limits.timeout_s}  # fmt: skip
        if json:
            return JSONResponse({"text": text, "dictionary": info, "result": result})
        return b.page("text.html", ctx, api=None)

    return route


def _default_dict(choices: list[dict[str, Any]]) -> int:
    saes = [x for x in choices if x["kind"] == "sae"]
    return (max(saes, key=lambda x: x["n_features"]) if saes else choices[0])["id"] if choices else 0


async def _analyze(b: Browser, text: str, info: dict[str, Any]) -> dict[str, Any]:
    """Run model and dictionary on `text` in a worker thread, one at a time, within the time limit.

    The first call imports torch and loads the model (seconds); that is not counted against the limit.
    """
    await run_in_threadpool(b.textview)
    deadline = time.monotonic() + b.limits.timeout_s

    def work() -> dict[str, Any]:
        if not b.text_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise HTTPException(503, "the text view is busy; try again")
        try:
            out = b.textview().analyze(text, info)
        finally:
            b.text_lock.release()
        # explanations for the listed features, so the panel says what each one is
        conn = b.conn()
        ids = sorted({f for tok in out["active"] for f, _ in tok})
        expl = {}
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            rows = conn.execute(
                f"SELECT feature, explanation FROM features WHERE dictionary_id = ? AND feature IN"
                f" ({','.join('?' * len(chunk))})",
                [info["id"], *chunk],
            )
            expl.update({r[0]: r[1] for r in rows})
        out["active"] = [[[f, a, plain_visible(expl.get(f))] for f, a in tok] for tok in out["active"]]
        return out

    try:
        return await asyncio.wait_for(run_in_threadpool(work), timeout=b.limits.timeout_s)
    except TimeoutError:
        raise HTTPException(503, f"the text view took longer than {b.limits.timeout_s} s") from None


class _Headers:
    """ASGI middleware: Server-Timing (request start to response start) and security headers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
            await send(message)

        await self.app(scope, receive, wrapped)


def create_app(
    run_or_db: Path,
    limits: TextLimits = TextLimits(),
    text_view: Callable[[Path], Any] | None = None,
    hosts: tuple[str, ...] = DEFAULT_HOSTS,
) -> Any:
    """The app for a run directory (its features/features.sqlite) or a database file directly.

    `text_view(run)` makes the live text view's model runner (the CLI passes `features.textview.TextView`);
    without it the text view answers 503, and the app never imports torch. `hosts` are the names
    the app answers to (the Host header); any other is a 400.

    Raises `db.DatabaseError` (one line naming the file) when there is no readable database.
    """
    run_or_db = Path(run_or_db)
    if run_or_db.is_dir():
        run, db_path = run_or_db, paths.RunLayout(run_or_db).features_db
    else:
        run, db_path = None, run_or_db
    b = Browser(db_path, run, limits, text_view)

    async def error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error (see the server log)"
        if status == 500:
            log.exception("error serving %s", request.url.path, exc_info=exc)
        if request.url.path.startswith("/api"):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        title = {400: "bad request", 404: "not found", 503: "unavailable"}.get(status, "error")
        return b.page("error.html", {"status": status, "title": title, "message": message}, api=None, status=status)

    app = Starlette(routes=_routes(b), exception_handlers={HTTPException: error, Exception: error})
    app.state.browser = b
    outer = _Headers(Limits(app, hosts))
    outer.state = app.state  # the app's state, reachable from what the server runs
    return outer
