"""Held-out contexts: where each token came from, and every dictionary's activations on them."""

import numpy as np
import torch

from monosemantic.data.tokens import TokenStore
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer


def test_contexts_come_from_the_validation_stream_with_their_sources(tiny_run):
    store = TokenStore(tiny_run / "tokens")
    ctx = held_out_contexts(store, ctx_len=64, n_tokens=1000)
    assert ctx.tokens.shape == (1000 // 64, 64) and ctx.n_tokens == 15 * 64
    stream = store.val.all_tokens()
    for row, off in zip(ctx.tokens, ctx.offsets, strict=True):
        assert np.array_equal(row, stream[off : off + 64])
    # Every document's tokens carry its source index.
    doc = store.val.docs[0]
    assert doc["shard"] == 0 and ctx.offsets[0] == 0
    assert (ctx.src[0, : min(64, int(doc["length"]))] == doc["src"]).all()
    assert set(np.unique(ctx.src)) <= set(range(len(ctx.sources)))


def test_dictionary_activations_match_the_sae_on_captured_neurons(tiny_run):
    hook = hooks.MLP_POST
    model = load_transformer(tiny_run / "transformer/A")
    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{hook}/tm2023-64")
    tokens = torch.from_numpy(held_out_contexts(TokenStore(tiny_run / "tokens"), 64, 256).tokens)
    acts, feats = dictionary_activations(model, model.hook_point(hook), {"s": sae}, tokens)
    _, cache = model.run_with_cache(tokens, (hook,))
    torch.testing.assert_close(acts, cache[hook])
    torch.testing.assert_close(feats["s"], sae.encode(cache[hook].reshape(-1, 128)).view(4, 64, 64))
