"""Content categories of text: which characters are Arabic script, Hebrew, base64, DNA, hex, ...

The paper's case studies (paper.md §8.1–§8.2: Arabic script, Hebrew, base64, DNA) are rare in the Pile (Arabic is
about 0.13 % of its tokens), and a one-layer model gives a common category neurons of its own. So
the corpus and tokens stages measure each category's share on the content itself, never from a
document's `src` label: mail carries real base64 attachments, PO files mix English and Arabic,
GenBank records mix annotations and DNA.

    codes = char_codes(text)                          # uint8 [len(text)], 0 = no category
    counts = np.bincount(codes, minlength=N_CODES)    # characters per category (index 1 + i)
    tok = token_codes(codes, enc.offsets)             # uint8 [n_tokens]: each token's category

Scripts come from Unicode blocks (the same blocks as the case-study proxies, so a share here is the
share those proxies see); base64, DNA and hex come from content rules on ASCII runs (`_mark_rules`).
A character has at most one category; a token takes the highest code among the characters it
covers, so a space-prefixed Arabic word, or one byte of a two-byte Arabic letter, counts as Arabic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

CATEGORIES = ("arabic", "hebrew", "cyrillic", "cjk", "indic", "other_script", "hex", "base64", "dna")
"""Code `1 + i` is `CATEGORIES[i]`; 0 is "none of them" (Latin text, code, whitespace, ...)."""
N_CODES = 1 + len(CATEGORIES)

# ----- scripts, by Unicode block -----

_SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    # Greek, Armenian, Syriac, Thaana, Thai, Tibetan, Georgian, Ethiopic, kana, Hangul, ... (the
    # blocks below 0x2000 that are not Latin; the named scripts below overwrite their own blocks)
    "other_script": ((0x0370, 0x1CFF), (0x1F00, 0x1FFF), (0x3040, 0x30FF), (0x3130, 0x318F), (0xAC00, 0xD7AF)),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "hebrew": ((0x0590, 0x05FF), (0xFB1D, 0xFB4F)),
    "cyrillic": ((0x0400, 0x052F), (0xA640, 0xA69F)),
    "cjk": ((0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xFF00, 0xFFEF)),
    # Devanagari, Bengali, Gurmukhi, Gujarati, Oriya, Tamil, Telugu, Kannada, Malayalam, Sinhala
    "indic": ((0x0900, 0x0DFF),),
}


def _script_table() -> np.ndarray:
    table = np.zeros(0x10000, dtype=np.uint8)  # the Basic Multilingual Plane; astral characters get 0
    for name, ranges in _SCRIPTS.items():  # in order: a later script overwrites an earlier one
        for lo, hi in ranges:
            table[lo : hi + 1] = code(name)
    return table


def code(name: str) -> int:
    return 1 + CATEGORIES.index(name)


# ----- base64, DNA and hex, by content rules on ASCII runs -----

_HEX = frozenset("0123456789abcdefABCDEF")
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
MIN_BASE64, MIN_BASE64_LINE, MIN_HEX, MIN_DNA = 32, 40, 16, 20
"""Shortest run (in characters, padding and spaces not counted) that each rule accepts."""
_DNA_CHARS = frozenset("ACGTNacgtn")


def _ascii_mask(chars: str) -> np.ndarray:
    mask = np.zeros(0x10000, dtype=bool)
    mask[[ord(c) for c in chars]] = True
    return mask


_B64_MASK = _ascii_mask("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_DNA_MASK = _ascii_mask("ACGTNacgtn")
_DUMP_MASK = _ascii_mask("0123456789abcdefABCDEF \t:")
_DUMP_MIN = 4 + 8 * 3  # an offset and 8 groups of 2 digits with their spaces
_UUID_MIDDLE = re.compile(r"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-")  # literal first: a fast scan
_DUMP_ROW = re.compile(r"(?m)^[ \t]*[0-9a-fA-F]{4,8}:?(?:[ \t]+[0-9a-fA-F]{2,4}){8,}")
_DNA_RUN = re.compile(r"[ACGTNacgtn]{10,}(?: [ACGTNacgtn]{10,})*")
_HEX_SPAN = re.compile(rf"[0-9a-fA-F]{{{MIN_HEX}}}")
_PART = re.compile(r"[^+/=]+")


def is_base64(run: str, whole_line: bool = False) -> bool:
    """Whether a run of the base64 alphabet is base64 data rather than an identifier or a path.

    A run that fills its line (MIME and PEM bodies, 60-76 per line) needs 40+ characters of both
    cases. Elsewhere (data URIs, tokens in code) it needs 32+ characters that look random: at least
    20 % upper case and 20 % lower case, and two digits. camelCase names such as
    `sqlite3VdbeMemFromBtreeZeroOffset` (18 % upper, one digit) fail. Hex strings and DNA, which
    use a part of the alphabet, never count.
    """
    body = run.rstrip("=")
    n = len(body)
    if n < (MIN_BASE64_LINE if whole_line else MIN_BASE64):
        return False
    chars = set(body)
    if chars <= _HEX or chars <= _DNA_CHARS:
        return False
    upper = sum(map(str.isupper, body))
    lower = sum(map(str.islower, body))
    if whole_line:
        return upper > 0 and lower > 0
    return upper >= 0.2 * n and lower >= 0.2 * n and sum(map(str.isdigit, body)) >= 2


def is_hex(run: str) -> bool:
    """16+ hex digits (an optional `0x` aside) with at least one digit and one letter: hashes,
    digests, long literals. All-digit runs are numbers and all-letter ones words."""
    body = run[2:] if run[:2] in ("0x", "0X") else run
    return (
        len(body) >= MIN_HEX
        and set(body) <= _HEX
        and any(c.isdigit() for c in body)
        and any(not c.isdigit() for c in body)
    )


def _bounded(text: str, start: int, end: int) -> bool:
    """No letter or digit just before `start` or at `end`: the match is a whole word."""
    return (start == 0 or text[start - 1] not in _ALNUM) and (end == len(text) or text[end] not in _ALNUM)


def _runs(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the runs of True in `mask` that are at least `k` long."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).view(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    keep = ends - starts >= k
    return starts[keep], ends[keep]


def _mark_rules(text: str, cp: np.ndarray, codes: np.ndarray) -> None:
    """Set the hex, base64 and DNA codes in place; later rules win where they overlap.

    `cp` is the text's code points (astral ones clipped to 0xFFFF). Runs of an alphabet are found
    with numpy, so the regular expressions only run on documents that have a candidate.
    """
    hex_, b64, dna = code("hex"), code("base64"), code("dna")
    for start, end in zip(*_runs(_B64_MASK[cp], MIN_HEX), strict=True):
        start, end = int(start), int(end)
        end += len(text[end : end + 2]) - len(text[end : end + 2].lstrip("="))  # up to two '=' of padding
        run = text[start:end]
        whole_line = (start == 0 or text[start - 1] == "\n") and (end == len(text) or text[end] in "\r\n")
        if is_base64(run, whole_line):
            codes[start:end] = b64
            continue
        if not _HEX_SPAN.search(run):
            continue
        # Not base64: its '+'/'/'-separated parts may still be hashes (a URL's commit id).
        for part in _PART.finditer(run):
            if is_hex(part.group()) and _bounded(text, start + part.start(), start + part.end()):
                codes[start + part.start() : start + part.end()] = hex_
    for m in _UUID_MIDDLE.finditer(text):  # 8-4-4-4-12
        start, end = m.start() - 8, m.end() + 12
        outer = text[max(start, 0) : m.start()] + text[m.end() : end]
        if start >= 0 and end <= len(text) and set(outer) <= _HEX and _bounded(text, start, end):
            codes[start:end] = hex_
    dump_rows = _DUMP_ROW.finditer(text) if len(_runs(_DUMP_MASK[cp], _DUMP_MIN)[0]) else ()
    for m in dump_rows:  # xxd / od / hexdump -C: an offset, then 8+ groups of 2-4 digits
        row = m.group()
        if any(c.isdigit() for c in row) and any(c in "abcdefABCDEF" for c in row) and _bounded(text, *m.span()):
            lead = len(row) - len(row.lstrip(" \t"))
            codes[m.start() + lead : m.end()] = hex_
    dna_runs = _DNA_RUN.finditer(text) if len(_runs(_DNA_MASK[cp], 10)[0]) else ()
    for m in dna_runs:  # one case throughout, 20+ bases, groups of 10+ (GenBank, EMBL)
        run = m.group()
        if (run.isupper() or run.islower()) and len(run) - run.count(" ") >= MIN_DNA:
            codes[m.start() : m.end()] = dna


def char_codes(text: str) -> np.ndarray:
    """uint8 `[len(text)]`: the category code of each character (0 = none), see the module docstring."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    bmp = np.minimum(cp, 0xFFFF)
    codes = _TABLE[bmp]
    astral = cp > 0xFFFF
    if astral.any():
        codes[astral] = 0
        codes[(cp >= 0x20000) & (cp <= 0x3FFFF)] = code("cjk")  # CJK extension planes
    _mark_rules(text, bmp, codes)
    return codes


