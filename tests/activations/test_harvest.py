import dataclasses
import logging

import numpy as np
import pytest
import torch

from monosemantic import paths
from monosemantic.activations import harvest as H
from monosemantic.activations.harvest import HarvestConfig, harvest
from monosemantic.activations.store import ActivationStore
from monosemantic.errors import UserError
from monosemantic.io import read_config
from monosemantic.transformer import hooks

CTX = 32
CFG = HarvestConfig(
    n_tokens=1000, positions_per_context=20, batch_contexts=8, shard_rows=300, store_dtype="float32", device="cpu"
)


def tiny_cfg(**overrides) -> HarvestConfig:
    return dataclasses.replace(CFG, **overrides)


def stream_of(split) -> tuple[np.ndarray, np.ndarray]:
    """The split's tokens as one array, and each document's start in it."""
    stream = np.concatenate([np.asarray(s, dtype=np.int64) for s in split.shards])
    offset = np.concatenate([[0], np.cumsum(split.shard_sizes)[:-1]])
    return stream, offset[split.docs["shard"].astype(np.int64)] + split.docs["start"].astype(np.int64)


@pytest.fixture(scope="module")
def harvested(tmp_path_factory, model, tokens):
    out = tmp_path_factory.mktemp("acts") / "A" / hooks.MLP_POST
    meta = harvest(model, tokens.train, model.hook_point(hooks.MLP_POST), CTX, CFG, out, progress=False)
    return meta, ActivationStore(out)


def assert_rows_are_their_context_activations(store, model, split):
    rows = store.rows()
    acts = np.concatenate([store.files[i].read(0, store.files[i].n_rows) for i in range(store.n_shards)])
    stream, doc_start = stream_of(split)
    g = doc_start[rows["doc"]] + rows["pos"]  # each row's token in the stream
    assert np.array_equal(stream[g], rows["token"])  # token ids match the token stream
    assert np.all(rows["pos"] < split.docs["length"][rows["doc"]])
    ctx_start, inverse = np.unique(g - rows["ctx_pos"], return_inverse=True)
    windows = torch.from_numpy(np.stack([stream[s : s + CTX] for s in ctx_start]))
    with torch.inference_mode():
        _, cache = model.run_with_cache(windows, (hooks.MLP_POST,))
    expected = cache[hooks.MLP_POST][torch.from_numpy(inverse), torch.from_numpy(rows["ctx_pos"].astype(np.int64))]
    torch.testing.assert_close(torch.from_numpy(acts), expected, rtol=1e-5, atol=1e-6)


def test_every_row_is_its_context_activation(harvested, model, tokens):
    meta, store = harvested
    assert_rows_are_their_context_activations(store, model, tokens.train)
    assert meta["d"] == store.d == 64 and meta["dtype"] == "float32"


def test_shards_smaller_than_a_batch(model, tokens, tmp_path):
    cfg = tiny_cfg(n_tokens=100, shard_rows=7)  # 160 rows per forward fill several shards
    meta = harvest(model, tokens.train, model.hook_point(hooks.MLP_POST), CTX, cfg, tmp_path / "h", progress=False)
    assert [s["n_rows"] for s in meta["shards"]] == [7] * 14 + [2]
    assert_rows_are_their_context_activations(ActivationStore(tmp_path / "h"), model, tokens.train)


def test_contexts_positions_and_shards(harvested, tokens):
    meta, store = harvested
    rows = store.rows()
    _, doc_start = stream_of(tokens.train)
    ctx_start = doc_start[rows["doc"]] + rows["pos"] - rows["ctx_pos"]
    # Contexts are non-overlapping windows from each shard's start, each used once.
    shard_of_ctx = np.searchsorted(np.cumsum(tokens.train.shard_sizes), ctx_start, side="right")
    offset = np.concatenate([[0], np.cumsum(tokens.train.shard_sizes)[:-1]])
    assert np.all((ctx_start - offset[shard_of_ctx]) % CTX == 0)
    starts, counts = np.unique(ctx_start, return_counts=True)
    assert len(starts) == meta["n_contexts"] == 1000 // 20
    assert np.all(counts == 20)  # positions_per_context, never a context twice
    pairs = np.unique(np.stack([ctx_start, rows["ctx_pos"]]), axis=1)
    assert pairs.shape[1] == len(rows)  # positions without replacement
    # Shards are bounded and each one mixes many contexts.
    assert [s["n_rows"] for s in meta["shards"]] == [300, 300, 300, 100]
    assert len(np.unique(ctx_start[:20])) > 5
    assert meta["tokens_per_s"] > 0 and meta["n_rows"] == store.n_rows == 1000


