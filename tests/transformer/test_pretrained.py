"""A pretrained subject end to end (`demo --preset smollm2`), with the tiny GPT-2 standing in for SmolLM2-135M,
and the pieces it needs: the model fetched and converted once, and ablations through a deep model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.cli import main
from tests.conftest import make_documents

transformers = pytest.importorskip("transformers")

HOOK = "transformer.h.1.mlp.c_proj:input"
KEY = "hf-tiny-gpt2"


def test_pretrained_model_is_converted_once_and_checked_by_its_digest(gpt2_dir, tmp_path, monkeypatch):
    """The artifact's model file becomes a save_pretrained folder in the cache; the second call reads it."""
    from monosemantic.data.sources import RECORD, Artifact
    from monosemantic.transformer import pretrained
    from monosemantic.transformer.hf import load_hf

    art = Artifact("tiny", "wheel", "tiny==1", "tiny-1.whl", "ab" * 32)
    fetched: list[str] = []

    def fake_fetch(a, cache):
        fetched.append(a.spec)
        return gpt2_dir.parent  # the "unpacked artifact" holding the model folder

    monkeypatch.setattr(pretrained, "fetch_artifact", fake_fetch)
    monkeypatch.setitem(pretrained.PRETRAINED, "tiny", pretrained.Pretrained(art, gpt2_dir.name, "tiny-gpt2"))
    out = pretrained.pretrained_model("tiny", tmp_path)
    assert out == tmp_path / "models" / "tiny-gpt2" and (out / "model.safetensors").is_file()
    assert json.loads((out / RECORD).read_text())["sha256"] == art.sha256 and fetched == ["tiny==1"]
    assert pretrained.pretrained_model("tiny", tmp_path) == out and len(fetched) == 1  # converted once
    ids = torch.tensor([[5, 9, 33, 2, 7]])
    with torch.inference_mode():
        assert torch.equal(load_hf(str(out))[0](ids), load_hf(str(gpt2_dir))[0](ids))
    with pytest.raises(Exception, match="pretrained model 'nope'"):
        pretrained.pretrained_model("nope", tmp_path)


def test_converting_without_progress_hides_transformers_bars_and_restores_them(gpt2_dir, tmp_path, monkeypatch):
    from transformers.utils import logging as hf_logging

    from monosemantic.data.sources import Artifact
    from monosemantic.transformer import hf, pretrained

    art = Artifact("tiny", "wheel", "tiny==1", "tiny-1.whl", "ab" * 32)
    monkeypatch.setattr(pretrained, "fetch_artifact", lambda a, cache: gpt2_dir.parent)
    monkeypatch.setitem(pretrained.PRETRAINED, "tiny", pretrained.Pretrained(art, gpt2_dir.name, "tiny-gpt2"))
    shown: list[bool] = []
    load = hf.load_hf
    monkeypatch.setattr(hf, "load_hf", lambda spec: shown.append(hf_logging.is_progress_bar_enabled()) or load(spec))
    hf_logging.enable_progress_bar()
    pretrained.pretrained_model("tiny", tmp_path / "quiet", progress=False)
    pretrained.pretrained_model("tiny", tmp_path / "shown")
    assert shown == [False, True] and hf_logging.is_progress_bar_enabled()


def test_the_separator_is_endoftext_where_the_vocabulary_has_it():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from monosemantic.transformer.hf import document_separator

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")),
                                  eos_token="<|im_end|>", bos_token="<|im_start|>")  # fmt: skip
    assert tok.eos_token_id == 2 and document_separator(tok, "chat") == 0  # pretraining text's separator
    del vocab["<|endoftext|>"]
    vocab["x"] = 0
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="x")),
                                  eos_token="<|im_end|>")  # fmt: skip
    assert document_separator(tok, "chat") == 2  # no <|endoftext|>: the EOS


