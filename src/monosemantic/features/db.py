"""The feature database: one SQLite file per run, `runs/<name>/features/features.sqlite`.

It is the seam between `interp` (which writes it) and `browser` (which only reads it), so this
module imports nothing but the standard library. The schema is versioned: `meta.schema_version`
is checked on open, and a file from another version is refused with a one-line error.

Conventions
- A *dictionary* is one set of features over one hook of one model: an SAE (`kind='sae'`), or the
  model's own neurons as the baseline (`kind='neurons'`, the paper compares the two throughout).
  Features are addressed by `(dictionary_id, feature)`; `feature` is the index in the SAE (or the
  neuron index).
- JSON columns (suffix `_json`) hold small lists/dicts; all floats are finite (NaN written as null).
- Contexts: `examples.tokens_json` is the list of decoded token strings of a display window, and
  `acts_json` the feature's activation on each of them; `max_index` is the index of the max token
  inside the window. `ctx_offset` is the offset (in the validation token stream) of the first
  token of the model context the example came from, and `ctx_pos` the max token's position in
  that context, so an analysis can re-run the exact forward (ablations do).
- `summary` holds the run-level tables for the overview page: `case_study`, `universality`,
  `interpretability`, `eval` (each a JSON value documented where it is written).

Writing: `create(path)` makes a fresh database at a temporary path; callers fill it and
`finalize(conn)` rebuilds the full-text index; the stage renames the file into place (io.py).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                     -- JSON
);
CREATE TABLE dictionaries (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,             -- 'tm2023-4096', 'neurons'
    model        TEXT NOT NULL,             -- 'A', 'B', 'A-shuffled' (the paper's control)
    hook         TEXT NOT NULL,             -- 'blocks.0.mlp.hook_post'
    kind         TEXT NOT NULL CHECK (kind IN ('sae', 'neurons')),
    architecture TEXT,                      -- 'tm2023', 'april2024', 'topk'; NULL for neurons
    n_features   INTEGER NOT NULL,
    n_tokens     INTEGER NOT NULL,          -- tokens the statistics were taken over
    metrics_json TEXT,                      -- the eval stage's metrics.json (L0, FVU, loss recovered ...)
    UNIQUE (model, name)
);
CREATE TABLE features (
    id              INTEGER PRIMARY KEY,    -- rowid, for the full-text index
    dictionary_id   INTEGER NOT NULL REFERENCES dictionaries(id),
    feature         INTEGER NOT NULL,
    density         REAL NOT NULL,          -- fraction of tokens with activation > 0
    n_active        INTEGER NOT NULL,
    mean_act        REAL,                   -- mean over tokens where active; NULL if never active
    max_act         REAL NOT NULL,
    hist_json       TEXT,                   -- {"edges": [...], "counts": [...]}, log-spaced edges of nonzero acts
    source_json     TEXT,                   -- {"src": share of the feature's total activation}
    top_tokens      TEXT,                   -- the most frequent max tokens, space separated (searchable)
    logit_json      TEXT,                   -- {"top": [[token, value]...], "bottom": [...], "hist": {edges, counts}}
    explanation     TEXT,
    explainer       TEXT,                   -- which explainer wrote it
    score           REAL,                   -- its score (correlation of simulated vs true activations)
    umap_x          REAL,
    umap_y          REAL,
    cluster         INTEGER,                -- clusters.id; -1 for noise
    UNIQUE (dictionary_id, feature)
);
CREATE INDEX features_density ON features(dictionary_id, density);
CREATE INDEX features_max ON features(dictionary_id, max_act);
CREATE INDEX features_score ON features(dictionary_id, score);
CREATE TABLE examples (
    dictionary_id INTEGER NOT NULL,
    feature       INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('top', 'interval', 'random')),
    interval      INTEGER,                  -- quantile interval index (kind='interval'), 0 = lowest
    rank          INTEGER NOT NULL,         -- order inside (feature, kind, interval)
    ctx_offset    INTEGER NOT NULL,
    ctx_pos       INTEGER NOT NULL,
    src           TEXT,
    max_act       REAL NOT NULL,            -- activation at the example's token
    max_index     INTEGER NOT NULL,
    tokens_json   TEXT NOT NULL,
    acts_json     TEXT NOT NULL,
    ablation_json TEXT                      -- per window token: change in log-likelihood of that token when the
                                            -- feature is ablated (NULL where not computed; paper.md §8 ablations)
);
CREATE INDEX examples_feature ON examples(dictionary_id, feature, kind, interval, rank);
CREATE TABLE intervals (                    -- the activation range of each quantile interval
    dictionary_id INTEGER NOT NULL,
    feature       INTEGER NOT NULL,
    interval      INTEGER NOT NULL,
    lo            REAL NOT NULL,
    hi            REAL NOT NULL,
    count         INTEGER NOT NULL,         -- tokens in the interval
    PRIMARY KEY (dictionary_id, feature, interval)
);
CREATE TABLE ablations (
    dictionary_id   INTEGER NOT NULL,
    feature         INTEGER NOT NULL,
    mean_loss_delta REAL NOT NULL,          -- mean change in next-token loss over the top contexts
    promoted_json   TEXT NOT NULL,          -- [[token, mean Δ logit]...] most promoted by the feature
    suppressed_json TEXT NOT NULL,
    PRIMARY KEY (dictionary_id, feature)
);
CREATE TABLE pinned (                       -- samples with the feature pinned at its max (paper.md §8)
    dictionary_id INTEGER NOT NULL,
    feature       INTEGER NOT NULL,
    rank          INTEGER NOT NULL,
    value         REAL NOT NULL,
    prompt        TEXT NOT NULL,
    sample        TEXT NOT NULL,
    PRIMARY KEY (dictionary_id, feature, rank)
);
CREATE TABLE proxies (                      -- case studies (paper.md §8.1–§8.2): per proxy, per corpus slice
    name             TEXT NOT NULL,         -- 'arabic', 'dna', ...
    description      TEXT NOT NULL,
    with_synthetic   INTEGER NOT NULL,      -- 1: computed over the whole corpus; 0: synthetic slice left out
    dictionary_id    INTEGER NOT NULL,      -- the dictionary the best feature comes from
    feature          INTEGER,
    feature_corr     REAL,
    neuron           INTEGER,
    neuron_corr      REAL,
    paper_corr       REAL,                  -- the paper's number for this proxy, where it gives one
    n_tokens         INTEGER NOT NULL,      -- tokens where the proxy is active
    specificity_json TEXT,                  -- per activation bin: share of activation where proxy holds
    sensitivity_json TEXT,                  -- per proxy bin: share of proxy tokens where the feature fires
    PRIMARY KEY (name, with_synthetic, dictionary_id)
);
CREATE TABLE splits (                       -- feature splitting (paper.md §8.11–§8.13): family links across sizes
    parent_dictionary_id INTEGER NOT NULL,
    parent_feature       INTEGER NOT NULL,
    child_dictionary_id  INTEGER NOT NULL,
    child_feature        INTEGER NOT NULL,
    act_cosine           REAL NOT NULL,     -- the paper's masked activation cosine
    dec_cosine           REAL NOT NULL,
    PRIMARY KEY (parent_dictionary_id, parent_feature, child_dictionary_id, child_feature)
);
CREATE INDEX splits_child ON splits(child_dictionary_id, child_feature);
CREATE TABLE logit_links (                  -- "finite state automata" (paper.md §8.13): feature -> features it raises
    dictionary_id  INTEGER NOT NULL,
    feature        INTEGER NOT NULL,
    rank           INTEGER NOT NULL,
    target_feature INTEGER NOT NULL,
    weight         REAL NOT NULL,
    PRIMARY KEY (dictionary_id, feature, rank)
);
CREATE TABLE matches (                      -- best match in another dictionary (universality, neurons)
    dictionary_id       INTEGER NOT NULL,
    feature             INTEGER NOT NULL,
    other_dictionary_id INTEGER NOT NULL,
    rank                INTEGER NOT NULL,
    other_feature       INTEGER NOT NULL,
    corr                REAL NOT NULL,      -- activation correlation over the same tokens
    PRIMARY KEY (dictionary_id, feature, other_dictionary_id, rank)
);
CREATE TABLE clusters (
    id    INTEGER PRIMARY KEY,
    label TEXT NOT NULL,
    size  INTEGER NOT NULL
);
CREATE TABLE summary (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                     -- JSON
);
CREATE VIRTUAL TABLE feature_search USING fts5(
    explanation, top_tokens, content='features', content_rowid='id'
);
"""


