"""Turn one dictionary's streamed records (records.py) into rows of the feature database (db.py).

Token indices in the records are global over the held-out contexts: `token = row * ctx_len + pos`.
An example's display window is `window_before` tokens before its max token to `window_after`
after, cut at the context's edges (db.py's conventions: `ctx_offset`, `ctx_pos`, `max_index`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from monosemantic.features.records import BottomK, Samples, Stats
from monosemantic.features.stream import Contexts
from monosemantic.features.tokentext import unicode_to_byte


def display_tokens(decoded: Sequence[str], pieces: Sequence[str | None]) -> list[str]:
    """Token strings for display: the decoded text, or, where a token is part of a UTF-8 character
    (it decodes to U+FFFD), its bytes as escapes, e.g. `\\xd8` (as the paper's browser shows them).
    `pieces` are the byte-level vocabulary entries (`tokenizer.id_to_token`)."""
    table = unicode_to_byte()
    out = []
    for text, piece in zip(decoded, pieces, strict=True):
        if "\ufffd" in text and piece is not None and all(ch in table for ch in piece):
            text = bytes(table[ch] for ch in piece).decode("utf-8", errors="backslashreplace")
        out.append(text)
    return out


def to_json(value: Any) -> str:
    """db.dumps's format, for values known to be finite (skips its NaN walk: this is the hot path)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def example_rows(
    dict_id: int,
    keep: BottomK,
    kind: str,
    ctx: Contexts,
    vocab: Sequence[str],
    before: int,
    n_intervals: int = 1,
) -> Iterator[dict[str, Any]]:
    """One `examples` row per filled slot of `keep`; with `kind='interval'` the keeper's groups are
    `feature * n_intervals + interval`, otherwise features. Rank = slot order (top: by activation)."""
    T = ctx.tokens.shape[1]
    token = keep.token.numpy()
    value = keep.value.numpy()
    window = keep.window.numpy().round(4)
    for g, slot in zip(*np.nonzero(token >= 0), strict=True):
        t = int(token[g, slot])
        row, pos = divmod(t, T)
        lo, hi = max(0, pos - before), min(T, pos + window.shape[2] - before)
        acts = window[g, slot, lo - (pos - before) : hi - (pos - before)]
        yield {
            "dictionary_id": dict_id,
            "feature": int(g) // n_intervals,
            "kind": kind,
            "interval": int(g) % n_intervals if kind == "interval" else None,
            "rank": int(slot),
            "ctx_offset": int(ctx.offsets[row]),
            "ctx_pos": pos,
            "src": ctx.sources[int(ctx.src[row, pos])],
            "max_act": float(value[g, slot]),
            "max_index": pos - lo,
            "tokens_json": to_json([vocab[i] for i in ctx.tokens[row, lo:hi].tolist()]),
            "acts_json": to_json(acts.tolist()),
        }


def top_tokens(top: BottomK, ctx: Contexts, vocab: Sequence[str], n: int = 5) -> list[str]:
    """Per feature: the most frequent tokens at the max of its top examples, space separated (the
    search index's text; whitespace inside a token is dropped, empty tokens skipped)."""
    flat = ctx.tokens.reshape(-1)
    out = []
    for toks in top.token.numpy():
        words = [vocab[int(flat[t])].strip() for t in toks if t >= 0]
        out.append(" ".join(w for w, _ in Counter(w for w in words if w).most_common(n)))
    return out


def feature_rows(
    dict_id: int,
    stats: Stats,
    samples: Samples,
    n_tokens: int,
    sources: Sequence[str],
    top_words: Sequence[str],
    logit_json: Sequence[dict[str, Any] | None],
) -> Iterator[dict[str, Any]]:
    """One `features` row per feature (never-active features too: density 0, no histogram)."""
    n_active = stats.n_active.tolist()
    total, mx = stats.total.tolist(), stats.max.tolist()
    by_source = stats.by_source.numpy()
    edges, hist = samples.edges.tolist(), samples.hist.tolist()
    for f in range(len(n_active)):
        active = n_active[f] > 0
        shares = by_source[f] / total[f] if total[f] > 0 else None
        yield {
            "dictionary_id": dict_id,
            "feature": f,
            "density": n_active[f] / n_tokens,
            "n_active": n_active[f],
            "mean_act": total[f] / n_active[f] if active else None,
            "max_act": mx[f],
            "hist_json": to_json({"edges": [float(f"{e:.5g}") for e in edges[f]], "counts": hist[f]})
            if active
            else None,
            "source_json": None
            if shares is None
            else to_json({sources[s]: round(float(shares[s]), 6) for s in np.nonzero(shares)[0].tolist()}),
            "top_tokens": top_words[f],
            "logit_json": to_json(logit_json[f]),
        }


def interval_rows(dict_id: int, max_act: Tensor, count: Tensor) -> Iterator[dict[str, Any]]:
    """One `intervals` row per (active feature, interval): (lo, hi] = the interval's activation range."""
    n = count.shape[1]
    mx, c = max_act.tolist(), count.tolist()
    for f, m in enumerate(mx):
        if m <= 0:
            continue
        for i in range(n):
            yield {
                "dictionary_id": dict_id,
                "feature": f,
                "interval": i,
                "lo": m * i / n,
                "hi": m * (i + 1) / n,
                "count": c[f][i],
            }
