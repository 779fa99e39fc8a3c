"""The shuffled-weights control model (TM §4) and the CLI of the later analyses."""

import shutil

import pytest
import torch

from monosemantic import paths
from monosemantic.analyses.loader import ensure_dictionaries
from monosemantic.cli import main
from monosemantic.features import db
from monosemantic.io import load_tensors
from monosemantic.paths import RunLayout
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer
from monosemantic.transformer.shuffle import shuffle_matrices


def test_shuffle_keeps_each_matrix_multiset_and_vectors():
    g = torch.Generator().manual_seed(0)
    state = {"W": torch.randn(6, 5, generator=g), "E": torch.randn(4, 3, generator=g), "b": torch.randn(5)}
    out = shuffle_matrices(state, seed=1)
    for k in ("W", "E"):
        assert out[k].shape == state[k].shape and not torch.equal(out[k], state[k])
        torch.testing.assert_close(out[k].flatten().sort().values, state[k].flatten().sort().values)
    assert torch.equal(out["b"], state["b"])  # vectors (biases, LayerNorm) are kept
    assert all(torch.equal(out[k], v) for k, v in shuffle_matrices(state, seed=1).items())  # seeded
    assert not torch.equal(shuffle_matrices(state, seed=2)["W"], out["W"])


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_lm_shuffle_writes_a_loadable_control_model(run_copy):
    assert main(["lm", "shuffle", "--run", str(run_copy)]) == 0
    a = load_tensors(run_copy / "transformer/A/model.safetensors")
    s = load_tensors(run_copy / "transformer/A-shuffled/model.safetensors")
    for k, v in a.items():
        same = torch.equal(v.flatten().sort().values, s[k].flatten().sort().values)
        assert same and (v.dim() < 2 or not torch.equal(v, s[k]))
    model = load_transformer(run_copy / "transformer/A-shuffled")
    x = torch.arange(8)[None]
    with torch.no_grad():
        assert not torch.allclose(model(x), load_transformer(run_copy / "transformer/A")(x))
    # Then the usual pipeline runs on it.
    assert main(["harvest", "--run", str(run_copy), "--model", "A-shuffled", "--preset", "tiny", "--no-progress"]) == 0
    assert (run_copy / f"activations/A-shuffled/{hooks.MLP_POST}/config.json").is_file()


def test_features_proxies_cli(run_copy, capsys):
    assert main(["features", "proxies", "--run", str(run_copy), "--no-progress"]) == 2  # no database yet
    assert "features build" in capsys.readouterr().err
    layout = RunLayout(run_copy)
    (run_copy / "features").mkdir(exist_ok=True)
    conn = db.create(run_copy / "features" / paths.FEATURES_DB)
    ensure_dictionaries(conn, layout, "A", hooks.MLP_POST)
    conn.close()
    argv = ["features", "proxies", "--run", str(run_copy), "--no-progress", "--proxies", "arabic,dna",
            "--n-tokens", "512", "--sample-tokens", "5000", "--proxy", "digits=regex:[0-9]+"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "arabic" in out and "digits" in out and "0.74" in out
    conn = db.open_readonly(run_copy / "features" / paths.FEATURES_DB)
    names = {r[0] for r in conn.execute("SELECT DISTINCT name FROM proxies")}
    assert names == {"arabic", "dna", "digits"}
    assert main(["features", "proxies", "--run", str(run_copy), "--proxy", "bad"]) == 2


def test_analyses_run_on_a_database_from_features_build(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["features", "build", "--run", str(run), "--n-tokens", "2560", "--no-progress"]) == 0
    assert main(["features", "explain", "--run", str(run), "--no-progress", "--min-examples", "4"]) == 0
    argv = ["features", "proxies", "--run", str(run), "--no-progress", "--n-tokens", "512", "--sample-tokens", "5000"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "neurons" in out and "tm2023-64" in out and "arabic" in out
    conn = db.open_readonly(run / "features" / paths.FEATURES_DB)
    scored = conn.execute("SELECT count(*) FROM features WHERE score IS NOT NULL").fetchone()[0]
    assert scored > 0
    assert db.get_summary(conn, "interpretability") and db.get_summary(conn, "case_study")
