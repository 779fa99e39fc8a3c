"""How much of each embedded source goes into the corpus: the paper-like mix, and the recipe's.

`embedded.SLICES` say where each source's text comes from; a mix says how much of it to keep:

    PAPER   the default. The paper's case-study categories (Arabic script, Hebrew, base64, DNA) and
            the other rare kinds (Cyrillic, CJK, Indic and other scripts, hex) each about 0.1-0.5 %
            of the tokens, as in the Pile, which the paper trained on (paper.md §1: Arabic is about
            0.13 % of the Pile's tokens). The rest is English prose, docs, code and mail.
    RECIPE  the recipe's original caps (corpus-docs/reference/corpus.md §3.1; 47.6 MB, sha256 98a95241…06c1). About
            10 % of its tokens are Arabic script and 3 % Hebrew, so a 512-neuron model gives those
            scripts neurons of their own and the best neuron beats the best feature on the case
            studies, the opposite of the paper's finding. Kept to reproduce earlier runs.

A source's chunks are shuffled with its seed and kept in that order while they fit its `cap_mb`
and its category `budgets`, so the selection is deterministic. The categories are measured on the
content (`categories.py`), not on the `src` label: mail carries real base64, PO files mix English
with every script, UDHR holds all scripts at once. The corpus manifest records each category's
share of characters, the tokens config its share of train and held-out tokens, and
`benchmarks/corpus_mix.py` breaks them down by source.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """At most this much of one content category in one source (categories.py)."""

    category: str
    chars: int
    """Characters of the category in all the source's chunks kept."""
    per_chunk: int
    """Characters of the category in any one chunk: spreads the budget over at least
    `chars / per_chunk` documents, so the held-out split gets its share."""


@dataclass(frozen=True)
class Take:
    """How much of one source to keep."""

    cap_mb: float
    """Keep shuffled chunks while they fit in this many MB (10^6 bytes) of UTF-8."""
    chunk_chars: int | None = None
    """Chunk this source at this many characters when that is below the corpus's `chunk_chars`.
    A rare category in many short documents spreads evenly over the held-out split (10 % of the
    documents); in a few 16k-character ones it could miss it entirely."""
    budgets: tuple[Budget, ...] = ()
    """Skip a chunk that would break one of these (mail with large base64 attachments)."""


# The recipe's caps, in MB of UTF-8; with them the corpus is the recipe's, byte for byte.
RECIPE: dict[str, Take] = {
    src: Take(cap)
    for src, cap in {
        "prose/sotu": 9.0, "prose/moby-dick": 2.5, "docs/django-rst": 6.0, "code/python": 5.0, "code/c": 3.0,
        "code/js-html": 0.5, "email/ham": 3.5, "email/spam": 1.0, "multi/udhr": 3.0, "multi/quran-ar": 1.4,
        "multi/quran-ur": 0.8, "multi/quran-ru": 0.5, "multi/quran-zh": 0.5, "multi/quran-bn": 0.3,
        "multi/quran-tr": 0.2, "multi/hebrew-tanakh": 1.2, "multi/hebrew-mishnah": 1.2, "struct/html-udhr": 1.5,
        "struct/po-django": 2.0, "struct/json-quran": 0.5, "struct/bio-seq": 1.5,
        "prose/web-bible": 3.0, "prose/fortunes-en": 1.5, "multi/fortunes-zh": 0.8, "multi/fortunes-ru": 0.8,
        "struct/bio-embl": 2.0,
        "synthetic/base64": 0.8, "synthetic/hexdump": 0.4, "synthetic/hashes": 0.2, "synthetic/dna": 0.5,
        "synthetic/arith": 0.6, "synthetic/json-uuid": 0.4,
    }.items()
}  # fmt: skip

SHORT, MIXED = 250, 500
"""Chunk lengths (characters) for sources that are all one rare category (a verse or two) and for
sources that mix several with English (PO files, UDHR). Short documents spread a category over
~60-160 of them, so the held-out 10 % gets its share whatever the split seed; a few long ones
could all miss it."""

