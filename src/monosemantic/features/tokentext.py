"""Token ids as text: each vocabulary entry's bytes, and which characters a token covers in context.

The tokenizer is byte-level ([TM] appendix: Arabic `ث` is the two tokens `\\xd8` + `\\xab`), so a
token may hold part of a character. Out of context such a token decodes to U+FFFD; in context the
bytes of consecutive tokens decode to whole characters, and `char_spans` says which characters
each token's bytes belong to. The proxies (paper.md §8.1–§8.2, `proxies.py`) are defined on those characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from tokenizers import Tokenizer


@cache
def unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode`, the alphabet of the ByteLevel pre-tokenizer."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def vocab_bytes(tok: Tokenizer) -> list[bytes]:
    """The bytes of every token id (special tokens such as EOT: empty)."""
    inv = unicode_to_byte()
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    out = []
    for i in range(tok.get_vocab_size()):
        s = tok.id_to_token(i)
        out.append(b"" if s is None or s in special else bytes(inv[c] for c in s))
    return out


def vocab_strings(tok_bytes: Sequence[bytes]) -> list[str]:
    """Each token decoded on its own (partial characters become U+FFFD)."""
    return [b.decode("utf-8", errors="replace") for b in tok_bytes]


def char_spans(tok_bytes: Sequence[bytes], ids: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Decode a token sequence and say which characters each token covers.

    Returns `(text, first, stop)`: token `i` covers `text[first[i]:stop[i]]` (empty for a token
    with no bytes). A character split over two tokens is covered by both. Invalid UTF-8 decodes
    to one U+FFFD per lead byte. `ids`: int [T]; `first`, `stop`: int64 [T].
    """
    parts = [tok_bytes[int(i)] for i in ids]
    lens = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
    lead = (buf & 0xC0) != 0x80  # a byte that starts a character
    if len(buf) and not lead[0]:
        lead[0] = True
    char_of_byte = np.cumsum(lead) - 1
    starts = np.flatnonzero(lead)
    raw = buf.tobytes()
    text = raw.decode("utf-8", errors="replace")
    if len(text) != len(starts) or "\ufffd" in text:  # invalid UTF-8: one character per lead byte
        chars = []
        for a, b in zip(starts, [*starts[1:], len(raw)], strict=True):
            c = raw[a:b].decode("utf-8", errors="replace")
            chars.append(c if len(c) == 1 else "\ufffd")
        text = "".join(chars)
    byte_end = np.cumsum(lens)
    byte_start = byte_end - lens
    first = np.zeros(len(parts), dtype=np.int64)
    stop = np.zeros(len(parts), dtype=np.int64)
    has = lens > 0
    first[has] = char_of_byte[byte_start[has]]
    stop[has] = char_of_byte[byte_end[has] - 1] + 1
    return text, first, stop


def span_all(mask: np.ndarray, ignore: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """bool [T]: every non-ignored character of the token's span has `mask`, and there is one.

    `mask`, `ignore`: bool [n_chars] (ignore: e.g. whitespace, which belongs to no script).
    """
    counted = np.concatenate([[0], np.cumsum(~ignore)])
    inside = np.concatenate([[0], np.cumsum(mask & ~ignore)])
    n = counted[stop] - counted[first]
    return (n > 0) & (inside[stop] - inside[first] == n)


def span_any(mask: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """bool [T]: some character of the token's span has `mask`."""
    c = np.concatenate([[0], np.cumsum(mask)])
    return c[stop] - c[first] > 0
