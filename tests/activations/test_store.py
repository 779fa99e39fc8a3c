import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from monosemantic import paths
from monosemantic.activations.harvest import HarvestConfig, harvest
from monosemantic.activations.store import ActivationSource, ActivationStore, open_activations
from monosemantic.errors import UserError
from monosemantic.transformer import hooks

N, D = 1000, 8


def indexed(n=N, d=D) -> np.ndarray:
    """Row i is filled with i, so a batch says which rows it holds."""
    return np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1)


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, indexed())
    return path


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, model, tokens):
    out = tmp_path_factory.mktemp("store") / "h"
    cfg = HarvestConfig(n_tokens=700, positions_per_context=20, batch_contexts=8, shard_rows=128, device="cpu")
    harvest(model, tokens.train, model.hook_point(hooks.MLP_POST), 32, cfg, out, progress=False)
    return out


def ids(batches) -> np.ndarray:
    return np.concatenate([np.empty(0, np.float32)] + [b[:, 0].numpy() for b in batches]).astype(np.int64)


@pytest.mark.parametrize("batch_size", [1, 64, 100, 333, 1000, 4096])
@pytest.mark.parametrize("buffer_rows", [None, 50, 256])
def test_each_row_exactly_once_per_pass(npy, batch_size, buffer_rows):
    src = open_activations(npy)
    batches = list(src.batches(batch_size, seed=3, buffer_rows=buffer_rows))
    assert all(b.shape == (batch_size, D) and b.dtype == torch.float32 for b in batches[:-1])
    assert 0 < len(batches[-1]) <= batch_size
    assert np.array_equal(np.sort(ids(batches)), np.arange(N))


def test_seeds_orders_drop_last_and_skip(npy):
    src = open_activations(npy)
    a, b, c = (ids(src.batches(64, seed=s, buffer_rows=200)) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, np.arange(N))
    assert np.array_equal(ids(src.batches(64, shuffle=False)), np.arange(N))
    assert len(list(src.batches(64, drop_last=True))) == N // 64
    for skip in (0, 64, 130, 640, N):
        assert np.array_equal(ids(src.batches(64, seed=0, buffer_rows=200, skip_rows=skip)), a[skip:])


def test_batches_mix_rows_from_across_the_file(npy):
    first = ids([next(open_activations(npy).batches(100, seed=0, buffer_rows=200))])
    assert np.ptp(first) > N // 2  # not one contiguous stretch


def test_store_reads_back_the_shards(store_dir):
    store = open_activations(store_dir)
    assert isinstance(store, ActivationStore) and store.n_shards == 6 and store.hook == hooks.MLP_POST
    on_disk = np.concatenate([np.load(store_dir / f"acts_{i:04d}.npy") for i in range(store.n_shards)])
    read = torch.cat(list(store.batches(96, seed=5))).numpy()
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731 - sort rows to compare as multisets
    assert np.array_equal(key(read), key(on_disk))
    assert np.array_equal(torch.cat(list(store.batches(96, shuffle=False))).numpy(), on_disk)
    assert len(store.rows()) == store.n_rows == 700 and len(store.rows(5)) == 700 - 5 * 128


def test_safetensors_inputs(tmp_path):
    x = torch.from_numpy(indexed())
    save_file({"whatever": x[:200].bfloat16()}, tmp_path / "one.safetensors")  # bf16 holds 0..255 exactly
    save_file({"acts": x, "labels": torch.zeros(N)}, tmp_path / "named.safetensors")
    save_file({"a": x, "b": x.clone()}, tmp_path / "two.safetensors")
    one = open_activations(tmp_path / "one.safetensors")
    assert (one.n_rows, one.d) == (200, D)
    assert np.array_equal(np.sort(ids(one.batches(128))), np.arange(200))
    named = open_activations(tmp_path / "named.safetensors")
    assert np.array_equal(np.sort(ids(named.batches(128))), np.arange(N))
    with pytest.raises(UserError, match=r"two\.safetensors: 2 tensors \(a, b\)"):
        open_activations(tmp_path / "two.safetensors")


def test_plain_npy_in_other_float_dtypes(tmp_path):
    np.save(tmp_path / "f16.npy", indexed(500).astype(np.float16))
    np.save(tmp_path / "f64.npy", indexed())
    for name, n in (("f16.npy", 500), ("f64.npy", N)):
        src = open_activations(tmp_path / name)
        assert isinstance(src, ActivationSource) and src.n_rows == n
        assert np.array_equal(np.sort(ids(src.batches(100))), np.arange(n))


def bad(path, message):
    with pytest.raises(UserError, match=message) as e:
        src = open_activations(path)
        list(src.batches(64))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_plain_inputs(tmp_path):
    bad(tmp_path / "missing.npy", "not found")
    np.save(tmp_path / "one_d.npy", np.zeros(10, dtype=np.float32))
    bad(tmp_path / "one_d.npy", "2-D")
    np.save(tmp_path / "ints.npy", np.zeros((10, 4), dtype=np.int64))
    bad(tmp_path / "ints.npy", "float")
    x = indexed()
    x[777, 3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    bad(tmp_path / "nan.npy", "NaN or inf")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.float32))
    bad(tmp_path / "empty.npy", "empty")
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    bad(tmp_path / "junk.npy", "not a readable .npy")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    bad(tmp_path / "junk.safetensors", "not a readable safetensors")
    save_file({"x": torch.zeros(4, 4, dtype=torch.int32)}, tmp_path / "ints.safetensors")
    bad(tmp_path / "ints.safetensors", "float")
    (tmp_path / "acts.csv").write_text("1,2\n")
    bad(tmp_path / "acts.csv", "expected a harvested activations folder")


def test_bad_stores(store_dir, tmp_path):
    import shutil

    def copy(name):
        shutil.copytree(store_dir, tmp_path / name)
        return tmp_path / name

    (copy("corrupt") / paths.CONFIG).write_text("{not json")
    bad(tmp_path / "corrupt", "not valid JSON")
    cfg = json.loads((store_dir / paths.CONFIG).read_text())
    del cfg["d"]
    (copy("no_d") / paths.CONFIG).write_text(json.dumps(cfg))
    bad(tmp_path / "no_d", "corrupt activations config")
    (copy("no_shard") / "acts_0002.npy").unlink()
    bad(tmp_path / "no_shard", "acts_0002.npy: shard not found")
    np.save(copy("short") / "acts_0001.npy", np.zeros((5, 64), dtype=np.float32))
    bad(tmp_path / "short", "config.json says")
    (copy("empty") / paths.CONFIG).unlink()
    bad(tmp_path / "empty", "config.json: file not found")


def test_bad_arguments_fail_at_the_call(npy):
    src = open_activations(npy)
    for kwargs in ({"batch_size": 0}, {"batch_size": 8, "skip_rows": N + 1}, {"batch_size": 8, "buffer_rows": 0}):
        with pytest.raises(ValueError):
            src.batches(**kwargs)
