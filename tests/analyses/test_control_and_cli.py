"""The shuffled-weights control model (paper.md §8.9) and the CLI of the later analyses."""

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


def test_the_demo_control_is_trained_streamed_scored_and_reported(tiny_run, tmp_path):
    """Paper §8.9 in the demo: A shuffled, harvested, the ladder's largest SAE trained like A's; the build
    writes its dictionary under model A-shuffled, the analyses that select A's leave it alone, and the
    explain step scores it beside A's."""
    import dataclasses
    import json

    from monosemantic import pipeline
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # model A's stages are done: the demo skips them
    argv = ["demo", "--preset", "tiny", "--run", str(run), "--no-progress"]
    cfg = run_config(_parser().parse_args(argv), prefixed=True)
    features = dataclasses.replace(cfg.features, analyses=("explain", "split"))
    cfg = dataclasses.replace(cfg, universality=False, control=True, features=features)
    result = pipeline.run_demo(RunLayout(run), cfg, pipeline.DemoOptions(progress=False), on_eval=lambda e: None)
    hook = hooks.MLP_POST
    assert (run / "transformer/A-shuffled/model.safetensors").is_file()
    assert not (run / f"sae/A-shuffled/{hook}/tm2023-64").exists()  # only the ladder's largest size
    trained = [json.loads((run / f"sae/{m}/{hook}/tm2023-128/training.json").read_text()) for m in ("A", "A-shuffled")]
    assert trained[0]["train"] == trained[1]["train"] and trained[0]["n_steps"] == trained[1]["n_steps"]
    assert {"shuffle A-shuffled", "harvest A-shuffled", "sae train A-shuffled"} <= set(result.seconds)

    conn = db.open_readonly(result.database)
    dicts = {(m, n): i for i, m, n in conn.execute("SELECT id, model, name FROM dictionaries")}
    assert set(dicts) == {("A", "neurons"), ("A", "tm2023-64"), ("A", "tm2023-128"), ("A-shuffled", "tm2023-128")}
    control = dicts["A-shuffled", "tm2023-128"]
    count = lambda sql, *a: conn.execute(sql, a).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM examples WHERE dictionary_id = ? AND kind = 'top'", control) > 0
    split_ids = {i for row in conn.execute("SELECT parent_dictionary_id, child_dictionary_id FROM splits") for i in row}
    assert split_ids and control not in split_ids  # feature splitting took A's ladder only
    live = count("SELECT count(*) FROM features WHERE dictionary_id = ? AND n_active > 0", control)
    explained = count("SELECT count(*) FROM features WHERE dictionary_id = ? AND explanation IS NOT NULL", control)
    assert live > 0 and explained == live  # every live feature of the control has an explanation
    rows = {(r["model"], r["dictionary"]): r for r in db.get_summary(conn, "interpretability")["dictionaries"]}
    assert rows["A-shuffled", "tm2023-128"]["n_scored"] > 0 and rows["A", "neurons"]["n_scored"] > 0
    assert rows["A", "tm2023-128"]["test_windows_per_feature"]["heldout"] == 20  # the model re-run for them
    table = pipeline.interp_summary(result.database)
    assert "A-shuffled" in table and "single-token" in table