# The caps aim at ~0.2 % of the tokens per category. A rare script costs far more tokens than
# characters: an 8k byte-level BPE trained mostly on English learns few merges for it, so Arabic's
# 0.06 % of the characters is 0.22 % of the tokens, Chinese 0.03 % is 0.24 %. Measured on the
# built corpus (15.0M tokens): every category 0.17-0.31 % of the train tokens, and 0.065-0.69 % of
# the held-out tokens over 20 split seeds (benchmarks/corpus_mix.py).
PAPER: dict[str, Take] = {
    # English prose, docs and code: all or much of what the pinned artifacts hold, so the corpus
    # stays at ~15M tokens (the held-out 10 % must give ~1.1M) with the rare slices cut down.
    "prose/sotu": Take(11.0),  # all 10.8 MB
    "prose/moby-dick": Take(2.5),  # all 2.4 MB
    "docs/django-rst": Take(6.2),  # all 6.15 MB; ~20k characters of hex (hashes, UUIDs)
    "code/python": Take(12.0),  # of 24 MB (Django, its tests, Biopython)
    "code/c": Take(5.5),  # of 10.3 MB
    "code/js-html": Take(0.5),  # all 0.25 MB
    # Raw mail, with its real base64 (1.4 % of ham's characters, 11 % of spam's: attachments, PGP
    # signatures) held to a budget and spread over many documents of at most ~4k characters.
    "email/ham": Take(9.0, 4_000, (Budget("base64", 20_000, per_chunk=1_000),)),
    "email/spam": Take(1.5, 4_000, (Budget("base64", 15_000, per_chunk=2_000),)),
    # Multilingual text: a trace of each script (the recipe kept 1.2-1.4 MB of Arabic and Hebrew each).
    "multi/udhr": Take(0.35, MIXED),  # every script: Cyrillic, Indic, Greek/Georgian/..., Arabic, CJK
    "multi/quran-ar": Take(0.02, SHORT),
    "multi/quran-ur": Take(0.01, SHORT),  # Urdu: Arabic script
    "multi/quran-ru": Take(0.01, SHORT),
    "multi/quran-zh": Take(0.02, SHORT),
    "multi/quran-bn": Take(0.02, SHORT),  # Bengali: Indic
    "multi/quran-tr": Take(0.1, SHORT),  # Latin script
    "multi/hebrew-tanakh": Take(0.03, SHORT),
    "multi/hebrew-mishnah": Take(0.03, SHORT),
    # Structured formats.
    "struct/html-udhr": Take(0.3, MIXED),
    "struct/po-django": Take(0.5, MIXED),  # English msgids with translations in ~100 languages
    "struct/json-quran": Take(0.02),  # one JSON line per surah (Arabic, English, transliteration): not cut
    "struct/bio-seq": Take(0.1, MIXED),  # real DNA in GenBank/EMBL/FASTA records
    # Debian extras (--extras): English prose, and a little Chinese, Russian and DNA.
    "prose/web-bible": Take(3.0),
    "prose/fortunes-en": Take(1.5),
    "multi/fortunes-zh": Take(0.02, SHORT),
    "multi/fortunes-ru": Take(0.02, SHORT),
    "struct/bio-embl": Take(0.05, MIXED),
    # Synthetic, labelled (docs/reference/corpus.md §3.4): a trace of each case-study kind beside the real ones, and
    # DM-Mathematics-like arithmetic (1.2 % of the Pile).
    "synthetic/base64": Take(0.01),
    "synthetic/hexdump": Take(0.02),
    "synthetic/hashes": Take(0.01),
    "synthetic/dna": Take(0.02),
    "synthetic/arith": Take(0.6),
    "synthetic/json-uuid": Take(0.01),
}

MIXES: dict[str, dict[str, Take]] = {"paper": PAPER, "recipe": RECIPE}
