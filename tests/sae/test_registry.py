"""The architecture registry: one table, load dispatch, shared properties, mixed architectures in one pass."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.io import read_json, write_json
from monosemantic.paths import SAE_CONFIG
from monosemantic.sae import (
    ARCHITECTURES,
    SAE_CLASSES,
    AprilSAE,
    AprilTrainConfig,
    BatchTopKSAE,
    BatchTopKTrainConfig,
    JumpReLUSAE,
    JumpReLUTrainConfig,
    SAEConfig,
    SAETrainConfig,
    SparseAutoencoder,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainConfig,
    train_sae,
)
from monosemantic.sae.model import register_sae
from monosemantic.sae.recipe import TRAIN_CONFIGS
from monosemantic.sae.registry import DEFAULT_ARCHITECTURE


def build(name: str, d_in: int = 8, n_features: int = 16) -> SparseAutoencoder:
    cls = SAE_CLASSES[name]
    cfg = TopKSAEConfig(d_in, n_features, k=3) if cls.config_class is TopKSAEConfig else SAEConfig(d_in, n_features)
    return cls(cfg)


def test_registry_keys_are_the_class_tags() -> None:
    assert list(SAE_CLASSES)[0] == DEFAULT_ARCHITECTURE == "tm2023"
    classes = {"tm2023": SparseAutoencoder, "april2024": AprilSAE, "topk": TopKSAE}
    assert {**classes, "batchtopk": BatchTopKSAE, "jumprelu": JumpReLUSAE} == SAE_CLASSES
    recipes = {"tm2023": SAETrainConfig, "april2024": AprilTrainConfig, "topk": TopKTrainConfig}
    assert {**recipes, "batchtopk": BatchTopKTrainConfig, "jumprelu": JumpReLUTrainConfig} == TRAIN_CONFIGS
    assert set(ARCHITECTURES) == set(SAE_CLASSES) and all(cls.trainable for cls in SAE_CLASSES.values())
    for name, arch in ARCHITECTURES.items():  # the pairs the CLI reads
        assert arch.sae is SAE_CLASSES[name] and arch.train_config is TRAIN_CONFIGS[name]
        assert arch.sae.architecture == name == arch.train_config.architecture


def test_a_tag_registers_once() -> None:
    class Clash(SparseAutoencoder):  # same tag as its base, as a benchmark's variant of a recipe has
        pass

    with pytest.raises(ValueError, match="'tm2023' is taken by"):
        register_sae(Clash)
    assert SAE_CLASSES["tm2023"] is SparseAutoencoder


def test_loading_imports_no_trainer(tmp_path: Path) -> None:
    """Loading a saved SAE of every architecture imports the models only, never train.py."""
    for name in SAE_CLASSES:
        build(name).save(tmp_path / name)
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from monosemantic.sae.model import SparseAutoencoder
        for name in {sorted(SAE_CLASSES)!r}:
            sae = SparseAutoencoder.load(Path({str(tmp_path)!r}) / name)
            assert sae.architecture == name, (name, type(sae))
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("monosemantic.sae"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert "monosemantic.sae.model" in loaded and "monosemantic.sae.topk" in loaded
    assert "monosemantic.sae.train" not in loaded


@pytest.mark.parametrize("name", sorted(SAE_CLASSES))
def test_forward_is_decode_of_encode_without_side_effects(name) -> None:
    sae = build(name)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    x = torch.randn(5, 8)
    x_hat, f = sae(x)
    assert torch.equal(f, sae.encode(x)) and torch.equal(x_hat, sae.decode(f))
    assert (f >= 0).all() and f.shape == (5, 16)
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())


@pytest.mark.parametrize("name", sorted(SAE_CLASSES))
def test_load_dispatches_on_the_architecture(tmp_path, name) -> None:
    sae = build(name)
    loaded = SparseAutoencoder.load(sae.save(tmp_path / name))
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    x = torch.randn(4, 8)
    assert torch.allclose(loaded(x)[0], sae(x)[0], atol=1e-6)


def test_load_errors(tmp_path) -> None:
    folder = build("april2024").save(tmp_path / "april")
    with pytest.raises(UserError, match="not a TopKSAE"):
        TopKSAE.load(folder)
    assert type(AprilSAE.load(folder)) is AprilSAE
    raw = read_json(folder / SAE_CONFIG)
    write_json(folder / SAE_CONFIG, {**raw, "architecture": "gated"})
    with pytest.raises(UserError, match="'gated' is not one of april2024, batchtopk, jumprelu, tm2023, topk"):
        SparseAutoencoder.load(folder)
    folder = build("topk").save(tmp_path / "topk")
    raw = read_json(folder / SAE_CONFIG)
    del raw["k"]
    write_json(folder / SAE_CONFIG, raw)
    with pytest.raises(UserError, match="bad SAE shape"):
        SparseAutoencoder.load(folder)


def test_config_must_match_the_architecture() -> None:
    with pytest.raises(ValueError, match="SAE 0 is 'april2024' but its config is for 'tm2023'"):
        train_sae([build("april2024")], iter([torch.randn(4, 8)]), SAETrainConfig())


def test_mixed_architectures_train_together_as_alone() -> None:
    common = {"batch_size": 32, "n_steps": 30, "log_every": 10}
    saes = [build("tm2023"), build("april2024"), build("topk"), build("tm2023", n_features=32)]
    cfgs = [
        SAETrainConfig(l1_coeff=0.01, lr=1e-3, b_dec_init_n_inputs=64, resample_n_batches=2, **common),
        AprilTrainConfig(l1_coeff=0.5, lr=1e-3, normalize_n_inputs=96, **common),
        TopKTrainConfig(lr=1e-3, b_dec_init_n_inputs=64, dead_n_inputs=160, **common),
        SAETrainConfig(l1_coeff=0.01, lr=1e-3, b_dec_init_n_inputs=32, normalize_inputs=True, **common),
    ]
    alone = [copy.deepcopy(s) for s in saes]
    x = torch.randn(40, 32, 8).abs() * 3
    together = train_sae(saes, iter(x), cfgs)
    assert together[1].input_scale != 1.0 and together[3].input_scale != 1.0 and together[0].input_scale == 1.0
    assert set(together[2].history[0]) == {"step", "sae", "loss", "mse", "auxk", "l0", "dead_fraction"}
    for sae_alone, cfg, sae_together, res_together in zip(alone, cfgs, saes, together, strict=True):
        [res_alone] = train_sae([sae_alone], iter(x), cfg)
        for name, p in sae_alone.named_parameters():
            assert torch.equal(p, getattr(sae_together, name)), (sae_alone.architecture, name)
        assert [r["loss"] for r in res_alone.history] == [r["loss"] for r in res_together.history]