def test_harvest_is_seeded(harvested, model, tokens, tmp_path):
    _, a = harvested
    for name, cfg in [("b", CFG), ("c", tiny_cfg(seed=1))]:
        harvest(model, tokens.train, model.hook_point(hooks.MLP_POST), CTX, cfg, tmp_path / name, progress=False)
    b, c = ActivationStore(tmp_path / "b"), ActivationStore(tmp_path / "c")
    assert np.array_equal(a.rows(), b.rows())
    assert np.array_equal(a.files[0].read(0, 300), b.files[0].read(0, 300))
    assert not np.array_equal(a.rows(), c.rows())


def test_float16_storage(model, tokens, tmp_path):
    out = tmp_path / "h"
    cfg = tiny_cfg(store_dtype="float16", n_tokens=90)
    harvest(model, tokens.train, model.hook_point(hooks.MLP_POST), CTX, cfg, out, False)
    store = ActivationStore(out)
    assert store.files[0].array.dtype == np.float16
    assert next(store.batches(64)).dtype == torch.float32


def test_short_contexts_clip_positions_with_a_warning(model, tokens, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        meta = harvest(
            model,
            tokens.train,
            model.hook_point(hooks.MLP_POST),
            16,
            tiny_cfg(positions_per_context=250, n_tokens=100),
            tmp_path / "h",
            False,
        )
    assert meta["positions_per_context"] == 16 and meta["n_contexts"] == 7
    assert "positions_per_context 250 > context length 16" in caplog.text


def test_asking_for_more_rows_than_the_split_holds(model, tokens, tmp_path):
    with pytest.raises(UserError, match="contexts"):
        harvest(
            model, tokens.train, model.hook_point(hooks.MLP_POST), CTX, tiny_cfg(n_tokens=10**8), tmp_path / "h", False
        )
    assert not (tmp_path / "h").exists()


def test_an_interrupted_harvest_leaves_no_folder(model, tokens, tmp_path):
    calls = []

    def stop_on_second_batch(toks):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return model(toks)

    wrapper = torch.nn.Module()
    wrapper.forward = stop_on_second_batch
    wrapper.inner = model
    with pytest.raises(KeyboardInterrupt):
        harvest(
            wrapper, tokens.train, model.hook_point(hooks.MLP_POST), CTX, tiny_cfg(shard_rows=50), tmp_path / "h", False
        )
    assert list(tmp_path.iterdir()) == []


def test_config_validation():
    bad = [("n_tokens", 0), ("positions_per_context", -1), ("shard_rows", 0), ("store_dtype", "int8")]
    for field, value in [*bad, ("dtype", "float16")]:
        with pytest.raises(ValueError, match=field):
            tiny_cfg(**{field: value})


def test_run_stage_writes_the_layout_folder_and_skips_when_complete(layout, monkeypatch):
    cfg = tiny_cfg(n_tokens=200)
    meta = H.run(layout, "A", cfg, progress=False)
    out = layout.root / "activations" / "A" / hooks.MLP_POST
    assert read_config(out / paths.CONFIG, "monosemantic.activations")["n_rows"] == 200
    assert meta["model_name"] == "A" and meta["split"] == "train" and meta["ctx_len"] == 32

    def fail(*a, **k):
        raise AssertionError("should skip")

    monkeypatch.setattr(H, "harvest", fail)
    assert H.run(layout, "A", cfg, progress=False)["n_rows"] == 200
    monkeypatch.undo()
    assert H.run(layout, "A", tiny_cfg(n_tokens=100), force=True, progress=False)["n_rows"] == 100
    with pytest.raises(UserError, match="hook"):
        H.run(layout, "A", tiny_cfg(hook="blocks.9.nope"), progress=False)
    with pytest.raises(UserError, match="not found"):
        H.run(layout, "B", cfg, progress=False)
