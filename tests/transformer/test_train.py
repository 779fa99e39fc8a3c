import dataclasses

import pytest
import torch

from monosemantic.checkpoint import read_meta
from monosemantic.data.tokenizer import train_tokenizer
from monosemantic.data.tokens import TokensConfig, TokenStore, write_tokens
from monosemantic.errors import UserError
from monosemantic.runtime import seed_everything
from monosemantic.transformer.model import Transformer, TransformerConfig
from monosemantic.transformer.train import LMTrainConfig, get_lr, train_transformer
from tests.conftest import make_documents

MODEL = TransformerConfig(vocab_size=400, d_model=32, d_mlp=64, n_heads=2, ctx_len=32)
TRAIN = LMTrainConfig(
    n_steps=40,
    batch_size=8,
    lr=5e-3,
    warmup_steps=5,
    eval_every=10,
    eval_tokens=4096,
    checkpoint_every=10,
    device="cpu",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    docs = make_documents(200)
    tok = train_tokenizer((t for _, t in docs), vocab_size=400)
    out = tmp_path_factory.mktemp("tok") / "tokens"
    write_tokens(iter(docs), tok, out, TokensConfig(val_fraction=0.1), progress=False)
    return TokenStore(out)


def fresh_model(seed=0):
    seed_everything(seed)
    return Transformer(MODEL)


def test_loss_goes_down(store):
    model = fresh_model()
    result = train_transformer(model, store, TRAIN, progress=False)
    first, last = result.log[0]["val_loss"], result.log[-1]["val_loss"]
    assert last < first - 0.5
    assert last < 5.0  # well below uniform over 400 tokens (ln 400 = 6.0)
    assert result.tokens_per_s > 0


def test_resume_after_interruption_equals_uninterrupted(store, tmp_path):
    full = fresh_model()
    train_transformer(full, store, TRAIN, progress=False)

    # Interrupt at step 30, after the checkpoint of step 20 and before the one of step 30.
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_transformer(
            fresh_model(), store, TRAIN, ckpt_dir=ckpt, progress=False, on_log=lambda row: _kill_at(row, 30)
        )
    resumed = fresh_model(seed=123)  # different init: everything must come from the checkpoint
    result = train_transformer(resumed, store, TRAIN, ckpt_dir=ckpt, progress=False)
    assert result.step == TRAIN.n_steps
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _kill_at(row, step):
    if row["step"] == step:
        raise KeyboardInterrupt


def test_corrupt_checkpoint_is_never_loaded(store, tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_transformer(
            fresh_model(), store, TRAIN, ckpt_dir=ckpt, progress=False, on_log=lambda row: _kill_at(row, 20)
        )
    tensors = ckpt / read_meta(ckpt)["tensors"]
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UserError, match="corrupt or truncated"):
        train_transformer(fresh_model(), store, TRAIN, ckpt_dir=ckpt, progress=False)


def test_changed_config_does_not_resume(store, tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_transformer(
            fresh_model(), store, TRAIN, ckpt_dir=ckpt, progress=False, on_log=lambda row: _kill_at(row, 20)
        )
    with pytest.raises(UserError, match="different config"):
        train_transformer(fresh_model(), store, dataclasses.replace(TRAIN, lr=1e-3), ckpt_dir=ckpt, progress=False)


def test_lr_schedule():
    cfg = LMTrainConfig(n_steps=100, lr=0.5, warmup_steps=10, min_lr_frac=0.1)
    assert get_lr(0, cfg) == pytest.approx(0.05)
    assert get_lr(9, cfg) == pytest.approx(0.5)
    assert get_lr(10, cfg) == pytest.approx(0.5)
    assert get_lr(100, cfg) == pytest.approx(0.05)
    assert get_lr(55, cfg) == pytest.approx(0.275)


@pytest.mark.parametrize("native", [False, True])
def test_auto_dtype_trains_in_bfloat16_only_where_the_cpu_has_it(store, monkeypatch, native):
    """Emulated bfloat16 made the demo's LM step 30x slower on an AVX2-only CPU: `auto` (the default)
    must train exactly as float32 there, and as bfloat16 autocast where the hardware has it."""
    from monosemantic import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    short = dataclasses.replace(TRAIN, n_steps=10, eval_every=5)
    assert short.dtype == "auto"
    logs = {}
    for dtype in ("auto", "bfloat16" if native else "float32", "float32" if native else "bfloat16"):
        logs[dtype] = [
            r["val_loss"]
            for r in train_transformer(
                fresh_model(), store, dataclasses.replace(short, dtype=dtype), progress=False
            ).log
        ]
    same, other = ("bfloat16", "float32") if native else ("float32", "bfloat16")
    assert logs["auto"] == logs[same]
    assert logs["auto"] != logs[other]  # the two precisions differ, so the equality above means something
    with pytest.raises(ValueError, match="dtype must be auto, float32 or bfloat16"):
        LMTrainConfig(dtype="float16")
