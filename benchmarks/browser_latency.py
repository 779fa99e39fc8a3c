"""Feature browser latency: server and client time of the feature page, list and search; 50 clients.

    python benchmarks/browser_latency.py                 # 16,384-feature dictionary (+ model B, neurons)
    python benchmarks/browser_latency.py --n-features 2048 --requests 50   # quick

Builds a synthetic feature database (browser/synthetic.py) under /tmp, starts `monosemantic serve` on
it in a subprocess (uvicorn, one process, as a user runs it), then measures with sequential
requests (p50/p95 of the server's own time from its Server-Timing header, and of the client's wall
time) and with `--clients` concurrent clients (errors and client p95). Targets: feature page
p95 <= 50 ms, list and search p95 <= 100 ms server time, no error with 50 clients.
Prints a table and writes benchmarks/results/browser_latency.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from monosemantic.browser.synthetic import WORDS, build_synthetic_db
from monosemantic.io import write_json

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {"feature page": 50, "list": 100, "search": 100}


def get(url: str) -> tuple[int, float, float]:
    """(status, server ms, client ms) of one GET."""
    t0 = time.perf_counter()
    try:
        with urlopen(url, timeout=30) as r:
            r.read()
            status, timing = r.status, r.headers.get("server-timing", "")
    except HTTPError as e:
        status, timing = e.code, e.headers.get("server-timing", "")
    client = (time.perf_counter() - t0) * 1000
    server = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
    return status, server, client


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def urls(kind: str, base: str, d: int, n: int, rng: random.Random) -> str:
    if kind == "feature page":
        return f"{base}/dict/{d}/feature/{rng.randrange(n)}"
    if kind == "list":
        sort = rng.choice(["density", "max_act", "score", "feature"])
        return f"{base}/dict/{d}?sort={sort}&desc={rng.randint(0, 1)}&page={rng.randint(1, 50)}"
    word = rng.choice([w for w in WORDS if w.isascii() and len(w) > 2] + ["arabic", "python", "script"])
    return f"{base}/dict/{d}?q={word}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-features", type=int, default=16_384, help="features of the largest dictionary")
    ap.add_argument("--requests", type=int, default=300, help="sequential requests per page kind")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients")
    ap.add_argument("--per-client", type=int, default=20, help="requests per concurrent client")
    ap.add_argument("--db", type=Path, default=Path("/tmp/monosemantic-bench/features.sqlite"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "browser_latency.json")
    args = ap.parse_args()

    if not args.db.exists():
        args.db.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build_synthetic_db(args.db, n_features=args.n_features, sizes=(args.n_features,), n_neurons=512)
        print(f"built {args.db} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    import sqlite3

    with sqlite3.connect(args.db) as c:
        n_total = c.execute("SELECT count(*) FROM features").fetchone()[0]
        d, n = c.execute("SELECT id, n_features FROM dictionaries WHERE model = 'A' AND kind = 'sae'").fetchone()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "monosemantic", "serve", str(args.db), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urlopen(base + "/", timeout=2).read()
                break
            except (URLError, ConnectionError):
                time.sleep(0.1)
        rng = random.Random(0)
        rows = {}
        for kind in TARGETS_MS:
            for _ in range(10):  # warm templates and the page cache
                get(urls(kind, base, d, n, rng))
            res = [get(urls(kind, base, d, n, rng)) for _ in range(args.requests)]
            assert all(r[0] == 200 for r in res), f"{kind}: non-200 responses"
            srv, cli = [r[1] for r in res], [r[2] for r in res]
            rows[kind] = {"server_p50_ms": statistics.median(srv), "server_p95_ms": pct(srv, 0.95),
                          "client_p50_ms": statistics.median(cli), "client_p95_ms": pct(cli, 0.95),
                          "target_p95_ms": TARGETS_MS[kind]}  # fmt: skip

        def client(k: int) -> list[tuple[int, float, float]]:
            r = random.Random(k)
            return [get(urls(r.choice(list(TARGETS_MS)), base, d, n, r)) for _ in range(args.per_client)]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            res = [x for batch in pool.map(client, range(args.clients)) for x in batch]
        wall = time.perf_counter() - t0
        errors = sum(1 for r in res if r[0] != 200)
        cli = [r[2] for r in res]
        concurrent = {"clients": args.clients, "requests": len(res), "errors": errors,
                      "client_p50_ms": statistics.median(cli), "client_p95_ms": pct(cli, 0.95),
                      "server_p95_ms": pct([r[1] for r in res], 0.95), "requests_per_s": len(res) / wall}  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"feature database: {n_total:,} features ({n:,} in the benchmarked dictionary), {args.db}")
    print(f"{'page':<14}{'server p50':>11}{'server p95':>11}{'client p50':>11}{'client p95':>11}{'target':>8}")
    for kind, r in rows.items():
        ok = "ok" if r["server_p95_ms"] <= r["target_p95_ms"] else "MISS"
        print(f"{kind:<14}{r['server_p50_ms']:>9.1f}ms{r['server_p95_ms']:>9.1f}ms{r['client_p50_ms']:>9.1f}ms"
              f"{r['client_p95_ms']:>9.1f}ms{r['target_p95_ms']:>6}ms {ok}")  # fmt: skip
    c = concurrent
    print(
        f"{c['clients']} concurrent clients: {c['requests']} requests, {c['errors']} errors, client p50 "
        f"{c['client_p50_ms']:.0f} ms, p95 {c['client_p95_ms']:.0f} ms, {c['requests_per_s']:.0f} requests/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "n_features_total": n_total, "n_features_dictionary": n, "sequential": rows, "concurrent": concurrent,
        "date": time.strftime("%Y-%m-%d"),
    })  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
