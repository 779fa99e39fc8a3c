"""Every recipe's defaults on one short pass: the schedule fitted to the run (`TrainConfig.for_run`),
the refusal of runs too short to fit, the CLI's defaults per architecture, and `--auto-l1`.

The planted data here (32-d, 64 directions, ~3 active per input, 128 features) trains in seconds;
docs/benchmarks.md has the same measurement at 256-d, 2,048 directions, 4,096 features.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.sae import sweep
from monosemantic.sae.ladder import LadderConfig, train_ladder
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.recipe import FIT_LR_MAX, MIN_FIT_STEPS, TRAIN_CONFIGS
from monosemantic.sae.synthetic import mean_max_cosine, planted_features

ARCHS = ["tm2023", "april2024", "topk", "batchtopk", "jumprelu"]


@pytest.mark.parametrize("arch", ARCHS)
def test_for_run_scales_the_published_schedule(arch: str) -> None:
    cls = TRAIN_CONFIGS[arch]
    published = cls()
    n = published.reference_steps // 100
    ratio = published.reference_steps / n
    fitted, changes = published.for_run(n)
    assert fitted.n_steps == n and not fitted.fit_to_run
    assert fitted.lr == pytest.approx(min(published.lr * ratio, FIT_LR_MAX)) and changes["lr"][0] == published.lr
    for name in cls.step_windows:  # warm-ups and dead windows shrink with the run
        assert getattr(fitted, name) == max(1, round(getattr(published, name) / ratio))
    again, more = fitted.for_run(n)
    assert again == fitted and more == {}  # never fitted twice
    long, none = published.for_run(published.reference_steps)
    assert long.lr == published.lr and none == {}
    as_given, _ = cls(fit_to_run=False).for_run(n)
    assert as_given.lr == published.lr


def test_a_run_too_short_to_fit_is_refused_with_the_flags_that_fix_it() -> None:
    cfg = TRAIN_CONFIGS["april2024"]()
    with pytest.raises(UserError, match="--batch-size.*--no-fit-to-run"):
        cfg.for_run(MIN_FIT_STEPS - 1)
    assert TRAIN_CONFIGS["april2024"](fit_to_run=False).for_run(3)[0].n_steps == 3


def _cli_configs(arch: str, *flags: str) -> tuple[object, object]:
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config

    argv = ["sae", "train", "--activations", "x.npy", "--out", "o", "--arch", arch, *flags]
    cfg = run_config(_parser().parse_args(argv), ("sae",))
    return cfg.ladder, cfg.sae


def test_the_presets_recipe_settings_stay_with_its_own_architecture() -> None:
    """The default preset's λ 0.0085, lr 1e-3 and clip 1/512 are tm2023's; another --arch gets its own recipe."""
    _, tm = _cli_configs("tm2023")
    assert (tm.l1_coeff, tm.lr, tm.max_grad_norm, tm.fit_to_run) == (0.0085, 1e-3, 1 / 512, False)
    _, april = _cli_configs("april2024")
    assert (april.l1_coeff, april.lr, april.max_grad_norm, april.fit_to_run) == (5.0, 5e-5, 1.0, True)
    assert april.batch_size == 4096  # run settings still apply
    _, jump = _cli_configs("jumprelu", "--l0-coeff", "0.1")
    assert jump.l0_coeff == 0.1 and jump.lr == 7e-5


@pytest.mark.parametrize("name", ["default", "full", "smollm2", "tiny"])
def test_each_preset_trains_its_saes_as_it_states_at_its_own_run_length(name: str) -> None:
    """A preset's SAE settings were chosen for its run: fitting them again would change them silently
    (the smollm2 preset's lr 1e-3 and 200,000-input dead window became 5e-3 and 781 inputs)."""
    from monosemantic.config import load_preset
    from monosemantic.sae.ladder import steps_for

    preset = load_preset(name)
    _, train = _cli_configs(preset["sae"].get("arch", "tm2023"), "--preset", name)
    n_rows = preset["harvest"].get("n_tokens", 1_000_000)
    fitted = steps_for(train, n_rows)
    stated = {k: v for k, v in preset["sae"].items() if k in ("lr", "dead_n_inputs", "l1_coeff")}
    assert {k: getattr(fitted, k) for k in stated} == stated


@pytest.mark.parametrize("arch", ARCHS)
def test_each_recipes_cli_defaults_recover_planted_features_in_one_short_pass(arch: str, tmp_path: Path) -> None:
    """As a new user: `sae train --arch ARCH` with a size (and --k), 400 steps of 1,024 (the run fits in seconds)."""
    directions, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    flags = ("--n-features", "128", "--batch-size", "1024", *(["--k", "4"] if "topk" in arch else []))
    flags += ("--allow-short-run",) if arch == "jumprelu" else ()  # refused otherwise (the next test); fine at 32-d
    ladder, train = _cli_configs(arch, *flags)
    n_rows = 400 * train.batch_size
    stream = sampler.batches(train.batch_size, 400)
    folders = train_ladder(stream, 32, n_rows, ladder, train, tmp_path, {})
    sae = SparseAutoencoder.load(folders[f"{arch}-128"])
    cos = mean_max_cosine(sae.W_dec.detach(), directions)
    held_out = sampler(8192)
    with torch.no_grad():
        x_hat, f = sae(held_out)
    l0 = float((f > 0).sum(-1).float().mean())
    fvu = float((held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
    assert cos > 0.9, (arch, cos, l0, fvu)  # ~3.2 of the 64 directions are active per input
    assert 2 < l0 < 8 and fvu < 0.6, (arch, cos, l0, fvu)


def test_jumprelu_refuses_a_short_run_with_the_flags_that_fix_it(tmp_path: Path) -> None:
    """One pass of 400 steps: the CLI's jumprelu refuses before training and names the alternatives; no SAE saved."""
    _, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    ladder, train = _cli_configs("jumprelu", "--n-features", "128", "--batch-size", "1024")
    with pytest.raises(UserError, match="400 steps is too short.*--arch batchtopk --k K"):
        train_ladder(sampler.batches(1024, 400), 32, 400 * 1024, ladder, train, tmp_path / "out", {})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_auto_l1_picks_by_the_stated_rule_and_saves_only_the_choice(tmp_path: Path) -> None:
    _, sampler = planted_features(n_dirs=64, d=32, density=0.05, seed=0)
    ladder, train = _cli_configs("tm2023", "--n-features", "128", "--auto-l1", "--batch-size", "512")
    folders = train_ladder(sampler.batches(512, 120), 32, 120 * 512, ladder, train, tmp_path, {})
    assert list(folders) == ["tm2023-128"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tm2023-128"]
    auto = json.loads((folders["tm2023-128"] / "training.json").read_text())["auto_l1"]
    l1s = [c["l1"] for c in auto["candidates"]]
    assert l1s == list(sweep.candidates(train.l1_coeff))
    assert auto["held_out_rows"] == 6 * 512  # 5 % of the rows, whole batches
    fvus = [c["fvu"] for c in auto["candidates"]]
    ok = [l1 for l1, f in zip(l1s, fvus, strict=True) if f <= fvus[0] + 0.05]
    assert auto["chosen"] == max(ok)
    trained = json.loads((folders["tm2023-128"] / "training.json").read_text())["train"]["l1_coeff"]
    assert trained == auto["chosen"]


def test_auto_l1_needs_a_lambda() -> None:
    with pytest.raises(UserError, match="--auto-l1: --arch topk has no sparsity coefficient"):
        train_ladder(
            iter([]), 8, 10_000, LadderConfig(arch="topk", auto_l1=True), TRAIN_CONFIGS["topk"](), Path("x"), {}
        )


def test_pick_rule() -> None:
    assert sweep.pick([0.1, 0.2, 0.4], [0.10, 0.14, 0.30], margin=0.05) == 0.2
    assert sweep.pick([0.4, 0.1, 0.2], [0.30, 0.10, 0.16], margin=0.05) == 0.1  # order-free; none within: smallest
    assert math.isclose(sweep.candidates(0.008)[0], 0.002)