def count_codes(codes: np.ndarray) -> np.ndarray:
    """int64 `[N_CODES]`: how many characters (or tokens) carry each code."""
    return np.bincount(codes, minlength=N_CODES).astype(np.int64)


def token_codes(codes: np.ndarray, offsets: Sequence[tuple[int, int]] | np.ndarray) -> np.ndarray:
    """uint8 `[n_tokens]`: each token's category, the highest code among the characters it covers.

    `codes` is `char_codes(text)`; `offsets` are the tokens' `(start, end)` character offsets into
    the same text, as `tokenizers.Encoding.offsets` gives them. Byte-level BPE tiles the text, so
    token i covers `[start_i, start_{i+1})`; several tokens of one character share its offsets and
    all get its code. A token with no characters (past the end) gets 0.
    """
    starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
    out = np.zeros(len(starts), dtype=np.uint8)
    inside = starts < len(codes)
    if inside.any():
        out[inside] = np.maximum.reduceat(codes, starts[inside])
    return out


def shares(counts: np.ndarray, total: int) -> dict[str, float]:
    """`{category: fraction of total}` from `count_codes`-style counts (0.0 for an empty total)."""
    return {name: (int(counts[1 + i]) / total if total else 0.0) for i, name in enumerate(CATEGORIES)}


def format_shares(table: dict[str, float] | Sequence[dict[str, float]]) -> str:
    """One line for the log: `arabic 0.21 %, hebrew 0.18 %, ...`, or `arabic 0.21/0.25 %` for several."""
    rows = [table] if isinstance(table, dict) else list(table)
    return ", ".join(f"{name} {'/'.join(f'{r[name] * 100:.2f}' for r in rows)} %" for name in CATEGORIES)


_TABLE = _script_table()
