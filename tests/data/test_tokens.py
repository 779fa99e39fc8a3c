import json

import numpy as np
import pytest

from monosemantic.data.tokenizer import EOT, decode, train_tokenizer
from monosemantic.data.tokens import TokensConfig, TokenStore, is_val, write_tokens
from monosemantic.errors import UserError
from tests.conftest import make_documents


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer((t for _, t in make_documents(200)), vocab_size=500)


def test_documents_round_trip_through_shards(tok, tmp_path):
    docs = make_documents(120)
    cfg = TokensConfig(val_fraction=0.2, shard_tokens=4096)
    meta = write_tokens(iter(docs), tok, tmp_path / "tokens", cfg, progress=False)
    store = TokenStore(tmp_path / "tokens")
    assert meta["splits"]["train"]["n_shards"] > 1  # small shards force several files
    expected = {"train": [], "val": []}
    for i, d in enumerate(docs):
        expected["val" if is_val(i, cfg) else "train"].append(d)
    for split in ("train", "val"):
        s = getattr(store, split)
        assert len(s.docs) == len(expected[split]) > 0
        for row, (src, text) in zip(s.docs, expected[split], strict=True):
            ids = s.shards[row["shard"]][row["start"] : row["start"] + row["length"]]
            assert ids[0] == tok.token_to_id(EOT)  # every document starts with EOT
            assert decode(tok, ids[1:]) == text
            assert store.sources[row["src"]] == src
    for s in (store.train, store.val):  # documents tile the shards exactly
        assert s.n_tokens == int(s.docs["length"].sum())


def test_split_is_by_document_and_deterministic(tok, tmp_path):
    docs = make_documents(100)
    cfg = TokensConfig(val_fraction=0.3, seed=7)
    write_tokens(iter(docs), tok, tmp_path / "a", cfg, progress=False)
    write_tokens(iter(docs), tok, tmp_path / "b", cfg, progress=False)
    for split in ("train", "val"):
        a, b = (tmp_path / x / f"{split}_000.bin" for x in "ab")
        assert a.read_bytes() == b.read_bytes()
    assert 10 <= len(TokenStore(tmp_path / "a").val.docs) <= 50


def test_windows_and_samples(tok, tmp_path):
    write_tokens(iter(make_documents(100)), tok, tmp_path / "t", TokensConfig(val_fraction=0.2), progress=False)
    store = TokenStore(tmp_path / "t")
    w = store.val.windows(33)
    assert w.shape[1] == 33 and w.dtype == np.int64
    assert (w[1:, 0] == w[:-1, -1]).all()  # consecutive windows share one token: each target scored once
    a = store.train.sample_windows(np.random.default_rng(1), 8, 17)
    b = store.train.sample_windows(np.random.default_rng(1), 8, 17)
    assert a.shape == (8, 17) and (a == b).all()


def test_empty_corpus_is_a_clear_error(tok, tmp_path):
    with pytest.raises(UserError, match="empty"):
        write_tokens(iter([]), tok, tmp_path / "t", progress=False)
    assert not (tmp_path / "t").exists()  # nothing half-written


def test_corrupt_store_is_reported(tok, tmp_path):
    write_tokens(iter(make_documents(50)), tok, tmp_path / "t", TokensConfig(val_fraction=0.2), progress=False)
    (tmp_path / "t" / "train_docs.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        TokenStore(tmp_path / "t")


def test_category_shares_are_counted_per_split_in_tokens(tmp_path):
    # One token per UTF-8 byte (no merges), so the counts are hand-made: "ab مرحبا" is 2 + 1 + 10
    # tokens, 10 of them Arabic, and each document adds its EOT (no category) before it.
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    byte_tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    byte_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_tok.add_special_tokens([EOT])
    docs = [("a", "ab مرحبا"), ("b", "hello"), ("c", "ACGT" * 5), ("d", "x")] * 5
    cfg = TokensConfig(val_fraction=0.3, seed=1)
    meta = write_tokens(iter(docs), byte_tok, tmp_path / "t", cfg, progress=False)
    val = [is_val(i, cfg) for i in range(len(docs))]
    assert 0 < sum(val) < len(docs)
    per_doc = {"a": (14, 10, 0), "b": (6, 0, 0), "c": (21, 0, 20), "d": (2, 0, 0)}  # tokens, arabic, dna
    measured = meta["content_categories"]
    for split, held_out in (("train", False), ("val", True)):
        rows = [per_doc[src] for (src, _), v in zip(docs, val, strict=True) if v == held_out]
        n, arabic, dna = (sum(r[k] for r in rows) for k in range(3))
        assert meta["splits"][split]["n_tokens"] == n
        assert measured["tokens"][split]["arabic"] == arabic and measured["tokens"][split]["dna"] == dna
        assert measured["tokens"][split]["hebrew"] == 0
        assert measured["share_tokens"][split]["arabic"] == pytest.approx(arabic / n)
    assert TokenStore(tmp_path / "t").category_shares == measured["share_tokens"]


def test_tokens_written_before_the_measurement_still_load(tok, tmp_path):
    write_tokens(iter(make_documents(50)), tok, tmp_path / "t", TokensConfig(val_fraction=0.2), progress=False)
    path = tmp_path / "t" / "config.json"
    config = json.loads(path.read_text())
    del config["content_categories"]
    path.write_text(json.dumps(config))
    store = TokenStore(tmp_path / "t")
    assert store.category_shares is None and store.val.n_tokens > 0
