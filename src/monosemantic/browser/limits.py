"""The live server's limits, as one ASGI middleware in front of the app (`create_app` installs it).

    app = Limits(starlette_app, hosts=("127.0.0.1", "localhost", "::1"))

Every request, before any route runs:

- its Host header must name a host the server serves (by default `127.0.0.1`, `localhost`, `::1`
  and the address it is bound to; `serve --allow-host NAME` adds more), else 400: a page on
  another site that points its own name at 127.0.0.1 (DNS rebinding) reads nothing;
- its query string must decode without NUL characters, else 400 (SQLite, FTS5 included, reads a
  NUL as the end of the text);
- a body larger than `MAX_BODY` (1 MiB) is a 413, whether Content-Length says so or the bytes do;
  a body is read in full here (at most 1 MiB) before the route sees it.

A request that is neither GET nor HEAD (the text view's POST) must also be same-origin: an
`Origin` header, when sent, must match the Host, `Sec-Fetch-Site` must be `same-origin` or
`none`, and the body must be `application/json` (415 otherwise), which no cross-site form or
`text/plain` fetch can send without a CORS preflight the server never answers. Else 403.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_BODY = 1 << 20
"""Largest request body accepted, in bytes (the text view's JSON is at most a few KB)."""
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = ("GET", "HEAD")


def hostname(host_header: str) -> str:
    """`127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`, lowercased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Limits:
    """ASGI middleware enforcing the module docstring's limits; `hosts` are the names the server answers to."""

    def __init__(self, app: Any, hosts: Iterable[str] = DEFAULT_HOSTS, max_body: int = MAX_BODY) -> None:
        self.app, self.max_body = app, max_body
        self.hosts = frozenset(hostname(h) for h in hosts)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        problem = self._problem(scope, headers)
        if problem is not None:
            await _reject(scope, send, *problem)
            return
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:  # at most max_body + one message, then refused
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reject(scope, send, 413, f"request body larger than {self.max_body:,} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _problem(self, scope: dict, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if hostname(host) not in self.hosts:
            return 400, "unknown host (the server answers only to the hosts it serves; see serve --allow-host)"
        try:
            pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        except ValueError:
            return 400, "malformed query string"
        if any("\x00" in k or "\x00" in v for k, v in pairs):
            return 400, "a NUL character in the query"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"request body larger than {self.max_body:,} bytes"
        if scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return 403, "cross-origin request refused"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site request refused"
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return 415, "the body must be application/json"
        return None


async def _reject(scope: dict, send: Any, status: int, message: str) -> None:
    """A short error response: JSON under /api, plain text elsewhere (no template: nothing was trusted yet)."""
    if scope.get("path", "").startswith("/api"):
        body, ctype = json.dumps({"error": message, "status": status}).encode(), b"application/json"
    else:
        body, ctype = f"{status}: {message}\n".encode(), b"text/plain; charset=utf-8"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
