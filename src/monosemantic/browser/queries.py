"""Read-only queries over the feature database (`interp.db`); every value reaches SQL as a parameter.

Each function takes a connection (row factory `sqlite3.Row`) and returns plain dicts/lists with
JSON columns decoded, so the same value renders a page and serves its JSON twin. `None` means
"no such thing" (the app answers 404).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monosemantic.browser.family import Link, Node, family_tree, nodes_of

SORTS = {"feature": "feature", "density": "density", "max_act": "max_act", "score": "score"}
"""List sort keys -> column (the only way a user's word becomes part of SQL text)."""
PAGE_SIZE = 100


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = {}
    for k in row.keys():  # noqa: SIM118 (sqlite3.Row iterates values)
        v = row[k]
        if k.endswith("_json"):
            k, v = k[: -len("_json")], None if v is None else json.loads(v)
        out[k] = v
    return out


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [_row(r) for r in cur]  # type: ignore[misc]  # rows are sqlite3.Row (row_factory); the stub says Any tuple


def dictionaries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every dictionary, neurons first, then by model and size."""
    return _rows(conn.execute("SELECT * FROM dictionaries ORDER BY model, kind = 'sae', n_features, name"))


def dictionary(conn: sqlite3.Connection, d: int) -> dict[str, Any] | None:
    return _row(conn.execute("SELECT * FROM dictionaries WHERE id = ?", (d,)).fetchone())


def summary(conn: sqlite3.Connection) -> dict[str, Any]:
    return {r["key"]: json.loads(r["value"]) for r in conn.execute("SELECT key, value FROM summary ORDER BY key")}


def proxies(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _rows(conn.execute("SELECT * FROM proxies ORDER BY name, with_synthetic DESC, dictionary_id"))


def density_histogram(conn: sqlite3.Connection, d: int, lo: float = -7.0, hi: float = 0.0, bins: int = 28) -> dict:
    """Counts of log10(density) per bin over [lo, hi] (paper.md §7.1's plot) plus the dead count."""
    counts = [0] * bins
    dead = 0
    for (x,) in conn.execute("SELECT density FROM features WHERE dictionary_id = ?", (d,)):
        if x <= 0:
            dead += 1
            continue
        k = int((math.log10(x) - lo) / (hi - lo) * bins)
        counts[min(max(k, 0), bins - 1)] += 1
    return {"edges": [lo + (hi - lo) * k / bins for k in range(bins + 1)], "counts": counts, "dead": dead}


def sources(conn: sqlite3.Connection, d: int) -> list[str]:
    """The corpus sources named in a dictionary's `source_json` (from one feature: all share keys)."""
    row = conn.execute(
        "SELECT source_json FROM features WHERE dictionary_id = ? AND source_json IS NOT NULL LIMIT 1", (d,)
    ).fetchone()
    return sorted(json.loads(row[0])) if row else []


@dataclass(frozen=True)
class ListQuery:
    """A feature-list request, validated (the app builds it from the URL; bad values are a 400)."""

    sort: str = "feature"
    desc: bool = False
    q: str = ""
    min_density: float | None = None
    max_density: float | None = None
    min_act: float | None = None
    min_score: float | None = None
    source: str = ""
    min_share: float = 0.5
    page: int = 1

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if self.page < 1 or self.page > 10**6:
            raise ValueError("page must be a positive integer")
        if len(self.q) > 200:
            raise ValueError("search text is limited to 200 characters")
        for x in (self.min_density, self.max_density, self.min_act, self.min_score, self.min_share):
            if x is not None and not math.isfinite(x):
                raise ValueError("numbers must be finite")


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: each word a quoted prefix term, all required.

    Quoting every term means FTS5 syntax in the input (`AND`, `*`, `"`, `:`) is just text.
    """
    words = [w.replace('"', '""') for w in text.split()]
    return " ".join(f'"{w}"*' for w in words)


def feature_list(conn: sqlite3.Connection, d: int, q: ListQuery, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of a dictionary's features, sorted and filtered; with the total match count."""
    where: list[str] = ["f.dictionary_id = ?"]
    params: list[Any] = [d]  # SQL parameters: ids, thresholds, the FTS query
    join = ""
    if q.q.strip():
        lo, hi = conn.execute("SELECT min(id), max(id) FROM features WHERE dictionary_id = ?", (d,)).fetchone()
        join = "JOIN feature_search s ON s.rowid = f.id"
        # the rowid range lets FTS5 skip other dictionaries' matches (features are written per dictionary)
        where.append("feature_search MATCH ? AND s.rowid BETWEEN ? AND ?")
        params += [fts_query(q.q), lo or 0, hi or 0]
    if q.min_density is not None:
        where.append("f.density >= ?")
        params.append(q.min_density)
    if q.max_density is not None:
        where.append("f.density <= ?")
        params.append(q.max_density)
    if q.min_act is not None:
        where.append("f.max_act >= ?")
        params.append(q.min_act)
    if q.min_score is not None:
        where.append("f.score >= ?")
        params.append(q.min_score)
    if q.source:
        # json_extract's path is a parameter too; the name is quoted for JSON path syntax
        where.append("json_extract(f.source_json, ?) >= ?")
        params += ['$."' + q.source.replace('"', "") + '"', q.min_share]
    col, way = SORTS[q.sort], "DESC" if q.desc else "ASC"
    # Ties by rowid, so an index on (dictionary_id, col) gives the order without a sort; unscored
    # features (NULL) last in both directions.
    order = f"f.{col} {way}" if col == "feature" else f"f.{col} {way}, f.id {way}"
    if col == "score":
        order = f"f.score IS NULL, {order}"
    sql_where = " AND ".join(where)
    # ids of the page first, then only those rows: the JSON columns make rows large, and OFFSET would
    # otherwise read every skipped one. A search counts its matches in the same pass (window count).
    count = ", count(*) OVER ()" if join else ""
    page = conn.execute(
        f"SELECT f.id{count} FROM features f {join} WHERE {sql_where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, page_size, (q.page - 1) * page_size],
    ).fetchall()
    ids = [r[0] for r in page]
    if join and page:
        total = page[0][1]
    else:
        total = conn.execute(f"SELECT count(*) FROM features f {join} WHERE {sql_where}", params).fetchone()[0]
    rows = conn.execute(
        "SELECT id, feature, density, max_act, mean_act, score, explanation, top_tokens, source_json, cluster"
        f" FROM features WHERE id IN ({','.join('?' * len(ids))})",
        ids,
    )
    by_id = {r["id"]: r for r in _rows(rows)}
    items = [by_id[i] for i in ids]
    for it in items:
        src = it.pop("source") or {}
        it.pop("id")
        it["top_source"] = max(src, key=lambda k: src[k]) if src else None
    return {"total": total, "page": q.page, "page_size": page_size, "features": items}


def feature(conn: sqlite3.Connection, d: int, f: int) -> dict[str, Any] | None:
    """Everything the feature page shows, or None if (d, f) does not exist."""
    row = _row(conn.execute("SELECT * FROM features WHERE dictionary_id = ? AND feature = ?", (d, f)).fetchone())
    if row is None:
        return None
    key = (d, f)
    ex = _rows(
        conn.execute(
            "SELECT kind, interval, rank, src, max_act, max_index, ctx_offset, ctx_pos, tokens_json, acts_json,"
            " ablation_json FROM examples WHERE dictionary_id = ? AND feature = ? ORDER BY kind, interval, rank",
            key,
        )
    )
    intervals = _rows(
        conn.execute(
            "SELECT interval, lo, hi, count FROM intervals WHERE dictionary_id = ? AND feature = ?"
            " ORDER BY interval DESC",
            key,
        )  # fmt: skip
    )
    by_interval: dict[int, list] = {}
    for e in ex:
        if e["kind"] == "interval":
            by_interval.setdefault(e["interval"], []).append(e)
    for it in intervals:
        it["examples"] = by_interval.get(it["interval"], [])
    row.update(
        top=[e for e in ex if e["kind"] == "top"],
        random=[e for e in ex if e["kind"] == "random"],
        intervals=intervals,
        ablation=_row(
            conn.execute(
                "SELECT mean_loss_delta, promoted_json, suppressed_json FROM ablations"
                " WHERE dictionary_id = ? AND feature = ?",
                key,
            ).fetchone()
        ),  # fmt: skip
        pinned=_rows(
            conn.execute(
                "SELECT rank, value, prompt, sample FROM pinned WHERE dictionary_id = ? AND feature = ? ORDER BY rank",
                key,
            )
        ),  # fmt: skip
        matches=_rows(
            conn.execute(
                "SELECT m.other_dictionary_id, m.rank, m.other_feature, m.corr, d.name, d.model, d.kind,"
                " o.explanation FROM matches m JOIN dictionaries d ON d.id = m.other_dictionary_id"
                " LEFT JOIN features o ON o.dictionary_id = m.other_dictionary_id AND o.feature = m.other_feature"
                " WHERE m.dictionary_id = ? AND m.feature = ? ORDER BY d.model, d.kind, m.rank",
                key,
            )
        ),  # fmt: skip
        parents=_rows(
            conn.execute(
                "SELECT s.parent_dictionary_id AS dictionary_id, s.parent_feature AS feature, s.act_cosine,"
                " s.dec_cosine, d.name, o.explanation FROM splits s"
                " JOIN dictionaries d ON d.id = s.parent_dictionary_id"
                " LEFT JOIN features o ON o.dictionary_id = s.parent_dictionary_id AND o.feature = s.parent_feature"
                " WHERE s.child_dictionary_id = ? AND s.child_feature = ? ORDER BY d.n_features, s.act_cosine DESC",
                key,
            )
        ),  # fmt: skip
        children=_rows(
            conn.execute(
                "SELECT s.child_dictionary_id AS dictionary_id, s.child_feature AS feature, s.act_cosine, s.dec_cosine,"
                " d.name, o.explanation FROM splits s JOIN dictionaries d ON d.id = s.child_dictionary_id"
                " LEFT JOIN features o ON o.dictionary_id = s.child_dictionary_id AND o.feature = s.child_feature"
                " WHERE s.parent_dictionary_id = ? AND s.parent_feature = ? ORDER BY d.n_features, s.act_cosine DESC"
                " LIMIT 50",
                key,
            )
        ),  # fmt: skip
        links=_rows(
            conn.execute(
                "SELECT l.rank, l.target_feature, l.weight, o.explanation FROM logit_links l LEFT JOIN features o"
                " ON o.dictionary_id = l.dictionary_id AND o.feature = l.target_feature"
                " WHERE l.dictionary_id = ? AND l.feature = ? ORDER BY l.rank",
                key,
            )
        ),  # fmt: skip
        cluster_label=None,
    )
    if row["cluster"] is not None and row["cluster"] >= 0:
        c = conn.execute("SELECT label FROM clusters WHERE id = ?", (row["cluster"],)).fetchone()
        row["cluster_label"] = c[0] if c else None
    return row


def feature_map(conn: sqlite3.Connection, d: int) -> dict[str, Any]:
    """Column arrays of the UMAP points of one dictionary (compact for 16k points) and the clusters."""
    cols: dict[str, list] = {k: [] for k in ("feature", "x", "y", "density", "cluster", "source", "label")}
    for r in conn.execute(
        "SELECT feature, umap_x, umap_y, density, cluster, source_json, explanation FROM features"
        " WHERE dictionary_id = ? AND umap_x IS NOT NULL AND umap_y IS NOT NULL ORDER BY feature",
        (d,),
    ):
        src = json.loads(r[5]) if r[5] else {}
        cols["feature"].append(r[0])
        cols["x"].append(round(r[1], 4))
        cols["y"].append(round(r[2], 4))
        cols["density"].append(r[3])
        cols["cluster"].append(r[4] if r[4] is not None else -1)
        cols["source"].append(max(src, key=lambda k: src[k]) if src else "")
        cols["label"].append((r[6] or "")[:80])
    clusters = _rows(conn.execute("SELECT id, label, size FROM clusters ORDER BY id"))
    return {"points": cols, "clusters": clusters}


# -- feature families (paper §8.11): the splits table as a tree, family.py ------------------------


def split_ladder(conn: sqlite3.Connection, d: int) -> list[dict[str, Any]]:
    """The SAE dictionaries of `d`'s model and hook that the splits table links, smallest first."""
    return _rows(
        conn.execute(
            "SELECT o.id, o.name, o.n_features FROM dictionaries d JOIN dictionaries o"
            " ON o.model = d.model AND o.hook = d.hook WHERE d.id = ? AND o.kind = 'sae'"
            " AND (EXISTS (SELECT 1 FROM splits s WHERE s.parent_dictionary_id = o.id)"
            " OR EXISTS (SELECT 1 FROM splits s WHERE s.child_dictionary_id = o.id)) ORDER BY o.n_features, o.name",
            (d,),
        )
    )


def _by_dictionary(nodes: Sequence[Node], chunk: int = 500) -> list[tuple[int, list[int]]]:
    """`nodes` as (dictionary, features) groups of at most `chunk` features (SQLite's parameter limit)."""
    groups: dict[int, list[int]] = {}
    for d, f in nodes:
        groups.setdefault(d, []).append(f)
    return [(d, fs[lo : lo + chunk]) for d, fs in groups.items() for lo in range(0, len(fs), chunk)]


def split_links(conn: sqlite3.Connection, nodes: Sequence[Node], side: str) -> list[Link]:
    """The `splits` rows whose `side` ("parent" or "child") is one of `nodes`."""
    if side not in ("parent", "child"):
        raise ValueError(f"side must be 'parent' or 'child', got {side!r}")
    out = []
    for d, fs in _by_dictionary(nodes):
        rows = conn.execute(
            "SELECT parent_dictionary_id, parent_feature, child_dictionary_id, child_feature, act_cosine FROM splits"
            f" WHERE {side}_dictionary_id = ? AND {side}_feature IN ({','.join('?' * len(fs))})",
            [d, *fs],
        )
        out += [Link((r[0], r[1]), (r[2], r[3]), r[4]) for r in rows]
    return out


def has_splits(conn: sqlite3.Connection, d: int, f: int) -> bool:
    """Whether feature `f` of dictionary `d` has a parent or a child in `splits`."""
    return bool(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM splits WHERE parent_dictionary_id = ? AND parent_feature = ?)"
            " OR EXISTS (SELECT 1 FROM splits WHERE child_dictionary_id = ? AND child_feature = ?)",
            (d, f, d, f),
        ).fetchone()[0]
    )