def run_with_tokens(tmp_path: Path, gpt2_dir: Path):
    """A run with a corpus, and the subject loaded with the run's corpus in its tokenizer."""
    from monosemantic import paths
    from monosemantic.data.tokens import TokenStore
    from monosemantic.transformer.subject import ensure_tokens, load_subject
    from tests.transformer.conftest import corpus_run

    layout = paths.RunLayout(corpus_run(tmp_path))
    s = load_subject(layout, str(gpt2_dir), HOOK, ctx_len=32)
    return layout, s, TokenStore(ensure_tokens(layout, s, progress=False))


def manual_ablation(model, tokens: torch.Tensor, edit) -> torch.Tensor:
    """log p_ablated − log p_clean of every next token `[B, T-1]`, by a pre-hook on c_proj (the plain version)."""
    module = model.hf.transformer.h[1].mlp.c_proj
    with torch.inference_mode():
        clean = torch.log_softmax(model(tokens), -1)
        handle = module.register_forward_pre_hook(lambda _m, a: (edit(a[0]),))
        try:
            abl = torch.log_softmax(model(tokens), -1)
        finally:
            handle.remove()
    nxt = tokens[:, 1:, None]
    return (abl[:, :-1].gather(2, nxt) - clean[:, :-1].gather(2, nxt))[..., 0]


def test_deep_ablation_equals_the_edited_forward(gpt2_dir, tmp_path):
    """ablation_deep against a hand-written edit of the whole forward: a neuron zeroed, and an SAE feature's
    contribution f_i(x)·d_i subtracted, at every position; batching mixes features and lengths."""
    from monosemantic.analyses.ablation_deep import ablate_deep
    from monosemantic.analyses.examples import Example, stream_slices
    from monosemantic.analyses.loader import Dictionary
    from monosemantic.sae.model import SAEConfig, SparseAutoencoder

    _, s, store = run_with_tokens(tmp_path, gpt2_dir)
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(128, 256)).eval().requires_grad_(False)
    with torch.no_grad():
        sae.b_enc += 0.5  # features fire often, so the edits matter
    dicts = {
        "neurons": Dictionary(1, "neurons", "neurons", 128, lambda x: x, torch.eye(128)),
        "sae": Dictionary(2, "sae", "sae", 256, sae.encode, sae.W_dec.detach(), sae),
    }
    examples = [Example(10, 3, 0, 2, 6, 5), Example(11, 3, 64, 20, 8, 24), Example(12, 7, 32, 0, 4, 1),
                Example(13, 7, 96, 10, 12, 15), Example(14, 3, 128, 25, 7, 30)]  # fmt: skip
    for name, d in dicts.items():
        got = ablate_deep(s.model, HOOK, d, examples, store.val, batch=2)
        assert sorted(got) == [3, 7]
        for e in examples:
            tokens = torch.from_numpy(stream_slices(store.val, np.array([e.ctx_offset]), e.start + e.length))
            W = d.W_dec[e.feature]

            def edit(a, W=W, f=e.feature, d=d):
                fa = d.encode(a.reshape(-1, a.shape[-1]))[:, f].view(*a.shape[:2], 1)
                return a - fa * W

            want = manual_ablation(s.model, tokens, edit)[0]
            window = got[e.feature].window_deltas[e.rowid]
            assert len(window) == e.length
            for j, p in enumerate(range(e.start, e.start + e.length)):
                assert (window[j] is None) == (p == 0)
                if p:
                    assert window[j] == pytest.approx(float(want[p - 1]), abs=2e-5), (name, e, p)
        for f in (3, 7):
            assert torch.isfinite(got[f].mean_effect).all() and got[f].mean_effect.shape == (store.vocab_size,)


