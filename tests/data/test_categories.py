"""Content categories: hand-counted characters per category, and tokens mapped through their offsets."""

import base64

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from monosemantic.data import categories as C
from monosemantic.data.tokenizer import EOT

B64_LINE = base64.b64encode(bytes(range(57))).decode()  # 76 characters, a full MIME line
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def counted(text: str) -> dict[str, int]:
    counts = C.count_codes(C.char_codes(text))
    return {name: int(counts[C.code(name)]) for name in C.CATEGORIES if counts[C.code(name)]}


def test_scripts_by_unicode_block():
    # 5 Arabic, 4 Hebrew, 6 Cyrillic, 2 CJK ideographs + 1 CJK comma, 4 Devanagari, 4 Greek letters
    assert counted("abc مرحبا שלום Привет 你好、 नमसत Γειά!") == {
        "arabic": 5, "hebrew": 4, "cyrillic": 6, "cjk": 3, "indic": 4, "other_script": 4,
    }  # fmt: skip
    assert counted("Café, naïve, Ærøskøbing, 123 — ok") == {}  # Latin with accents is no category
    assert counted("𠀀𝔸") == {"cjk": 1}  # astral: CJK extension B counts, mathematical letters do not


def test_base64_needs_a_whole_line_or_a_random_looking_run():
    assert counted(f"Content-Transfer-Encoding: base64\n\n{B64_LINE}\n{B64_LINE}\n") == {"base64": 152}
    assert counted(f"src='data:image/png;base64,{B64_LINE}'") == {"base64": 76}  # inline, random-looking
    assert counted("x = sqlite3VdbeMemFromBtreeZeroOffset(p)") == {}  # camelCase: 18 % upper, one digit
    assert counted("  RemovedInDjango60WarningRemovedInDjango60\n") == {}  # not its own line, 17 % upper
    assert counted("aGVsbG8gd29ybGQ=\n") == {}  # 16 characters: too short to tell


def test_hex_hashes_uuids_and_dump_rows():
    assert counted(f"sha256: {SHA256}") == {"hex": 64}  # hex digits are in the base64 alphabet, but not base64
    assert counted("id 123e4567-e89b-12d3-a456-426614174000.") == {"hex": 36}
    assert counted("commit https://x.org/a/9f86d081884c7d65/b") == {"hex": 16}  # a hash inside a path
    row = "00000010: 9602 7596 6000 e6fc 6925 0c7b 6462 9ff9"
    assert counted(f"{row}\n") == {"hex": len(row)}
    assert counted("12345678901234567890 deadbeefdeadbeef") == {}  # a number, a word
    assert counted("0x1f2e 0xff") == {}  # short literals are code, not data


def test_dna_runs_of_one_case():
    assert counted(">seq1\nACGTACGTACGTACGTACGTAC\n") == {"dna": 22}
    genbank = "gatcctccat atacaacggt atctccacct caggtttaga"  # 4 groups of 10 bases, 3 spaces
    assert counted(f"        1 {genbank}\n") == {"dna": 43}
    assert counted("ACGTACGTAC and GATTACA, a cat can tag an ant") == {}  # runs under 20 bases, words


def test_later_rules_win_and_each_character_counts_once():
    text = f"{B64_LINE}\n{SHA256}\nACGTACGTACGTACGTACGTACGT\n"
    assert counted(text) == {"base64": 76, "hex": 64, "dna": 24}
    assert C.char_codes(text).shape == (len(text),)


def test_token_codes_take_the_highest_code_over_each_tokens_characters():
    codes = np.array([0, 0, 1, 1, 0], dtype=np.uint8)
    # two tokens share character 2 (bytes of one character); token 4 covers 3..4 as the next starts at 4
    offsets = [(0, 1), (1, 2), (2, 3), (2, 3), (3, 4), (4, 5)]
    assert C.token_codes(codes, offsets).tolist() == [0, 0, 1, 1, 1, 0]
    assert C.token_codes(codes, [(0, 2), (5, 5)]).tolist() == [1, 0]  # past the end: no category
    assert C.token_codes(np.zeros(0, dtype=np.uint8), []).tolist() == []


@pytest.fixture(scope="module")
def byte_tok():
    """A byte-level BPE without merges: one token per UTF-8 byte, so token counts are byte counts."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens([EOT])
    return tok


def test_tokens_of_a_character_all_get_its_category(byte_tok):
    text = "ab مرحبا ACGTACGTACGTACGTACGT"  # 2 bytes; a space and 10 bytes of Arabic; a space and 20 bases
    enc = byte_tok.encode(text, add_special_tokens=False)
    assert len(enc.ids) == 2 + 11 + 21
    counts = C.count_codes(C.token_codes(C.char_codes(text), enc.offsets))
    # each of a letter's two byte tokens is Arabic; the spaces are tokens of their own, and no category
    assert counts[C.code("arabic")] == 10 and counts[C.code("dna")] == 20 and counts[0] == 4
    assert C.shares(counts, len(enc.ids))["arabic"] == pytest.approx(10 / 34)


def test_format_shares():
    shares = dict.fromkeys(C.CATEGORIES, 0.0) | {"arabic": 0.0013}
    assert C.format_shares(shares).startswith("arabic 0.13 %, hebrew 0.00 %")
    assert C.format_shares([shares, shares]).startswith("arabic 0.13/0.13 %")
