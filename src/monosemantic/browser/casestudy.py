"""The case studies (paper §8.1, §8.2, §8.6) for the overview and the feature pages, from the database.

`summary['case_study']` and the `proxies` table are written by analyses/proxies.py (their shape:
analyses/casestudy_report.py). `table(summary)` is the overview's table, one row per proxy over all
tokens; `for_feature(conn, summary, d, f)` the case studies whose best feature (or best neuron) is
`f` of dictionary `d`, with the specificity by activation level ready to draw as bars. Both return
plain JSON-ready values (the pages' /api twins carry them as they are); both give nothing for a
database written before the case studies had this shape.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, TypeGuard


def _current(cs: Any) -> TypeGuard[dict[str, Any]]:
    """A case-study summary of this shape (a database written before it holds another)."""
    return isinstance(cs, dict) and "rows" in cs and "sample" in cs and "shares" in cs


def table(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The overview's case-study table: per proxy (all tokens), its shares, the best feature of the
    largest dictionary with r, specificity above half max, decoder and family, the best neuron, and
    r per dictionary; the other slice's r apart."""
    cs = summary.get("case_study")
    if not _current(cs):
        return None
    size = {x["name"]: x["n_features"] for x in cs["dictionaries"]}
    rows = []
    for r in cs["rows"]:
        if r["with_synthetic"] != 1 or r["dictionary"] != cs["largest"]:
            continue
        per = sorted((x for x in cs["rows"] if x["with_synthetic"] == 1 and x["name"] == r["name"]),
                     key=lambda x: size.get(x["dictionary"], 0))  # fmt: skip
        rows.append({
            **r, "share": cs["shares"].get(r["name"], {}),
            "by_dictionary": [{k: x[k] for k in ("dictionary", "dictionary_id", "feature", "feature_corr")}
                              | {"n_features": size.get(x["dictionary"])} for x in per],
        })  # fmt: skip
    other = [{k: r[k] for k in ("name", "feature", "feature_corr", "neuron", "neuron_corr", "dictionary_id")}
             for r in cs["rows"] if r["with_synthetic"] == 0 and r["dictionary"] == cs["largest"]]  # fmt: skip
    keep = ("model", "largest", "sample", "n_tokens", "neurons_dictionary_id")
    return {
        **{k: cs.get(k) for k in keep},
        "family_min_r": cs["config"]["family_min_r"],
        "decoder_min": cs["config"]["decoder_min"],
        "rows": rows,
        "without_synthetic": other,
    }


def levels(j: dict[str, Any] | None) -> dict[str, Any] | None:
    """A column's stored levels (casestudy.Levels.to_json) as bars: per interval (lo, hi], its tokens
    and the share where the proxy holds; highest interval first, as the paper's plots read."""
    if not j:
        return None
    bars = []
    for k, (n, p) in enumerate(zip(j["tokens"], j["proxy_tokens"], strict=True)):
        bars.append({"lo": j["edges"][k], "hi": j["edges"][k + 1], "tokens": n, "proxy_tokens": p,
                     "share": p / n if n else None})  # fmt: skip
    return {"max": j["max"], "specificity": j["specificity"], "half_max": j["half_max"], "bars": bars[::-1]}


def for_feature(conn: sqlite3.Connection, summary: dict[str, Any], d: int, f: int) -> list[dict[str, Any]]:
    """The case studies (all tokens) whose best feature of dictionary `d` is `f`, or, when `d` is the
    neurons, whose best neuron is `f` (one per proxy); each with both levels, the decoder and the family."""
    cs = summary.get("case_study")
    if not _current(cs):
        return []
    neurons = d == cs.get("neurons_dictionary_id")
    out, seen = [], set()
    for r in cs["rows"]:
        if r["with_synthetic"] != 1:
            continue
        if neurons and (r["neuron"] != f or r["name"] in seen or r["dictionary"] != cs["largest"]):
            continue
        if not neurons and (r["dictionary_id"] != d or r["feature"] != f):
            continue
        seen.add(r["name"])
        row = conn.execute(
            "SELECT specificity_json FROM proxies WHERE name = ? AND with_synthetic = 1 AND dictionary_id = ?",
            (r["name"], r["dictionary_id"]),
        ).fetchone()
        spec = json.loads(row[0]) if row and row[0] else {}
        fam = r["family"]
        out.append({
            "name": r["name"], "role": "neuron" if neurons else "feature", "dictionary": r["dictionary"],
            "dictionary_id": r["dictionary_id"], "feature": r["feature"], "feature_corr": r["feature_corr"],
            "specificity": r["specificity"], "neuron": r["neuron"], "neuron_corr": r["neuron_corr"],
            "neuron_specificity": r["neuron_specificity"], "neurons_dictionary_id": cs.get("neurons_dictionary_id"),
            "paper_corr": r["paper_corr"], "n_tokens": r["n_tokens"], "share": cs["shares"].get(r["name"], {}),
            "levels": levels(spec.get("feature")), "neuron_levels": levels(spec.get("neuron")),
            "decoder": None if neurons else r["decoder"], "decoder_min": cs["config"]["decoder_min"],
            "family": None if neurons else {"min_r": cs["config"]["family_min_r"], "sum_corr": fam["sum_corr"],
                                            "members": [{"feature": i, "r": x} for i, x in fam["members"]]},
        })  # fmt: skip
    return out
