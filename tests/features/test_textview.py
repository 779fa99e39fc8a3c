"""The live text view's analysis on the tiny run: real tokenizer, model and SAE."""

from __future__ import annotations

import torch

from monosemantic import paths
from monosemantic.features.textview import TextView
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer

SAE = {"name": "tm2023-64", "model": "A", "hook": hooks.MLP_POST, "kind": "sae"}
NEURONS = {"name": "neurons", "model": "A", "hook": hooks.MLP_POST, "kind": "neurons"}


def test_tokens_decode_to_the_text_and_strongest_features_match_the_sae(tiny_run, one_thread):
    text = "the whale sees the rope. x_1 = 42 + 7"
    out = TextView(tiny_run, top_k=5).analyze(text, SAE)
    assert "".join(out["tokens"]) == text and not out["truncated"]
    # independently: the model's cached hook activations through the saved SAE
    layout = paths.RunLayout(tiny_run)
    model = load_transformer(layout.transformer("A")).eval()
    sae = SparseAutoencoder.load(layout.saes("A", hooks.MLP_POST) / "tm2023-64")
    from monosemantic.data.tokenizer import encode, load_tokenizer

    ids = torch.tensor([encode(load_tokenizer(layout.tokenizer / paths.TOKENIZER_JSON), text)])
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids, (hooks.MLP_POST,))
        f = sae.encode(cache[hooks.MLP_POST][0])  # [T, 64]
    for t, (best, active) in enumerate(zip(out["strongest"], out["active"], strict=True)):
        assert len(active) == min(5, int((f[t] > 0).sum()))
        assert [a for _, a in active] == sorted((a for _, a in active), reverse=True)
        if best is None:
            assert f[t].max() <= 0
        else:
            assert best[0] == int(f[t].argmax()) and abs(best[1] - float(f[t].max())) < 1e-3
    assert out["max_act"] == max(out["strongest_act"]) > 0


def test_neurons_and_truncation_to_the_context(tiny_run):
    view = TextView(tiny_run)
    ctx_len = view._model("A").cfg.ctx_len
    out = view.analyze("the whale " * 200, NEURONS)
    assert out["truncated"] and len(out["tokens"]) == ctx_len
    assert all(0 <= f < 128 for tok in out["active"] for f, _ in tok)  # the tiny model's 128 neurons
    assert view.analyze("", SAE)["tokens"] == []
