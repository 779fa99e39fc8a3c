"""The command line as a user meets it: the tiny demo, resumption, --help, and one-line errors."""

import json
import shutil
import subprocess
import sys

import pytest

from monosemantic.cli import main
from monosemantic.config import preset_names
from tests.conftest import make_documents


@pytest.fixture
def user_corpus(tmp_path):
    path = tmp_path / "my.jsonl"
    path.write_text("".join(json.dumps({"src": s, "text": t}) + "\n" for s, t in make_documents(300)))
    return path


def run_cli(*args):
    return main([str(a) for a in args])


def test_tiny_demo_end_to_end_then_skips(user_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    demo = ("demo", "--preset", "tiny", "--input", user_corpus, "--run", run, "--no-progress")  # model B by default
    assert run_cli(*demo) == 0
    out = capsys.readouterr().out
    assert "model A" in out and "bigram" in out
    hook = "blocks.0.mlp.hook_post"
    for stage in ("corpus", "tokenizer", "tokens", "transformer/A", f"activations/A/{hook}"):
        assert (run / stage / "config.json").is_file(), stage
    for name in ("tm2023-64", "tm2023-128"):
        assert (run / f"sae/A/{hook}/{name}/cfg.json").is_file()
        m = json.loads((run / f"eval/A/{hook}/{name}/metrics.json").read_text())
        assert 0 < m["l0"] < int(name.split("-")[1]) and 0 < m["loss_recovered"] <= 1
        assert (run / f"eval/A/{hook}/{name}/density.png").read_bytes()[:4] == b"\x89PNG"
    assert "loss rec" in out
    assert (run / "features/features.sqlite").is_file() and (run / "features/config.json").is_file()
    assert "monosemantic serve" in out
    assert "case studies" in out and "universality" in out  # the interpretation tables
    assert (run / "transformer/B/model.safetensors").is_file() and (run / f"sae/B/{hook}/tm2023-128/cfg.json").is_file()
    assert not (run / f"sae/B/{hook}/tm2023-64").exists()  # model B gets only the ladder's largest SAE
    timings = json.loads((run / "demo_timings.json").read_text())["seconds"]
    assert {"lm train A", "sae train A", "evaluate A", "lm train B", "feature database", "total"} <= set(timings)
    metrics = json.loads((run / "transformer/A/metrics.json").read_text())
    assert metrics["val_loss"] < metrics["unigram_loss"]
    assert {"bigram_loss", "tokens_per_s", "train_seconds", "val_tokens"} <= set(metrics)
    assert not (run / "checkpoints").exists()  # finished runs leave no checkpoints behind

    weights = (run / "transformer/A/model.safetensors").stat().st_mtime_ns
    assert run_cli("demo", "--preset", "tiny", "--input", user_corpus, "--run", run, "--no-progress") == 0
    assert (run / "transformer/A/model.safetensors").stat().st_mtime_ns == weights  # skipped, not redone


def test_stage_commands_and_overrides(user_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    common = ("--run", run, "--preset", "tiny", "--no-progress")
    assert run_cli("corpus", "build", user_corpus, *common) == 0
    assert run_cli("tokenize", *common, "--vocab-size", 300) == 0
    assert json.loads((run / "tokenizer/config.json").read_text())["vocab_size"] == 300
    assert run_cli("lm", "train", *common, "--model", "B", "--seed", 1, "--n-steps", 5, "--eval-every", 5) == 0
    cfg = json.loads((run / "transformer/B/config.json").read_text())
    assert cfg["train"]["seed"] == 1 and cfg["train"]["n_steps"] == 5 and cfg["model"]["vocab_size"] == 300
    assert "val_loss" in json.loads(capsys.readouterr().out)


def test_interrupted_lm_stage_resumes(user_corpus, tmp_path, monkeypatch):
    """Kill LM training mid-run (Ctrl-C); the same command resumes from the checkpoint."""
    from monosemantic.transformer import train

    run = tmp_path / "run"
    common = ("--run", run, "--preset", "tiny", "--no-progress")
    assert run_cli("corpus", "build", user_corpus, *common) == 0
    assert run_cli("tokenize", *common) == 0
    real = train.train_transformer

    def interrupted(*args, **kwargs):
        def stop(row):
            if row["step"] == 40:
                raise KeyboardInterrupt

        return real(*args, **{**kwargs, "on_log": stop})

    monkeypatch.setattr(train, "train_transformer", interrupted)
    assert run_cli("lm", "train", *common) == 130
    assert not (run / "transformer/A").exists()  # no half-written stage folder
    assert json.loads((run / "checkpoints/transformer-A/ckpt.json").read_text())["step"] == 20
    monkeypatch.setattr(train, "train_transformer", real)
    assert run_cli("lm", "train", *common, "-v") == 0
    log = [json.loads(x) for x in (run / "transformer/A/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20, 40, 60]


@pytest.mark.parametrize(
    "args, message",
    [
        (["corpus", "build", "{tmp}/missing.txt"], "missing.txt"),
        (["corpus", "build", "{tmp}/empty.jsonl"], "empty"),
        (["corpus", "build", "hf:no-such-dataset-xyz"], "no-such-dataset-xyz"),
        (["tokenize"], "no corpus yet"),
        (["lm", "train"], "tokens"),
        (["lm", "train", "--n-steps", "0"], "n_steps must be positive"),
        (["corpus", "build", "--preset", "nope"], "no such preset"),
    ],
)
def test_bad_input_gives_one_line_error(args, message, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    argv = [a.format(tmp=tmp_path) for a in args] + ["--run", str(tmp_path / "run"), "--no-progress"]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("monosemantic: error:") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run" / "corpus").exists()


@pytest.mark.parametrize(
    "command",
    [[], ["demo"], ["corpus", "build"], ["tokenize"], ["lm", "train"], ["harvest"], ["sae", "train"], ["sae", "eval"]],
)
def test_help(command):
    out = subprocess.run([sys.executable, "-m", "monosemantic", *command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: monosemantic" in out.stdout
    if command == ["lm", "train"]:
        assert "--d-model" in out.stdout and "Residual stream width" in out.stdout
    if command == ["demo"]:
        assert "--lm-n-steps" in out.stdout


def test_sae_train_on_any_array_then_export_and_import(tmp_path, capsys):
    import numpy as np
    import torch

    from monosemantic.sae.model import SparseAutoencoder

    acts = np.maximum(np.random.default_rng(0).normal(size=(2048, 24)), 0).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    out = tmp_path / "saes"
    args = ["sae", "train", "--activations", tmp_path / "acts.npy", "--out", out, "--n-features", "32,48"]
    args += ["--batch-size", 256, "--lr", 0.001, "--b-dec-init-n-inputs", 512, "--resample-n-batches", 2]
    assert run_cli(*args, "--no-progress") == 0
    assert {p.name for p in out.iterdir()} == {"tm2023-32", "tm2023-48"}
    training = json.loads((out / "tm2023-48/training.json").read_text())
    assert training["n_steps"] == 8  # one pass over 2048 rows at batch 256, never more

    assert run_cli("sae", "export", out / "tm2023-48", tmp_path / "saelens") == 0
    assert (tmp_path / "saelens/cfg.json").is_file() and (tmp_path / "saelens/sae_weights.safetensors").is_file()
    assert run_cli("sae", "import", tmp_path / "saelens", tmp_path / "back") == 0
    a, b = SparseAutoencoder.load(out / "tm2023-48"), SparseAutoencoder.load(tmp_path / "back")
    x = torch.from_numpy(acts[:64])
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "8"], "--k: not a setting of --arch tm2023"),
        (["--arch", "topk", "--l1-coeff", "0.1"], "--l1-coeff: not a setting of --arch topk"),
        (["--n-features", "8,x"], "--n-features: expected comma-separated int values"),
    ],
)
def test_sae_train_flag_errors(extra, message, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "acts.npy", np.zeros((64, 4), dtype=np.float32))
    args = ["sae", "train", "--activations", tmp_path / "acts.npy", "--out", tmp_path / "o", *extra]
    try:
        code = run_cli(*args)
    except SystemExit as e:  # a malformed value is argparse's one-line usage error
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_stage_order_errors_name_the_missing_stage(tmp_path, capsys):
    assert run_cli("harvest", "--run", tmp_path / "r") == 2
    assert "no model yet" in capsys.readouterr().err
    assert run_cli("sae", "train", "--run", tmp_path / "r") == 2
    assert "no activations yet" in capsys.readouterr().err
    assert run_cli("sae", "eval", "--run", tmp_path / "r") == 2
    assert "no SAEs to evaluate" in capsys.readouterr().err


def test_sae_train_in_a_run_with_checkpoints_off(tiny_run, tmp_path, capsys):
    """`--checkpoint-every 0` is the SAE's setting; it must not reach the LM's config (which needs > 0)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["sae", "train", "--run", run, "--preset", "tiny", "--no-progress", "--n-features", "24", "--n-steps", "4"]
    assert run_cli(*args, "--checkpoint-every", "0") == 0, capsys.readouterr().err
    assert (run / "sae/A/blocks.0.mlp.hook_post/tm2023-24/cfg.json").is_file()
    assert not (run / "checkpoints").exists()


def test_a_presets_demo_section_sets_the_demos_defaults(tiny_run, tmp_path, capsys):
    from importlib import resources

    from monosemantic.config import load_preset

    # the paper's universality and its randomized control in every demo
    assert load_preset("default")["demo"] == {"universality": True, "control": True}
    assert load_preset("full")["demo"] == {"universality": True, "control": True}
    tiny = json.loads((resources.files("monosemantic.presets") / "tiny.json").read_text())
    preset = tmp_path / "no_b.json"
    preset.write_text(json.dumps({**tiny, "demo": {"universality": False}}))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # model A's stages are done: the demo skips them
    demo = ("demo", "--preset", preset, "--run", run, "--no-progress", "--features-analyses", "none")
    assert run_cli(*demo) == 0
    assert (run / "features/features.sqlite").is_file() and not (run / "transformer/B").exists()
    shutil.rmtree(run / "features")
    assert run_cli(*demo, "--universality") == 0  # the flag wins
    assert (run / "transformer/B/model.safetensors").is_file()

    preset.write_text(json.dumps({**tiny, "demo": {"universalty": False}}))
    assert run_cli(*demo) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(preset) in err and "demo section may only set control, subject, universality" in err


def test_a_misspelt_sae_setting_in_a_preset_is_an_error(tiny_run, tmp_path, capsys):
    """A key no SAE recipe knows must not be dropped silently (it would train with the default)."""
    from importlib import resources

    tiny = json.loads((resources.files("monosemantic.presets") / "tiny.json").read_text())
    preset = tmp_path / "typo.json"
    preset.write_text(json.dumps({**tiny, "sae": {**tiny["sae"], "resample_directon": "centered"}}))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ("sae", "train", "--run", run, "--preset", preset, "--no-progress", "--n-features", "24", "--n-steps", "4")
    assert run_cli(*args) == 2
    assert "unknown SAE settings in preset: resample_directon" in capsys.readouterr().err
    out = run / "sae/A/blocks.0.mlp.hook_post/tm2023-24"
    assert not out.exists()
    preset.write_text(json.dumps({**tiny, "sae": {**tiny["sae"], "resample_direction": "centered"}}))
    assert run_cli(*args) == 0
    assert json.loads((out / "training.json").read_text())["train"]["resample_direction"] == "centered"


@pytest.mark.parametrize("name", preset_names())
def test_every_built_in_preset_builds_every_stage_config(name):
    # a preset's values are only checked when a stage builds its config, so a typo or a bad value in a
    # preset the tests never run (full takes 47 min) would first show at the user's demo
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config

    cfg = run_config(_parser().parse_args(["demo", "--preset", name]), prefixed=True)
    assert cfg.ladder.n_features and cfg.sae.lr > 0
    assert cfg.ladder.arch == "topk" or cfg.sae.l1_coeff > 0
    assert cfg.lm.n_steps > 0 and cfg.harvest.n_tokens > 0
    if cfg.subject:  # a pretrained subject: every stage that runs it reads the same hook
        assert cfg.harvest.hook == cfg.eval.hook == cfg.features.hook != "blocks.0.mlp.hook_post"


def test_the_default_demo_is_the_20_minute_workload_and_full_the_longer_one():
    # `monosemantic demo` with no flags is the short workload on 2 cores (docs/results.md); full is the
    # longer one on more data; both train model B
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config

    default = run_config(_parser().parse_args(["demo"]), prefixed=True)
    full = run_config(_parser().parse_args(["demo", "--preset", "full"]), prefixed=True)
    assert default.lm.n_steps < full.lm.n_steps
    assert default.harvest.n_tokens < full.harvest.n_tokens
    assert default.universality is True and full.universality is True  # both train model B (paper §8.12)
    assert default.ladder.n_features == full.ladder.n_features  # the same ladder, so feature splitting still runs
