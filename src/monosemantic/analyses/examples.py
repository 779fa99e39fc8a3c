"""A dictionary's stored examples, located in the validation stream so an analysis can re-run their contexts.

`read_examples` reads the `examples` rows of one dictionary; `stream_slices` cuts the tokens of each
context back out of the token shards (the database stores where a context starts, not its tokens).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np

from monosemantic.data.tokens import TokenSplit
from monosemantic.errors import UserError


def names(csv: str) -> tuple[str, ...]:
    """'a, b' → ('a', 'b'); '' → ()."""
    return tuple(s.strip() for s in csv.split(",") if s.strip())


@dataclass(frozen=True)
class Example:
    """One examples row, located in the validation stream."""

    rowid: int
    feature: int
    ctx_offset: int
    start: int
    """Context position of the window's first token (ctx_pos − max_index)."""
    length: int
    """Window length (len(tokens_json))."""
    ctx_pos: int
    """Context position of the max token."""


def check_windows(examples: list[Example], ctx_len: int) -> None:
    """A one-line error if an example's window runs past the model's context (a database from another model)."""
    ends = max((e.start + e.length for e in examples), default=0)
    if ctx_len < ends:
        raise UserError(f"feature database: an example window ends at position {ends}, past ctx_len {ctx_len}")


def read_examples(conn: sqlite3.Connection, dictionary_id: int, kinds: tuple[str, ...]) -> list[Example]:
    """The dictionary's examples of `kinds`, ordered by feature."""
    q = ",".join("?" * len(kinds))
    rows = conn.execute(
        f"SELECT rowid, feature, ctx_offset, ctx_pos, max_index, tokens_json FROM examples"
        f" WHERE dictionary_id = ? AND kind IN ({q}) ORDER BY feature, kind, interval, rank",
        (dictionary_id, *kinds),
    )
    out = []
    for rowid, feat, off, pos, mi, toks in rows:
        start = int(pos) - int(mi)
        if start < 0:
            raise UserError(f"feature database: example {rowid} has max_index {mi} past its ctx_pos {pos}")
        out.append(Example(int(rowid), int(feat), int(off), start, len(json.loads(toks)), int(pos)))
    return out


def stream_slices(split: TokenSplit, offsets: np.ndarray, length: int) -> np.ndarray:
    """int64 `[len(offsets), length]`: tokens from each offset of the split's concatenated stream.

    A slice that runs past the end of its shard is padded with its last token (only positions after a
    context's own end are padded, and no result is read there: the model is causal).
    """
    bases = np.concatenate([[0], np.cumsum(split.shard_sizes)])
    out = np.empty((len(offsets), length), dtype=np.int64)
    for row, off in enumerate(offsets):
        s = int(np.searchsorted(bases, off, side="right") - 1)
        if s >= len(split.shards):
            raise UserError(f"feature database: context offset {off} is past the validation stream")
        local = int(off - bases[s])
        piece = np.asarray(split.shards[s][local : local + length], dtype=np.int64)
        out[row, : len(piece)] = piece
        out[row, len(piece) :] = piece[-1]
    return out