def feature_family(conn: sqlite3.Connection, d: int, f: int, max_nodes: int = 60) -> dict[str, Any] | None:
    """The family tree of feature `f` of dictionary `d` (family.family_tree) across the ladder, each node with
    its dictionary's name and size, explanation, top tokens and density; None when it has no family."""
    ladder = split_ladder(conn, d)
    tree = family_tree(
        [x["id"] for x in ladder],
        (d, f),
        lambda nodes: split_links(conn, nodes, "child"),
        lambda nodes: split_links(conn, nodes, "parent"),
        max_nodes,
    )
    if tree is None:
        return None
    nodes = nodes_of(tree)
    info: dict[Node, dict[str, Any]] = {}
    for di, fs in _by_dictionary(sorted({(n["dictionary_id"], n["feature"]) for n in nodes})):
        rows = conn.execute(
            "SELECT feature, explanation, top_tokens, density FROM features"
            f" WHERE dictionary_id = ? AND feature IN ({','.join('?' * len(fs))})",
            [di, *fs],
        )
        info.update({(di, r[0]): {"explanation": r[1], "top_tokens": r[2], "density": r[3]} for r in rows})
    size = {x["id"]: x for x in ladder}
    for n in nodes:
        key = (n["dictionary_id"], n["feature"])
        n.update(name=size[key[0]]["name"], n_features=size[key[0]]["n_features"])
        n.update(info.get(key, {"explanation": None, "top_tokens": None, "density": None}))
    return {"ladder": ladder, **tree}
