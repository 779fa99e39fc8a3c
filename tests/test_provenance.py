"""Provenance between stages: a stage built from inputs that changed since is rebuilt, or refused with the command
that rebuilds it; it is never silently reused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from monosemantic.cli import main
from tests.conftest import make_documents
from tests.test_crash_resume import assert_same_tensors, cli, finish, kill_after_checkpoint


def write_corpus(path: Path, n_docs: int, seed: int = 0) -> Path:
    path.write_text("".join(json.dumps({"src": s, "text": t}) + "\n" for s, t in make_documents(n_docs, seed)))
    return path


def one_line_error(capsys, *args) -> str:
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2, args
    err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines are the command's own log
    assert err.startswith("monosemantic: error: "), err
    return err


def config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_a_changed_corpus_rebuilds_tokens_and_refuses_stale_stages(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    tiny = ("--preset", "tiny", "--no-progress")
    before = config(run / "tokens")["splits"]["train"]["n_tokens"]
    # the same command on other texts: the corpus is rebuilt, not skipped
    assert main(["corpus", "build", "--run", str(run), str(write_corpus(tmp_path / "new.jsonl", 120)), *tiny]) == 0
    assert json.loads((run / "corpus" / "manifest.json").read_text())["n_documents"] == 120

    # a stage that reads the stale tokens is refused, naming the command that rebuilds them
    err = one_line_error(capsys, "harvest", "--run", run, *tiny, "--force")
    assert f"{run / 'tokens'}: built from an older {run / 'corpus'}" in err
    assert f"`monosemantic tokenize --run {run}`" in err
    err = one_line_error(capsys, "features", "build", "--run", run, "--no-progress")
    assert "built from an older" in err and "monosemantic tokenize" in err

    # the stage itself is rebuilt by its own command
    assert main(["tokenize", "--run", str(run), *tiny]) == 0
    assert config(run / "tokens")["splits"]["train"]["n_tokens"] != before
    # and then the model trained on the old tokens is the stale one
    err = one_line_error(capsys, "sae", "eval", "--run", run, *tiny)
    assert "transformer/A: built from an older" in err and f"`monosemantic lm train --model A --run {run}`" in err


def test_a_user_file_edited_in_place_rebuilds_the_corpus(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("first version of my notes\n" * 50)
    run = tmp_path / "run"
    args = ["corpus", "build", "--run", str(run), str(text), "--no-progress"]
    assert main(args) == 0
    sha = json.loads((run / "corpus" / "manifest.json").read_text())["sha256"]
    assert main(args) == 0  # unchanged: skipped
    assert json.loads((run / "corpus" / "manifest.json").read_text())["sha256"] == sha
    text.write_text("second version, edited in place\n" * 50)
    assert main(args) == 0
    assert json.loads((run / "corpus" / "manifest.json").read_text())["sha256"] != sha


def test_saes_of_changed_activations_are_trained_again(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32))
    out = tmp_path / "o"
    args = ["sae", "train", "--activations", acts, "--out", out, "--preset", "tiny", "--n-features", "16"]
    args = [str(a) for a in [*args, "--no-progress"]]
    assert main(args) == 0
    weights = (out / "tm2023-16" / "sae.safetensors").read_bytes()
    assert main(args) == 0  # the same activations: skipped
    assert (out / "tm2023-16" / "sae.safetensors").read_bytes() == weights
    np.save(acts, np.random.default_rng(1).normal(size=(512, 8)).astype(np.float32))
    assert main(args) == 0
    assert (out / "tm2023-16" / "sae.safetensors").read_bytes() != weights


@pytest.mark.slow
def test_a_checkpoint_of_other_activations_is_discarded_not_resumed(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("old", "new"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(8192, 16)).astype(np.float32))
    acts = tmp_path / "acts.npy"
    shutil.copy(tmp_path / "old.npy", acts)
    common = ["--preset", "tiny", "--n-features", "32", "--batch-size", "64", "--n-steps", "100"]
    common += ["--checkpoint-every", "10"]
    out = tmp_path / "o"
    proc = cli("sae", "train", "--activations", acts, "--out", out, *common)
    kill_after_checkpoint(proc, out / ".checkpoint")
    shutil.copy(tmp_path / "new.npy", acts)  # the activations change while the checkpoint waits
    os.utime(acts, ns=(1, 1))
    log = finish(cli("sae", "train", "--activations", acts, "--out", out, *common))
    assert "made from other activations than now: discarded" in log and "resuming" not in log
    finish(cli("sae", "train", "--activations", tmp_path / "new.npy", "--out", tmp_path / "fresh", *common))
    assert_same_tensors(out / "tm2023-32" / "sae.safetensors", tmp_path / "fresh" / "tm2023-32" / "sae.safetensors")


def test_stamps_follow_content_and_survive_a_moved_run(tmp_path):
    from monosemantic import provenance

    stage, other = tmp_path / "run" / "tokens", tmp_path / "run" / "corpus"
    stage.mkdir(parents=True)
    other.mkdir()
    (other / "manifest.json").write_text('{"sha256": "a"}')
    ins = provenance.inputs(stage, [other])
    provenance.record(stage, ins)
    assert provenance.fresh(stage, provenance.inputs(stage, [other]))
    (other / "manifest.json").write_text('{"sha256": "b"}')
    assert provenance.changed(stage, provenance.inputs(stage, [other])) == ["../corpus"]
    (other / "manifest.json").write_text('{"sha256": "a"}')
    shutil.move(tmp_path / "run", tmp_path / "moved")  # names are relative: a moved run stays fresh
    moved = tmp_path / "moved"
    assert provenance.fresh(moved / "tokens", provenance.inputs(moved / "tokens", [moved / "corpus"]))