def test_demo_on_a_pretrained_subject(gpt2_dir, tmp_path, monkeypatch, capsys):
    """`demo` with a preset whose demo section names a pretrained subject: corpus → the subject's tokens →
    harvest → ladder → eval through the model → the database with every analysis a pretrained model takes."""
    from monosemantic.features import db
    from monosemantic.transformer import pretrained

    monkeypatch.setattr(pretrained, "pretrained_model", lambda name, cache=None, progress=True: gpt2_dir)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"src": s, "text": t}) + "\n" for s, t in make_documents(300)))
    preset = json.loads(Path("src/monosemantic/presets/tiny.json").read_text())
    preset["demo"] = {"subject": "smollm2", "universality": False, "control": False}
    for section in ("harvest", "eval", "features"):
        preset[section]["hook"] = HOOK
    preset["features"]["ctx_len"] = 64
    preset["sae"] |= {"arch": "topk", "k": 8}  # as the smollm2 preset: TopK, whose encoder couples the features
    (tmp_path / "preset.json").write_text(json.dumps(preset))
    run = tmp_path / "run"
    argv = ["demo", "--preset", str(tmp_path / "preset.json"), "--input", str(corpus), "--run", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "browse the features" in out and "model      smollm2" in out

    hook_dir = "transformer.h.1.mlp.c_proj-input"
    for n in (64, 128):
        m = json.loads((run / "eval" / KEY / hook_dir / f"topk-{n}" / "metrics.json").read_text())
        assert m["kl_zero"] > 0 and m["eval_tokens"] > 0 and "loss_recovered" in m  # spliced into the whole model
    assert json.loads((run / "demo_timings.json").read_text())["seconds"]["model smollm2"] >= 0
    conn = db.open_readonly(run / "features" / "features.sqlite")
    dicts = {r["name"]: r["id"] for r in conn.execute("SELECT name, id FROM dictionaries WHERE model = ?", (KEY,))}
    assert set(dicts) == {"neurons", "topk-64", "topk-128"}
    case = db.get_summary(conn, "case_study")
    assert case["model"] == KEY and len(case["rows"]) == 32  # 8 proxies, with and without synthetic/, 2 SAEs
    for name, i in dicts.items():
        n = conn.execute("SELECT count(*) FROM ablations WHERE dictionary_id = ?", (i,)).fetchone()[0]
        assert 0 < n <= 8, name  # a sample of the features, through the whole model
        windows = conn.execute("SELECT count(*) FROM examples WHERE dictionary_id = ? AND ablation_json IS NOT NULL",
                               (i,)).fetchone()[0]  # fmt: skip
        assert 0 < windows <= 3 * n
    assert conn.execute("SELECT count(*) FROM pinned").fetchone()[0] == 0  # no pinned samples for a deep model
    assert conn.execute("SELECT count(*) FROM logit_links").fetchone()[0] > 0  # automata from the direct path
    assert conn.execute("SELECT count(*) FROM features WHERE logit_json IS NOT NULL").fetchone()[0] > 0
    interp = db.get_summary(conn, "interpretability")
    assert {d["dictionary"] for d in interp["dictionaries"]} >= {"neurons", "topk-128"}
    assert db.get_summary(conn, "universality") is None
    rows = [dict(r) for r in conn.execute("SELECT name, model, hook, kind FROM dictionaries WHERE model = ?", (KEY,))]
    conn.close()

    # The browser's live text view runs the subject the database was built from, with its tokenizer.
    from monosemantic.features.textview import TextView
    from monosemantic.transformer.hf import load_hf

    view = TextView(run)
    model, tok = load_hf(str(gpt2_dir), ctx_len=64)
    ids = [tok.eos_token_id, *tok.encode("the whale sees the moon")]
    seen = []
    model.hf.transformer.h[1].mlp.c_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.inference_mode():
        model(torch.tensor([ids]))
    for row in rows:
        out = view.analyze("the whale sees the moon", row)
        assert len(out["tokens"]) == len(ids) and not out["truncated"]
        if row["kind"] == "neurons":  # the strongest neuron of each token, read off the forward by hand
            want = seen[0][0].max(-1)
            got = [a[1] if a else 0.0 for a in out["strongest"]]
            assert got == pytest.approx([max(v, 0.0) for v in want.values.tolist()], abs=1e-3)
