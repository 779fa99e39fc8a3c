"""A tiny run folder shared by the activation tests: token shards and an untrained transformer."""

from __future__ import annotations

import pytest

from monosemantic import paths
from monosemantic.data.tokenizer import train_tokenizer
from monosemantic.data.tokens import TokensConfig, TokenStore, write_tokens
from monosemantic.io import save_tensors, write_config
from monosemantic.runtime import seed_everything
from monosemantic.transformer.model import Transformer, TransformerConfig
from tests.conftest import make_documents

MODEL = TransformerConfig(vocab_size=400, d_model=32, d_mlp=64, n_heads=2, ctx_len=32)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> paths.RunLayout:
    """runs/<tmp>/ with tokens/ (several small shards) and transformer/A/ (random weights)."""
    layout = paths.RunLayout(tmp_path_factory.mktemp("run"))
    docs = make_documents(200)
    tok = train_tokenizer((t for _, t in docs), vocab_size=MODEL.vocab_size)
    write_tokens(iter(docs), tok, layout.tokens, TokensConfig(val_fraction=0.1, shard_tokens=8192), progress=False)
    seed_everything(0)
    model = Transformer(MODEL)
    folder = layout.transformer("A")
    folder.mkdir(parents=True)
    save_tensors(folder / paths.MODEL_WEIGHTS, model.state_dict())
    write_config(folder / paths.CONFIG, "monosemantic.transformer", {"model": MODEL.to_dict(), "name": "A"})
    return layout


@pytest.fixture(scope="module")
def tokens(layout) -> TokenStore:
    return TokenStore(layout.tokens)


@pytest.fixture(scope="module")
def model(layout) -> Transformer:
    from monosemantic.transformer.model import load_transformer

    return load_transformer(layout.transformer("A"))
