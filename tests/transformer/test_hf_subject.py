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


# -- the subject's precision and placement ------------------------------------------------------------

GPT2_HOOK = "transformer.h.1.mlp.c_proj:input"
BF16_REL_TOL = 0.02
"""bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 % per operation); through the two layers
of the tiny GPT-2 the activations' relative error ‖a_bf16 − a_fp32‖ / ‖a_fp32‖ measured about 0.5 %."""
FP16_REL_TOL = 0.005
"""float16 keeps 11 significant bits: 8x finer than bfloat16 (measured about 0.07 %)."""


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_load_hf_casts_the_weights_to_the_subject_dtype(gpt2_dir):
    from monosemantic.errors import UserError
    from monosemantic.transformer.hf import load_hf

    ids = torch.randint(0, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    ref, _ = load_hf(str(gpt2_dir), ctx_len=32)
    module = ref.find_module(GPT2_HOOK.split(":")[0])
    with torch.inference_mode():
        want = capture(ref, ids, module, "input")
        for dtype, tol in (("bfloat16", BF16_REL_TOL), ("float16", FP16_REL_TOL)):
            m, _ = load_hf(str(gpt2_dir), ctx_len=32, dtype=dtype)
            assert {p.dtype for p in m.parameters()} == {getattr(torch, dtype)}
            got = capture(m, ids, m.find_module(GPT2_HOOK.split(":")[0]), "input")
            assert got.dtype == getattr(torch, dtype)
            assert 0 < rel_err(got, want) < tol, dtype  # rounded, and only rounded
    with pytest.raises(UserError, match="--subject-dtype float64"):
        load_hf(str(gpt2_dir), dtype="float64")


def test_a_bfloat16_subject_harvests_and_evaluates_within_tolerance_of_float32(gpt2_dir, tmp_path):
    """Through the CLI: the stored activations and the eval's losses of a bfloat16 subject against float32,
    with a float32 SAE spliced into the bfloat16 model (the dtypes cross at the hook)."""
    import json

    import numpy as np

    from monosemantic.cli import main
    from tests.transformer.conftest import corpus_run

    run = corpus_run(tmp_path)
    common = ["--run", str(run), "--preset", "tiny", "--no-progress", "--model", str(gpt2_dir), "--hook", GPT2_HOOK]
    hv = ["harvest", *common, "--ctx-len", "64", "--n-tokens", "2048", "--store-dtype", "float32"]
    assert main([*hv, "--positions-per-context", "16"]) == 0
    acts = run / "activations" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input"
    fp32 = np.load(acts / "acts_0000.npy")
    assert main([*hv, "--positions-per-context", "16", "--subject-dtype", "bfloat16", "--force"]) == 0
    cfg = json.loads((acts / "config.json").read_text())
    assert cfg["config"]["subject_dtype"] == "bfloat16"
    bf16 = np.load(acts / "acts_0000.npy")  # the same seed: the same contexts, positions and row order
    assert 0 < rel_err(torch.from_numpy(bf16), torch.from_numpy(fp32)) < BF16_REL_TOL

    assert main(["sae", "train", *common, "--n-features", "256", "--n-steps", "16", "--batch-size", "256"]) == 0
    ev = ["sae", "eval", *common, "--ctx-len", "64", "--eval-tokens", "1024"]
    metrics = run / "eval" / "hf-tiny-gpt2" / "transformer.h.1.mlp.c_proj-input" / "tm2023-256" / "metrics.json"
    assert main(ev) == 0
    m32 = json.loads(metrics.read_text())
    assert main([*ev, "--subject-dtype", "bfloat16", "--force"]) == 0
    m16 = json.loads(metrics.read_text())
    for k in ("loss_clean", "loss_sae", "loss_zero", "loss_mean"):
        assert m16[k] == pytest.approx(m32[k], rel=0.01), k  # the losses within 1 %
    assert m16["l0"] == pytest.approx(m32["l0"], rel=0.05)


def test_device_map_places_the_model_through_accelerate(gpt2_dir, monkeypatch):
    """On a machine without GPUs `auto` puts every layer on the CPU: the same logits as a plain load."""
    import importlib.util

    from monosemantic.errors import UserError
    from monosemantic.transformer import hf

    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    plain, _ = hf.load_hf(str(gpt2_dir), ctx_len=32)
    asked: list[object] = []
    load = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        asked.append(kwargs.get("device_map"))
        return load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    placed, _ = hf.load_hf(str(gpt2_dir), ctx_len=32, device_map="auto")
    assert asked == ["auto"]  # transformers infers the map (one device here, so no dispatch hooks)
    with torch.inference_mode():
        torch.testing.assert_close(placed(ids), plain(ids), rtol=0, atol=0)
    real = importlib.util.find_spec
    monkeypatch.setattr(hf.importlib.util, "find_spec", lambda name: None if name == "accelerate" else real(name))
    with pytest.raises(UserError, match="--device-map auto: needs accelerate"):
        hf.load_hf(str(gpt2_dir), device_map="auto")


def test_a_run_models_subject_dtype_and_device_map(tmp_path):
    """Our own transformer casts to the subject dtype too; device_map is for Hugging Face models only."""
    from monosemantic import paths
    from monosemantic.errors import UserError
    from monosemantic.io import save_tensors, write_config
    from monosemantic.transformer.model import KIND, Transformer, TransformerConfig
    from monosemantic.transformer.subject import load_model

    cfg = TransformerConfig(vocab_size=300, d_model=32, d_mlp=64, n_heads=2, ctx_len=32)
    folder = tmp_path / "A"
    folder.mkdir()
    save_tensors(folder / paths.MODEL_WEIGHTS, Transformer(cfg).state_dict())
    write_config(folder / paths.CONFIG, KIND, {"model": cfg.to_dict(), "name": "A"})
    ref, m = load_model(folder), load_model(folder, dtype="bfloat16")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert 0 < rel_err(m(ids).float(), ref(ids)) < BF16_REL_TOL
    with pytest.raises(UserError, match="only for a Hugging Face model"):
        load_model(folder, device_map="auto")
