"""What each page shows, as a JSON-ready dict: the page's template renders it, its /api twin returns it.

Pure functions of a read-only connection (and, for the list, a validated `ListQuery`); `None`
means the thing does not exist.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from monosemantic.browser import casestudy, queries
from monosemantic.browser.render import plain_visible

SCALING_METRICS = ("l0", "loss_recovered", "fvu", "n_dead")


def overview(conn: sqlite3.Connection) -> dict[str, Any]:
    """The run: its dictionaries and their eval metrics, density histograms, scaling series, tables."""
    dicts = queries.dictionaries(conn)
    summary = queries.summary(conn)
    series: dict[str, dict[str, list]] = {m: {} for m in SCALING_METRICS}
    for d in dicts:
        d["density_hist"] = queries.density_histogram(conn, d["id"])
        for m in SCALING_METRICS:
            v = (d.get("metrics") or {}).get(m)
            if d["kind"] == "sae" and isinstance(v, int | float):
                series[m].setdefault(f"{d['model']} {d['architecture'] or ''}".strip(), []).append((d["n_features"], v))
    proxies = queries.proxies(conn)
    for p in proxies:  # a link to the case-study feature's family tree (paper §8.11) where it has one
        pd, pf = p.get("dictionary_id"), p.get("feature")
        p["has_family"] = pd is not None and pf is not None and queries.has_splits(conn, pd, pf)
    return {
        "models": sorted({d["model"] for d in dicts}),
        "dictionaries": dicts,
        "scaling": series,
        "proxies": proxies,
        "summary": summary,
        "case_study": casestudy.table(summary),  # paper §8.2: per proxy, the best feature and neuron
    }


def dictionary_page(conn: sqlite3.Connection, d: int, q: queries.ListQuery) -> dict[str, Any] | None:
    info = queries.dictionary(conn, d)
    if info is None:
        return None
    listing = queries.feature_list(conn, d, q)
    return {
        "dictionary": info,
        "query": {k: getattr(q, k) for k in q.__dataclass_fields__},
        "sorts": list(queries.SORTS),
        "sources": queries.sources(conn, d),
        **listing,
        "pages": max(1, -(-listing["total"] // listing["page_size"])),
    }


def feature_page(conn: sqlite3.Connection, d: int, f: int) -> dict[str, Any] | None:
    info = queries.dictionary(conn, d)
    feat = queries.feature(conn, d, f) if info else None
    if info is None or feat is None:
        return None
    feat["family"] = queries.feature_family(conn, d, f)  # paper §8.11: the splitting tree across sizes
    feat["case_studies"] = casestudy.for_feature(conn, queries.summary(conn), d, f)  # paper §8.2, §8.6
    return {"dictionary": info, "feature": feat, "n_features": info["n_features"]}


def map_page(conn: sqlite3.Connection, d: int) -> dict[str, Any] | None:
    info = queries.dictionary(conn, d)
    if info is None:
        return None
    out = queries.feature_map(conn, d)
    out["points"]["label"] = [plain_visible(x) for x in out["points"]["label"]]
    return {"dictionary": info, **out}
