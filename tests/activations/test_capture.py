import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monosemantic.activations.capture import capture
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer
from tests.activations.conftest import MODEL


@pytest.fixture
def tiny():
    return Transformer(MODEL).eval()


@pytest.fixture
def toks():
    return torch.randint(0, MODEL.vocab_size, (3, MODEL.ctx_len))


@pytest.mark.parametrize("hook", hooks.ALL)
def test_capture_equals_run_with_cache(tiny, toks, hook):
    _, cache = tiny.run_with_cache(toks, (hook,))
    got = capture(tiny, toks, tiny.hook_point(hook))
    assert torch.equal(got, cache[hook])


def test_capture_stops_before_the_unembedding(tiny, toks):
    calls = []
    handle = tiny.unembed.register_forward_hook(lambda *_: calls.append(1))
    capture(tiny, toks, tiny.hook_point(hooks.MLP_POST))
    handle.remove()
    assert calls == []  # the most expensive part of the forward never runs
    assert not tiny.hook_point(hooks.MLP_POST)._forward_hooks  # the capture hook is removed


def test_capture_input_and_output(tiny, toks):
    _, cache = tiny.run_with_cache(toks, (hooks.RESID_POST, hooks.MLP_OUT, hooks.MLP_PRE))
    assert torch.equal(capture(tiny, toks, tiny.ln_f, which="input"), cache[hooks.RESID_POST])
    assert torch.equal(capture(tiny, toks, tiny.blocks[0].mlp, which="output"), cache[hooks.MLP_OUT])
    # The input of the post-ReLU hook is relu(pre), and taking it never runs the hook module.
    got = capture(tiny, toks, tiny.blocks[0].mlp.hook_post, which="input")
    assert torch.equal(got, F.relu(cache[hooks.MLP_PRE]))


def test_capture_of_a_module_the_forward_never_calls(tiny, toks):
    with pytest.raises(RuntimeError, match="never called"):
        capture(tiny, toks, nn.Linear(2, 2))