class DatabaseError(Exception):
    """The file is not a feature database of this schema version (message names the file)."""


def create(path: str | Path) -> sqlite3.Connection:
    """A new database at `path` (missing, or an empty file) with the schema and its version.

    Writes with `synchronous = NORMAL`: SQLite flushes at its critical moments, so a power loss
    never leaves a database that says more than it holds.
    """
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        raise FileExistsError(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(SCHEMA)
    set_meta(conn, "schema_version", SCHEMA_VERSION)
    conn.commit()
    return conn


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """Open for reading only (`mode=ro`), checking that it is a database of this schema version.

    `check_same_thread=False` so a web server's worker threads can share it; SQLite serialises.
    """
    path = Path(path)
    if not path.is_file():
        raise DatabaseError(f"{path}: no feature database here (run `monosemantic features build`)")
    try:
        # as_uri percent-escapes `?`, `#` and `%` in the path: unescaped, a `?` in a folder name would end
        # the path there and drop mode=ro (SQLite would then create that shorter path read-write)
        uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        version = get_meta(conn, "schema_version")
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"{path}: not a feature database ({e})") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise DatabaseError(f"{path}: schema version {version}, this monosemantic reads {SCHEMA_VERSION}")
    return conn


def open_for_update(path: str | Path) -> sqlite3.Connection:
    """Open an existing database read-write (a later analysis adds its tables), checking its schema version.

    Raises DatabaseError, one line naming the file, when it is missing or not a database of this version.
    """
    open_readonly(path).close()
    return sqlite3.connect(Path(path))


