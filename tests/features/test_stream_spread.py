"""The spread sample of held-out contexts: the whole split, every shard, deterministic, sources right."""

import numpy as np
import pytest

from monosemantic.data.tokenizer import train_tokenizer
from monosemantic.data.tokens import TokensConfig, TokenStore, write_tokens
from monosemantic.errors import UserError
from monosemantic.features.stream import context_offsets, contexts_at, held_out_contexts
from tests.conftest import make_documents


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TokenStore:
    """A validation split of several shards (small shards force several files)."""
    docs = make_documents(400)
    tok = train_tokenizer((t for _, t in docs), vocab_size=300)
    folder = tmp_path_factory.mktemp("spread") / "tokens"
    write_tokens(iter(docs), tok, folder, TokensConfig(val_fraction=0.3, shard_tokens=8192), progress=False)
    s = TokenStore(folder)
    assert len(s.val.shards) >= 3
    return s


def src_by_loop(store: TokenStore) -> np.ndarray:
    """The plain version: each document's tokens carry its source, token by token."""
    split = store.val
    out = np.zeros(split.n_tokens, dtype=np.int16)
    bases = np.concatenate([[0], np.cumsum(split.shard_sizes)[:-1]])
    for doc in split.docs:
        start = int(bases[int(doc["shard"])] + int(doc["start"]))
        out[start : start + int(doc["length"])] = int(doc["src"])
    return out


def test_spread_contexts_cover_the_whole_split(store):
    L = 32
    grid = context_offsets(store.val, L)
    ctx = held_out_contexts(store, L, 20 * L)
    assert ctx.tokens.shape == (20, L) and len(set(ctx.offsets.tolist())) == 20
    assert ctx.offsets[0] == grid[0] == 0 and ctx.offsets[-1] == grid[-1]  # first and last window
    bases = np.concatenate([[0], np.cumsum(store.val.shard_sizes)])
    shards = set((np.searchsorted(bases, ctx.offsets, side="right") - 1).tolist())
    assert shards == set(range(len(store.val.shards)))  # every shard
    assert np.all(np.diff(ctx.offsets) > 0)  # in stream order
    gaps = np.diff(np.searchsorted(grid, ctx.offsets))
    assert gaps.max() - gaps.min() <= 1  # evenly strided over the windows
    # The old order: the first windows, all from the first shard.
    first = held_out_contexts(store, L, 20 * L, order="stream")
    np.testing.assert_array_equal(first.offsets, grid[:20])


def test_spread_contexts_are_the_stream_at_their_offsets_with_their_sources(store):
    L = 32
    ctx = held_out_contexts(store, L, 25 * L + 7)
    again = held_out_contexts(store, L, 25 * L + 7)
    np.testing.assert_array_equal(ctx.offsets, again.offsets)  # deterministic
    stream, src = store.val.all_tokens(), src_by_loop(store)
    for row, off, s in zip(ctx.tokens, ctx.offsets, ctx.src, strict=True):
        np.testing.assert_array_equal(row, stream[off : off + L])
        np.testing.assert_array_equal(s, src[off : off + L])
    assert len(set(np.unique(ctx.src).tolist())) > 1
    # Windows inside shards only, and every one of them when more are asked for than exist.
    grid = context_offsets(store.val, L)
    everything = held_out_contexts(store, L, 10**9)
    np.testing.assert_array_equal(everything.offsets, grid)
    np.testing.assert_array_equal(contexts_at(store, L, grid[[3, 5]]).tokens, everything.tokens[[3, 5]])


def test_too_little_is_a_user_error(store):
    with pytest.raises(UserError, match="less than one context"):
        held_out_contexts(store, 32, 31)
    with pytest.raises(UserError, match="shorter than one context"):
        held_out_contexts(store, 10**7, 10**8)
