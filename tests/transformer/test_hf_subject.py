"""Deep Hugging Face subjects: the forward stops at the hook, and the subject's precision and placement.

Tiny random models built in-process (a Llama with many layers, a GPT-2), so nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

from monosemantic.activations.capture import capture

transformers = pytest.importorskip("transformers")

N_LAYERS = 12


def tiny_llama(n_layers: int = N_LAYERS, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from monosemantic.transformer.hf import HFSubject

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=96, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    return HFSubject(LlamaForCausalLM(cfg).eval(), 64, "tiny-llama")


def tiny_gpt2(n_layers: int = N_LAYERS, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    from monosemantic.transformer.hf import HFSubject

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=300, n_positions=64, n_layer=n_layers, n_embd=32, n_head=2)
    return HFSubject(GPT2LMHeadModel(cfg).eval(), 64, "tiny-gpt2")


def full_forward_activation(model, module, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain version: the whole forward with a hook that only records (the logits are computed)."""
    seen: list[torch.Tensor] = []
    if which == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _a, o: seen.append(o[0] if isinstance(o, tuple) else o))
    try:
        logits = model(TOKENS)
    finally:
        handle.remove()
    return seen[0], logits


TOKENS = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(1))

SITES = [
    (tiny_llama, "model.layers.{}.mlp.down_proj", "input"),  # a gated MLP's neurons
    (tiny_llama, "model.layers.{}", "output"),  # the residual stream after a block (a tuple-returning module)
    (tiny_gpt2, "transformer.h.{}.mlp.c_proj", "input"),  # GPT-2's neurons
]


@pytest.mark.parametrize(("make", "path", "which"), SITES)
@pytest.mark.parametrize("layer", [0, 2, N_LAYERS - 1])
def test_the_forward_stops_at_the_hook_with_the_full_forwards_activations(make, path, which, layer):
    model = make()
    module = model.find_module(path.format(layer))
    with torch.inference_mode():
        want, _ = full_forward_activation(model, module, which)
        ran: list[int] = []  # every block that runs after the hooked one, and the unembedding
        blocks = model.hf.model.layers if hasattr(model.hf, "model") else model.hf.transformer.h
        later = [*list(blocks)[layer + 1 :], model.hf.get_output_embeddings()]
        handles = [m.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, m in enumerate(later)]
        try:
            got = capture(model, TOKENS, module, which)
        finally:
            for h in handles:
                h.remove()
    assert torch.equal(got, want)  # identical, not merely close: the same ops up to the hook
    assert ran == []  # nothing after the hook ran: harvesting layer L costs about L / n_layers of the model
    assert not module._forward_hooks and not module._forward_pre_hooks


def test_the_harvest_of_a_deep_model_equals_its_full_forward(tmp_path):
    """The harvest stage itself (activations/harvest.py) on a 12-layer Llama, hook in layer 2, against
    rows recomputed from a full forward of the same contexts."""
    import numpy as np

    from monosemantic.activations.harvest import HarvestConfig, harvest
    from monosemantic.activations.store import open_activations
    from monosemantic.data.tokenizer import train_tokenizer
    from monosemantic.data.tokens import TokensConfig, TokenStore, write_tokens
    from tests.conftest import make_documents

    docs = make_documents(60)
    tok = train_tokenizer((t for _, t in docs), vocab_size=300)
    write_tokens(iter(docs), tok, tmp_path / "tokens", TokensConfig(shard_tokens=1 << 20), progress=False)
    store = TokenStore(tmp_path / "tokens")
    model = tiny_llama()
    module = model.find_module("model.layers.2.mlp.down_proj")
    cfg = HarvestConfig(n_tokens=512, positions_per_context=16, batch_contexts=4, store_dtype="float32", shard_rows=128)
    harvest(model, store.train, module, 32, cfg, tmp_path / "acts", progress=False, which="input")
    acts = open_activations(tmp_path / "acts")
    x = np.concatenate([np.load(tmp_path / "acts" / s["acts"]) for s in acts.config["shards"]])
    rows = np.concatenate([np.load(tmp_path / "acts" / s["rows"]) for s in acts.config["shards"]])
    starts = store.train.docs["start"].astype(np.int64)  # one shard: the stream offset of each document
    stream = np.asarray(store.train.shards[0])
    ctx = np.stack([stream[s : s + 32] for s in starts[rows["doc"]] + rows["pos"] - rows["ctx_pos"]]).astype(np.int64)
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.inference_mode():
        model(torch.from_numpy(ctx))
    handle.remove()
    want = seen[0][torch.arange(len(rows)), torch.from_numpy(rows["ctx_pos"].astype(np.int64))]
    assert torch.equal(torch.from_numpy(x), want)
