"""Which examples the explainer reads and which the simulator is scored on (paper §8.8).

    rows = read_examples(conn, dictionary_id)[feature]     # what `features build` stored
    explain, test = split_by_context(rows)                 # disjoint by context
    windows = stored_test_windows(test, window=4, max_act=..., n_intervals=...)

The build stores, per feature, its top-activating examples, uniform samples from each activation
interval and uniform samples of its non-zero activations, each a window of tokens around the
example's token with the context it came from (`ctx_offset`, the context's first token in the
held-out stream). The paper's explainer reads the top examples and the interval samples; the
simulator is scored on *other* examples the explainer never saw. "Other" is enforced by context,
not by row: a context is given wholly to one side, so no test window shares text with what the
explainer read. Each new context goes to the side that holds fewer examples of its kind so far
(ties: the explainer), taking top examples by rank first, then the interval samples from the top
interval down, then the random non-zero ones, which only the test side takes (a random example in a
context the explainer already has is shown to the explainer).

The held-out random windows with zero activations and the "top tokens out of context" windows come
from a forward over held-out contexts (heldout.py); `ScoringWindow` is the common shape of all of them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property

from monosemantic.analyses.explain import Example
from monosemantic.analyses.scoring import stratum


@dataclass
class StoredExample:
    """One `examples` row of a feature; its JSON columns are parsed when first read (most never are)."""

    kind: str
    """'top', 'interval' or 'random' (a uniform sample of the non-zero activations)."""
    interval: int | None
    rank: int
    ctx_offset: int
    """The context's first token in the held-out stream: the unit of the explanation/test split."""
    max_act: float
    """The activation at the example's token."""
    max_index: int
    """The example's token inside `tokens`."""
    tokens_json: str
    acts_json: str

    @cached_property
    def tokens(self) -> list[str]:
        return json.loads(self.tokens_json)

    @cached_property
    def acts(self) -> list[float]:
        return json.loads(self.acts_json)


@dataclass(frozen=True)
class ScoringWindow:
    """A window the simulator predicts: ±`window` tokens around a centre token, with the truth."""

    tokens: list[str]
    acts: list[float]
    kind: str
    """'top', 'interval', 'random' (stored non-zero sample), 'heldout' (random held-out token, zeros
    included) or 'out_of_context' (a top token of the feature in another context)."""
    centre: int
    """The centre token's index in `tokens`."""
    centre_act: float
    stratum: int | None
    """scoring.stratum of the centre activation; None for windows chosen by token (no importance weight)."""
    ctx_offset: int
    """The context the window comes from (never one the explainer read)."""


def read_examples(conn: sqlite3.Connection, dictionary_id: int) -> dict[int, list[StoredExample]]:
    """Every stored example of a dictionary, by feature (in table order; `split_by_context` orders them)."""
    out: dict[int, list[StoredExample]] = defaultdict(list)
    rows = conn.execute(
        "SELECT feature, kind, interval, rank, ctx_offset, max_act, max_index, tokens_json, acts_json"
        " FROM examples WHERE dictionary_id = ?",
        (dictionary_id,),
    )
    for f, kind, iv, rank, off, act, mi, toks, acts in rows:
        out[int(f)].append(StoredExample(kind, iv, int(rank), int(off), float(act), int(mi), toks, acts))
    return out


def _priority(e: StoredExample) -> tuple[int, int, int]:
    """Top examples by rank, then interval samples from the highest interval down, then random ones."""
    order = {"top": 0, "interval": 1, "random": 2}[e.kind]
    return order, -(e.interval or 0), e.rank


def split_by_context(rows: list[StoredExample]) -> tuple[list[StoredExample], list[StoredExample]]:
    """(explanation examples, test examples): no context on both sides (module docstring)."""
    side: dict[int, bool] = {}  # ctx_offset -> True: the explainer's
    counts: dict[tuple[str, bool], int] = Counter()
    explain: list[StoredExample] = []
    test: list[StoredExample] = []
    for e in sorted(rows, key=_priority):
        if e.ctx_offset not in side:
            if e.kind == "random":
                side[e.ctx_offset] = False  # the explainer reads top and interval examples (paper §8.8)
            else:
                side[e.ctx_offset] = counts[e.kind, True] <= counts[e.kind, False]
        to_explainer = side[e.ctx_offset]
        counts[e.kind, to_explainer] += 1
        (explain if to_explainer else test).append(e)
    return explain, test


def explanation_examples(rows: list[StoredExample]) -> list[Example]:
    """The explainer's evidence: each example's whole stored window."""
    return [Example(e.tokens, e.acts) for e in rows]


def stored_test_windows(
    rows: list[StoredExample], window: int, max_act: float, n_intervals: int
) -> list[ScoringWindow]:
    """The test examples cut to ±`window` tokens around their token (the paper: ±4, 9 tokens)."""
    out = []
    for e in rows:
        lo, hi = max(0, e.max_index - window), e.max_index + window + 1
        exact = e.kind == "interval" and e.interval is not None and n_intervals > 1  # its stratum is known
        s = e.interval + 1 if exact else stratum(e.max_act, max_act, n_intervals)  # type: ignore[operator]  # exact: not None
        out.append(ScoringWindow(e.tokens[lo:hi], e.acts[lo:hi], e.kind, e.max_index - lo, e.max_act, s, e.ctx_offset))
    return out


def is_single_token(rows: list[StoredExample]) -> bool:
    """The paper's "single-token" feature (§8.8): the same token at the max of every top example.

    Over all of the feature's stored top examples (20 by default, the paper's 20), and only when
    there are at least two of them: one example says nothing about the feature's tokens.
    """
    tops = [e.tokens[e.max_index] for e in rows if e.kind == "top"]
    return len(tops) >= 2 and len(set(tops)) == 1


def top_tokens(rows: list[StoredExample], n: int = 2) -> list[str]:
    """The `n` most frequent max tokens of these (the explainer's) top examples, for the out-of-context check."""
    return [t for t, _ in Counter(e.tokens[e.max_index] for e in rows if e.kind == "top").most_common(n)]
