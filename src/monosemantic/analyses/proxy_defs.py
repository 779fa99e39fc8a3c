"""Per-token proxies for the case studies (paper.md §8.1–§8.2, the appendix "Feature Proxies").

A proxy scores each token by a log-likelihood ratio, "maximized over different prefixes leading up
to and including the final token":

    LLR(t_i) = max_j  log P(t_j..t_i | proxy) − log P(t_j..t_i),     P(s) = Π_{t∈s} p(t)  (unigram)

Four kinds:
- `chars` (base64, dna, hex): the proxy is a random string over an alphabet, P(s | proxy) =
  Π_{c∈s} P(c) with P(c) = 1/|alphabet| inside it and 1e-10 outside ([TM]: base64). Each token adds
  l(t) = Σ_c log P(c) − log p(t), and the max over prefixes is a max-suffix sum (Kadane). DNA "always
  look[s] at groups of at least two tokens" (`min_tokens=2`) and is "binarize[d] (based on its
  sign)"; hex likewise ("the same approach works for hex").
- `script` (arabic, hebrew, cyrillic, cjk): Bayes' rule gives LLR = log P(script | t) − log P(script).
  P(script | t) = 1 if all of t's characters lie in the script's Unicode blocks, else 1e-10; for a
  token that is part of a character, "the fraction of the time it is used in a given script" over
  sampled occurrences. We estimate that table, q(t), from a sample of the token stream where each
  occurrence's bytes are decoded in context, so complete-character tokens get exactly 0 or 1 and
  byte fragments their usage share. P(script) is the share of sampled tokens in the script. A longer
  prefix can only add characters that must also be in the script, so the one-token prefix is the
  maximum. Whitespace belongs to no script and is ignored (a space-prefixed word still counts).
- `regex` (html, and users' own): the token's characters overlap a match of the pattern in the
  decoded context; LLR = log(1/P(proxy)) where it holds, log(1e-10/P(proxy)) elsewhere (the script
  rule with a 0/1 P(proxy | t)).
- `function` (users' own): a callable on the context's token strings returning the LLR per token.

The correlation uses the proxy "thresholded at 0": max(LLR, 0), or 1[LLR > 0] when binarized.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from monosemantic.errors import UserError
from monosemantic.features.tokentext import char_spans, span_all, span_any

FLOOR = 1e-10
"""The paper's probability for a character (or script membership) outside the proxy."""

BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@dataclass(frozen=True)
class Proxy:
    """One proxy's definition (see the module docstring for each kind)."""

    name: str
    description: str
    kind: Literal["chars", "script", "regex", "function"]
    alphabet: str = ""
    min_tokens: int = 1
    binarize: bool = False
    ranges: tuple[tuple[int, int], ...] = ()
    pattern: str = ""
    fn: Callable[[list[str]], Sequence[float]] | None = field(default=None, compare=False)
    paper_corr: float | None = None
    """The paper's proxy correlation for its case-study feature (paper.md §8.1–§8.2), where it gives one."""