def dictionary_counts(conn: sqlite3.Connection) -> list[tuple[str, str, int, int, int]]:
    """(name, kind, n_features, features active at least once, n_tokens) per dictionary."""
    return conn.execute(
        "SELECT d.name, d.kind, d.n_features, count(f.n_active > 0 OR NULL), d.n_tokens FROM dictionaries d"
        " LEFT JOIN features f ON f.dictionary_id = d.id GROUP BY d.id ORDER BY d.id"
    ).fetchall()


def finalize(conn: sqlite3.Connection) -> None:
    """Rebuild the full-text index from `features`, ANALYZE, commit. Call after the last write."""
    conn.execute("INSERT INTO feature_search(feature_search) VALUES ('rebuild')")
    conn.execute("ANALYZE")
    conn.commit()


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, dumps(value)))


def get_meta(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def set_summary(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute("INSERT OR REPLACE INTO summary(key, value) VALUES (?, ?)", (key, dumps(value)))


def get_summary(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM summary WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def add_dictionary(
    conn: sqlite3.Connection,
    *,
    name: str,
    model: str,
    hook: str,
    kind: str,
    n_features: int,
    n_tokens: int,
    architecture: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> int:
    """Insert one dictionary row; returns its id."""
    cur = conn.execute(
        "INSERT INTO dictionaries(name, model, hook, kind, architecture, n_features, n_tokens, metrics_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (name, model, hook, kind, architecture, n_features, n_tokens, None if metrics is None else dumps(metrics)),
    )
    assert cur.lastrowid is not None  # set by every INSERT
    return cur.lastrowid


def dictionary_id(conn: sqlite3.Connection, name: str, model: str = "A") -> int:
    row = conn.execute("SELECT id FROM dictionaries WHERE model = ? AND name = ?", (model, name)).fetchone()
    if row is None:
        raise KeyError(f"no dictionary {model}/{name}")
    return int(row[0])


def insert_rows(conn: sqlite3.Connection, table: str, rows: Iterable[dict[str, Any]]) -> int:
    """INSERT each dict into `table` (columns from the first row's keys); returns the row count.

    `table` must be one of this schema's tables (it is checked: the name is not user input, but a
    typo should fail loudly rather than build SQL from it). Values that are dicts or lists are
    stored as JSON.
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return 0
    cols = list(first)
    sql = f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    n = 0

    def values() -> Iterable[tuple[Any, ...]]:
        nonlocal n
        for row in (first, *rows):
            n += 1
            yield tuple(dumps(row[c]) if isinstance(row[c], dict | list) else _finite(row[c]) for c in cols)

    conn.executemany(sql, values())
    return n


TABLES = frozenset(
    {
        "meta", "dictionaries", "features", "examples", "intervals", "ablations", "pinned", "proxies",
        "splits", "logit_links", "matches", "clusters", "summary",
    }
)  # fmt: skip


def dumps(value: Any) -> str:
    """JSON with NaN/inf written as null (SQLite and browsers both choke on bare NaN)."""
    return json.dumps(_clean(value), separators=(",", ":"), ensure_ascii=False)


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
