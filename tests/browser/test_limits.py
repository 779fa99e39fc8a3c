"""The live server holds its limits: body size, JSON depth, Host allow-list, same-origin POSTs, 400 for every
malformed query, a read-only database URI that survives odd paths, and "port in use" before "serving"."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from monosemantic.browser.app import create_app
from monosemantic.cli import main
from monosemantic.features import db
from tests.browser.conftest import LOCAL, free_port


@pytest.fixture(scope="module")
def client(feature_db):
    return TestClient(create_app(feature_db), base_url=LOCAL, raise_server_exceptions=False)


def test_request_bodies_are_capped_at_one_mebibyte(client):
    big = b'{"text": "' + b"a" * (2 << 20) + b'"}'
    r = client.post("/api/text", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunks():  # no Content-Length: the bytes themselves are counted
        yield b'{"text": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    r = client.post("/api/text", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/text", json={"text": "a" * 1000, "d": 2})
    assert r.status_code != 413  # under the cap: the route answers (here 400: over the text view's 50 characters)


def test_deep_or_nested_json_is_a_400_not_a_500(client):
    deep = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = client.post("/api/text", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/api/text", content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/api/text", json={"text": {"nested": ["value"]}})
    assert r.status_code == 400 and "flat" in r.json()["error"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "[::2]"])
def test_only_the_hosts_it_serves_are_answered(client, host):
    r = client.get("/api/", headers={"host": host})
    assert r.status_code == 400 and "unknown host" in r.json()["error"]
    assert "tm2023" not in r.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:1234", "LOCALHOST", "[::1]:8000"])
def test_the_default_hosts_are_answered(client, host):
    assert client.get("/api/", headers={"host": host}).status_code == 200


def test_a_bound_address_or_allowed_name_is_answered(feature_db):
    app = create_app(feature_db, hosts=("127.0.0.1", "10.1.2.3", "browser.lan"))
    c = TestClient(app, base_url="http://10.1.2.3:8000", raise_server_exceptions=False)
    assert c.get("/api/").status_code == 200
    assert c.get("/api/", headers={"host": "browser.lan"}).status_code == 200
    assert c.get("/api/", headers={"host": "localhost"}).status_code == 400  # not in this server's list


def test_cross_origin_posts_are_refused(client):
    simple = {"content-type": "text/plain", "origin": "http://evil.example"}  # a form or fetch without preflight
    r = client.post("/api/text", content=b'{"text": "the whale", "d": 2}', headers=simple)
    assert r.status_code == 403
    r = client.post("/api/text", json={"text": "the whale"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/api/text", json={"text": "the whale"}, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = client.post("/api/text", content=b'{"text": "the whale"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    # same origin, as the app's own page would send it: past the guard (503: no model runner in this app)
    r = client.post("/api/text", json={"text": "the whale"}, headers={"origin": "http://127.0.0.1"})
    assert r.status_code == 503


MALFORMED = ["%00%00", "%00", "a%00b", "%22%00", '"', "*", "NEAR(", "^", "a:b", "(", ")", "-x", "+", 'a"b', "\\",
             "%ff", "%C0%80", "%ed%a0%80", "AND", "OR NOT", "x" * 250, "%0a%0d", "%E2%80%AE"]  # fmt: skip


@pytest.mark.parametrize("q", MALFORMED)
def test_no_search_text_makes_a_500(client, q):
    for path in ("/api/dict/2", "/dict/2"):
        r = client.get(f"{path}?q={q}")
        assert r.status_code in (200, 400), (path, q, r.status_code)
    assert client.get("/api/dict/2?q=%00%00").status_code == 400


@pytest.mark.parametrize("url", ["/api/dict/2?page=%00", "/api/dict/2?source=%00", "/api/dict/2?sort=%00",
                                 "/api/text?d=%00", "/api/text?text=%00", "/api/dict/2/feature/1?x=%00"])  # fmt: skip
def test_a_nul_anywhere_in_the_query_is_a_400(client, url):
    assert client.get(url).status_code == 400


def test_the_read_only_uri_escapes_the_path(feature_db, tmp_path):
    odd = tmp_path / "runs?mode=rwc#x %41"
    odd.mkdir()
    shutil.copy(feature_db, odd / "features.sqlite")
    before = sorted(p.name for p in tmp_path.iterdir())
    conn = db.open_readonly(odd / "features.sqlite")
    assert conn.execute("SELECT count(*) FROM dictionaries").fetchone()[0] > 0
    with pytest.raises(Exception, match="readonly"):
        conn.execute("DELETE FROM features")
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no stray database beside it
    c = TestClient(create_app(odd / "features.sqlite"), base_url=LOCAL, raise_server_exceptions=False)
    assert c.get("/api/").status_code == 200


def test_a_busy_port_is_reported_before_serving(feature_db, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(feature_db), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "serving" not in err and err.strip().splitlines() == [
        f"monosemantic: error: 127.0.0.1:{port}: port in use by another program; pick another with --port"
    ]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_the_live_server_refuses_a_50_mb_post_without_keeping_it(feature_db):
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "monosemantic", "serve", str(feature_db), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/api/", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.2)
        before = rss_mb(server.pid)
        body = b'{"text": "' + b"a" * (50 << 20) + b'"}'
        try:
            r = httpx.post(f"{url}/api/text", content=body, headers={"content-type": "application/json"}, timeout=30)
            assert r.status_code == 413
        except httpx.TransportError:
            pass  # the server answered 413 and closed the connection while the client still sent
        time.sleep(0.5)
        assert rss_mb(server.pid) - before < 30  # the body was not kept
        assert httpx.get(f"{url}/api/", headers={"host": "evil.example"}).status_code == 400
        assert httpx.get(f"{url}/api/").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