BUILTIN: dict[str, Proxy] = {
    p.name: p
    for p in [
        Proxy("arabic", "Arabic script (U+0600-06FF and extensions)", "script",
              ranges=((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
              paper_corr=0.74),
        Proxy("hebrew", "Hebrew script (U+0590-05FF)", "script", ranges=((0x0590, 0x05FF), (0xFB1D, 0xFB4F)),
              paper_corr=0.55),
        Proxy("base64", "random base64 [A-Za-z0-9+/]", "chars", alphabet=BASE64, paper_corr=0.38),
        Proxy("dna", "random DNA [ACGT], >= 2 tokens, binarized", "chars", alphabet="ACGT", min_tokens=2,
              binarize=True, paper_corr=0.8),
        Proxy("cyrillic", "Cyrillic script (U+0400-052F)", "script", ranges=((0x0400, 0x052F), (0xA640, 0xA69F))),
        Proxy("cjk", "CJK ideographs and punctuation", "script",
              ranges=((0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xFF00, 0xFFEF))),
        Proxy("html", "inside an HTML tag or entity", "regex", pattern=r"<[/!]?[A-Za-z][^<>\n]{0,200}>|&#?\w{1,10};"),
        Proxy("hex", "random lowercase hex [0-9a-f], >= 2 tokens, binarized", "chars", alphabet="0123456789abcdef",
              min_tokens=2, binarize=True),
    ]
}  # fmt: skip


def parse_custom(spec: str) -> Proxy:
    """A user proxy from `NAME=regex:PATTERN` or `NAME=py:module:function` (UserError if malformed).

    The function gets one context's token strings and returns one LLR per token.
    """
    name, sep, rest = spec.partition("=")
    kind, sep2, arg = rest.partition(":")
    if not sep or not sep2 or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise UserError(f"--proxy {spec!r}: expected NAME=regex:PATTERN or NAME=py:module:function")
    if kind == "regex":
        try:
            re.compile(arg)
        except re.error as e:
            raise UserError(f"--proxy {name}: bad regular expression ({e})") from None
        return Proxy(name, f"regex {arg}", "regex", pattern=arg)
    if kind == "py":
        module, _, attr = arg.rpartition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise UserError(f"--proxy {name}: cannot import {arg} ({e})") from None
        return Proxy(name, f"function {arg}", "function", fn=fn)
    raise UserError(f"--proxy {spec!r}: kind must be regex or py, not {kind!r}")


def select(names: Sequence[str], custom: Sequence[Proxy | str] = ()) -> list[Proxy]:
    """Built-ins by name, then the custom ones (Proxy objects or specs)."""
    out = []
    for n in filter(None, (s.strip() for s in names)):
        if n not in BUILTIN:
            raise UserError(f"proxy {n!r}: unknown (built-ins: {', '.join(BUILTIN)})")
        out.append(BUILTIN[n])
    out += [c if isinstance(c, Proxy) else parse_custom(c) for c in custom]
    if len({p.name for p in out}) != len(out):
        raise UserError("proxy names must be unique")
    return out


# --- math on token tables ------------------------------------------------------------------------


def unigram_logp(sample: np.ndarray, vocab_size: int) -> np.ndarray:
    """float64 [V]: log p(t) from token counts in `sample`, add-one smoothed."""
    counts = np.bincount(sample, minlength=vocab_size)[:vocab_size].astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def chars_logp(strings: Sequence[str], empty: Sequence[bool], alphabet: str) -> np.ndarray:
    """float64 [V]: log P(t | proxy) = Σ_c log P(c) of each token's characters (U+FFFD: outside)."""
    inside, outside = -math.log(len(alphabet)), math.log(FLOOR)
    chars = set(alphabet)
    out = np.array([sum(inside if c in chars else outside for c in s) for s in strings])
    out[np.asarray(empty)] = outside  # EOT carries no characters but is no evidence for the proxy
    return out


def max_suffix_sum(l: np.ndarray, min_len: int = 1) -> np.ndarray:
    """[n, T]: max over j ≤ i − min_len + 1 of Σ_{k=j..i} l[:, k], per row; -inf when none exists.

    Kadane's recursion: best_1(i) = l_i + max(0, best_1(i−1)); best_k(i) = l_i + best_{k−1}(i−1).
    """
    n, T = l.shape
    best = np.full((min_len, n, T), -np.inf)
    for i in range(T):
        best[0, :, i] = l[:, i] + (np.maximum(best[0, :, i - 1], 0.0) if i else 0.0)
        for k in range(1, min_len):
            if i:
                best[k, :, i] = l[:, i] + best[k - 1, :, i - 1]
    return best[min_len - 1]


def script_mask(text: str, ranges: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(in_script, is_space): bool [n_chars] for the decoded text."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    inside = np.zeros(len(cp), dtype=bool)
    for lo, hi in ranges:
        inside |= (cp >= lo) & (cp <= hi)
    return inside, np.isin(cp, (9, 10, 11, 12, 13, 32))


def in_script(s: str, ranges: Sequence[tuple[int, int]]) -> bool:
    """A string on its own: some non-space character, and all of them in the script (`script_mask`)."""
    chars = [ord(c) for c in s if c not in "\t\n\x0b\x0c\r "]
    return bool(chars) and all(any(lo <= c <= hi for lo, hi in ranges) for c in chars)


def regex_mask(text: str, pattern: re.Pattern[str]) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    for m in pattern.finditer(text):
        mask[m.start() : m.end()] = True
    return mask


def holds(p: Proxy, text: str, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """bool [T]: the script/regex predicate of each token, given `char_spans` of its sequence."""
    if p.kind == "script":
        inside, space = script_mask(text, p.ranges)
        return span_all(inside, space, first, stop)
    return span_any(regex_mask(text, re.compile(p.pattern)), first, stop)


def holds_in_context(p: Proxy, tok_bytes: Sequence[bytes], ids: np.ndarray) -> np.ndarray:
    """bool [T]: the script/regex predicate of each token of one sequence, decoded in context."""
    return holds(p, *char_spans(tok_bytes, ids))


# --- fitted proxies -------------------------------------------------------------------------------


class ProxySet:
    """Proxies with their statistics estimated on a token sample; `llr(ids)` scores contexts.

    `sample`: int [N] a stretch of the token stream (training split): the unigram p(t), the
    script tables q(t) and each script/regex proxy's base rate P(proxy) come from it.
    """

    def __init__(self, proxies: Sequence[Proxy], tok_bytes: Sequence[bytes], sample: np.ndarray, chunk: int = 4096):
        self.proxies = list(proxies)
        self.tok_bytes = list(tok_bytes)
        V = len(self.tok_bytes)
        strings = [b.decode("utf-8", errors="replace") for b in self.tok_bytes]
        self.strings = strings
        empty = [len(b) == 0 for b in self.tok_bytes]
        self.logp = unigram_logp(sample, V)
        self.table: dict[str, np.ndarray] = {}  # per-vocab log P(t|proxy) (chars) or q(t) (script)
        self.base_rate: dict[str, float] = {}  # P(proxy) for script / regex
        counted = [p for p in self.proxies if p.kind in ("script", "regex")]
        hits = {p.name: np.zeros(V) for p in counted}
        seen = np.zeros(V)
        for lo in range(0, len(sample), chunk):
            ids = np.asarray(sample[lo : lo + chunk], dtype=np.int64)
            seen += np.bincount(ids, minlength=V)[:V]
            spans = char_spans(self.tok_bytes, ids)
            for p in counted:
                hits[p.name] += np.bincount(ids, weights=holds(p, *spans), minlength=V)[:V]
        for p in self.proxies:
            if p.kind == "chars":
                self.table[p.name] = chars_logp(strings, empty, p.alphabet)
            elif p.kind in ("script", "regex"):
                self.base_rate[p.name] = max(hits[p.name].sum() / max(seen.sum(), 1), FLOOR)
            if p.kind == "script":
                # Tokens unseen in the sample: judge their own characters (0 for fragments).
                alone = np.array([in_script(s, p.ranges) for s in strings])
                self.table[p.name] = np.where(seen > 0, hits[p.name] / np.maximum(seen, 1), alone.astype(float))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.proxies]

    def llr(self, ids: np.ndarray) -> np.ndarray:
        """float64 [P, n, T]: each proxy's LLR on each token of contexts `ids` [n, T]."""
        out = np.empty((len(self.proxies), *ids.shape))
        for k, p in enumerate(self.proxies):
            if p.kind == "chars":
                out[k] = max_suffix_sum(self.table[p.name][ids] - self.logp[ids], p.min_tokens)
            elif p.kind == "script":
                out[k] = np.log(np.maximum(self.table[p.name][ids], FLOOR)) - math.log(self.base_rate[p.name])
            elif p.kind == "regex":
                held = np.stack([holds_in_context(p, self.tok_bytes, row) for row in ids])
                out[k] = np.where(held, 0.0, math.log(FLOOR)) - math.log(self.base_rate[p.name])
            else:
                assert p.fn is not None
                out[k] = np.stack([np.asarray(p.fn([self.strings[i] for i in row]), dtype=np.float64) for row in ids])
        return out

    def values(self, llr: np.ndarray) -> np.ndarray:
        """float64 [P, ...]: the proxy as correlated, thresholded at 0 (binarized where the proxy says)."""
        out = np.maximum(llr, 0.0)
        for k, p in enumerate(self.proxies):
            if p.binarize:
                out[k] = (llr[k] > 0).astype(np.float64)
        return out
