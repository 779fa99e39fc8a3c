import pytest

from monosemantic.data.tokenizer import EOT, decode, encode, load_tokenizer, save_tokenizer, train_tokenizer
from monosemantic.errors import UserError


@pytest.fixture(scope="module")
def tok():
    from tests.conftest import make_documents

    return train_tokenizer((t for _, t in make_documents(200)), vocab_size=600)


@pytest.mark.parametrize(
    "text",
    [
        "مرحبا بالعالم ث",  # Arabic, with the paper's example letter
        "בְּרֵאשִׁית בָּרָא אֱלֹהִים",  # pointed Hebrew
        "日本語のテキストと中文",  # CJK
        "emoji 🐋🚢 and ZWJ 👩‍💻 sequences",
        "mixed 12345 numbers, tabs\tand\nnewlines  ",
    ],
)
def test_round_trip_any_script(tok, text):
    assert decode(tok, encode(tok, text)) == text


def test_invalid_utf8_round_trips_as_replacement_characters(tok):
    raw = b"ok \xff\xfe bad \xc3( bytes"
    text = raw.decode("utf-8", errors="replace")
    assert "\ufffd" in text
    assert decode(tok, encode(tok, text)) == text
    # A lone surrogate (as from surrogateescape) cannot be UTF-8 encoded; it becomes U+FFFD, not a crash.
    assert decode(tok, encode(tok, "a\udcffb")) == "a\ufffdb"


def test_eot_is_id_zero_and_vocab_size(tok):
    assert tok.token_to_id(EOT) == 0
    assert tok.get_vocab_size() == 600


def test_byte_level_arabic_letter_is_two_bytes(tok):
    # [TM]: Arabic ث (U+062B) is the bytes d8 ab; an untrained letter must still encode, as its bytes.
    ids = encode(tok, "ث")
    assert 1 <= len(ids) <= 2


def test_save_and_load(tok, tmp_path):
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert encode(again, "the whale sees the moon") == encode(tok, "the whale sees the moon")


def test_bad_tokenizer_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        load_tokenizer(bad)
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
