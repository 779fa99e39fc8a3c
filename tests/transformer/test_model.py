import pytest
import torch

from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer, TransformerConfig


def test_paper_shapes():
    m = Transformer(TransformerConfig(vocab_size=1000))
    assert m.blocks[0].mlp.W_in.shape == (128, 512)  # [TM]: residual 128, 512 neurons
    assert m.blocks[0].mlp.W_out.shape == (512, 128)
    assert m.W_U.shape == (128, 1000)
    tokens = torch.randint(0, 1000, (2, 256))
    assert m(tokens).shape == (2, 256, 1000)


def test_hook_names_and_shapes():
    cfg = TransformerConfig(vocab_size=100, d_model=32, d_mlp=64, n_heads=2, ctx_len=16)
    m = Transformer(cfg)
    _, cache = m.run_with_cache(torch.randint(0, 100, (3, 10)), hooks.ALL)
    assert set(cache) == set(hooks.ALL)
    widths = {hooks.MLP_PRE: 64, hooks.MLP_POST: 64}
    for name, act in cache.items():
        assert act.shape == (3, 10, widths.get(name, 32)), name
    assert torch.equal(cache[hooks.MLP_POST], torch.relu(cache[hooks.MLP_PRE]))
    # The residual stream adds up: resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out
    torch.testing.assert_close(cache[hooks.RESID_POST], cache[hooks.RESID_MID] + cache[hooks.MLP_OUT])
    torch.testing.assert_close(cache[hooks.RESID_MID], cache[hooks.RESID_PRE] + cache[hooks.ATTN_OUT])
    with pytest.raises(KeyError, match="unknown hook"):
        m.hook_point("blocks.0.mlp.hook_nope")


def test_hook_can_replace_an_activation():
    m = Transformer(TransformerConfig(vocab_size=50, d_model=16, d_mlp=32, n_heads=2, ctx_len=8))
    x = torch.randint(0, 50, (2, 8))
    h = m.hook_point(hooks.MLP_POST).register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    zero_ablated = m(x)
    h.remove()
    _, cache = m.run_with_cache(x, (hooks.MLP_OUT,))
    assert not torch.allclose(zero_ablated, m(x))
    assert cache[hooks.MLP_OUT].abs().sum() > 0


def test_causal():
    m = Transformer(TransformerConfig(vocab_size=50, d_model=16, d_mlp=32, n_heads=2, ctx_len=8))
    x = torch.randint(0, 50, (1, 8))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 50
    torch.testing.assert_close(m(x)[:, :-1], m(y)[:, :-1])


def test_bad_config_and_long_input():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(d_model=30, n_heads=4)
    m = Transformer(TransformerConfig(vocab_size=10, d_model=8, d_mlp=8, n_heads=2, ctx_len=4))
    with pytest.raises(ValueError, match="longer than ctx_len"):
        m(torch.zeros(1, 5, dtype=torch.long))
