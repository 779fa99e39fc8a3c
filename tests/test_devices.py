"""--device and --dtype: a device this machine lacks, or a dtype we do not train in, is a one-line error."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from monosemantic.cli import main
from monosemantic.errors import UserError
from monosemantic.runtime import pick_device, pick_dtype


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_sae_train_on_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys):
    np.save(tmp_path / "acts.npy", np.ones((8192, 4), dtype=np.float32))
    argv = [
        "sae",
        "train",
        "--activations",
        str(tmp_path / "acts.npy"),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cuda",
    ]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "monosemantic: error: --device cuda: CUDA is not available on this machine"
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has a GPU")
def test_auto_picks_cpu_and_names_are_checked():
    assert pick_device("auto").type == "cpu" and pick_device("cpu").type == "cpu"
    with pytest.raises(UserError, match="MPS is not available"):
        pick_device("mps")
    assert pick_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(UserError, match="choose one of float32, bfloat16"):
        pick_dtype("float16")


def test_lm_dtype_flag_is_checked(tmp_path, capsys):
    assert main(["lm", "train", "--run", str(tmp_path / "r"), "--dtype", "float16", "--no-progress"]) == 2
    assert "dtype must be auto, float32 or bfloat16" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_is_picked_when_present():
    assert pick_device("auto").type == "cuda" and pick_device("cuda").type == "cuda"


STAGES = [["harvest"], ["sae", "train"], ["sae", "eval"], ["features", "build"], ["lm", "train"], ["demo"]]


@pytest.mark.parametrize("stage", STAGES, ids=" ".join)
def test_every_stage_takes_dtype(stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([*stage, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    blocks = re.split(r"\n(?=  -)", out)  # one block per flag
    (flag,) = [b for b in blocks if re.match(r"\s*--dtype\b", b)]
    assert "bfloat16" in flag and "float32" in flag, flag


def test_demo_dtype_sets_every_stage_unless_a_stage_sets_its_own():
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config

    args = _parser().parse_args(["demo", "--preset", "tiny", "--dtype", "float32", "--sae-dtype", "bfloat16"])
    cfg = run_config(args, prefixed=True)
    assert [c.dtype for c in (cfg.lm, cfg.harvest, cfg.eval, cfg.features)] == ["float32"] * 4
    assert cfg.sae.dtype == "bfloat16"
    plain = run_config(_parser().parse_args(["demo", "--preset", "tiny"]), prefixed=True)
    assert (plain.lm.dtype, plain.harvest.dtype, plain.sae.dtype) == ("auto", "float32", "float32")


def test_demo_hook_sets_every_stage_site_unless_a_stage_sets_its_own():
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config

    site, own = "model.layers.15.mlp.down_proj:input", "model.layers.3.mlp.down_proj:input"
    args = _parser().parse_args(["demo", "--preset", "smollm2", "--hook", site, "--eval-hook", own])
    cfg = run_config(args, prefixed=True)
    assert (cfg.harvest.hook, cfg.eval.hook, cfg.features.hook) == (site, own, site)
    plain = run_config(_parser().parse_args(["demo", "--preset", "smollm2"]), prefixed=True)
    assert {plain.harvest.hook, plain.eval.hook, plain.features.hook} == {"model.layers.7.mlp.down_proj:input"}
