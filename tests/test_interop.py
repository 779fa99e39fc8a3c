"""SAELens exports of a run's SAEs with their metadata, density and model card, and the Hugging Face layout,
checked with the real `sae_lens` (loading, encode / decode, metadata, sparsity through its hub loader)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from monosemantic.activations.store import open_activations
from monosemantic.cli import main
from monosemantic.features import db
from monosemantic.io import load_tensors
from monosemantic.sae import SparseAutoencoder
from monosemantic.transformer import hooks

NAME = "tm2023-64"


def cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run (its SAEs, activations and eval; no feature database yet)."""
    run = tmp_path_factory.mktemp("interop") / "run"
    shutil.copytree(tiny_run, run)
    return run


def sae_dir(run: Path, name: str = NAME) -> Path:
    return run / "sae" / "A" / hooks.MLP_POST / name


def store_density(run: Path, sae: SparseAutoencoder) -> torch.Tensor:
    """Every row of the SAE's training activations, in file order: the firing fraction of each feature."""
    acts = open_activations(run / "activations" / "A" / hooks.MLP_POST)
    with torch.no_grad():
        fired = sum((sae.encode(x) > 0).sum(0).double() for x in acts.batches(1000, shuffle=False))
    return fired / acts.n_rows


def test_saelens_export_carries_the_runs_metadata_density_and_card(run, tmp_path) -> None:
    out = tmp_path / "export"
    assert cli("sae", "export", sae_dir(run), out, "--density-rows", 10**9) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".monosemantic-export", "README.md", "cfg.json", "sae_weights.safetensors", "sparsity.safetensors",
    ]  # fmt: skip
    cfg = json.loads((out / "cfg.json").read_text())
    meta = cfg["metadata"]
    store_cfg = json.loads((run / "activations" / "A" / hooks.MLP_POST / "config.json").read_text())
    training = json.loads((sae_dir(run) / "training.json").read_text())
    metrics = json.loads((run / "eval" / "A" / hooks.MLP_POST / NAME / "metrics.json").read_text())
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    assert (meta["model_name"], meta["hook_name"], meta["context_size"]) == ("A", hooks.MLP_POST, store_cfg["ctx_len"])
    assert meta["prepend_bos"] is False and meta["dataset_path"] == "corpus.jsonl"  # the tiny run's input file
    assert "hf_hook_name" not in meta  # the run's own model has TransformerLens names already
    assert meta["monosemantic_input_scale"] == training["input_scale"] != 1.0  # trained normalised, folded
    assert meta["monosemantic_train"] == training["train"]
    assert meta["monosemantic_metrics"]["l0"] == metrics["l0"]
    sae = SparseAutoencoder.load(sae_dir(run))
    want = torch.log10(store_density(run, sae) + 1e-10).float()
    sparsity = load_tensors(out / "sparsity.safetensors")
    assert list(sparsity) == ["sparsity"] and torch.allclose(sparsity["sparsity"], want, atol=1e-6)
    card = (out / "README.md").read_text()
    for part in ("library_name: saelens", "## Metrics", "## Recipe", "## Data", f"{metrics['l0']:.4g}", "16,384 rows"):
        assert part in card, part


def test_density_comes_from_the_feature_database_when_it_has_the_sae(run, tmp_path) -> None:
    fb = ["features", "build", "--run", run, "--n-tokens", 4096, "--analyses", "none", "--no-progress"]
    assert cli(*fb) == 0
    conn = db.open_readonly(run / "features" / "features.sqlite")
    did = db.dictionary_id(conn, NAME)
    dens = [r[0] for r in conn.execute("SELECT density FROM features WHERE dictionary_id=? ORDER BY feature", (did,))]
    conn.close()
    assert cli("sae", "export", sae_dir(run), tmp_path / "export") == 0
    got = load_tensors(tmp_path / "export" / "sparsity.safetensors")["sparsity"]
    assert torch.allclose(got, torch.log10(torch.tensor(dens, dtype=torch.float64) + 1e-10).float())
    assert "feature database, 4,096 held-out tokens" in (tmp_path / "export" / "README.md").read_text()


def test_export_refuses_to_replace_without_force(run, tmp_path, capsys) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "mine.txt").write_text("keep")
    assert cli("sae", "export", sae_dir(run), tmp_path / "export") == 2
    assert "exists; use --force" in capsys.readouterr().err and (tmp_path / "export" / "mine.txt").is_file()
    assert cli("sae", "export", sae_dir(run), tmp_path / "export", "--force") == 2  # not ours: never deleted
    assert "not an earlier export" in capsys.readouterr().err and (tmp_path / "export" / "mine.txt").is_file()
    assert cli("sae", "export", sae_dir(run), tmp_path / "new") == 0
    (tmp_path / "new" / "stale.txt").write_text("old")
    assert cli("sae", "export", sae_dir(run), tmp_path / "new", "--force") == 0  # an earlier export: replaced
    assert (tmp_path / "new" / "cfg.json").is_file() and not (tmp_path / "new" / "stale.txt").exists()
    assert cli("sae", "export", run / "sae", tmp_path / "other") == 2  # not an SAE folder
    assert "no SAE here" in capsys.readouterr().err


# -- the real sae_lens -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae_lens():
    os.environ.setdefault("WANDB_MODE", "disabled")
    return pytest.importorskip("sae_lens")


def test_saelens_loads_the_export_with_its_metadata(sae_lens, run, tmp_path) -> None:
    assert cli("sae", "export", sae_dir(run), tmp_path / "export") == 0
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "export"), device="cpu")
    ours = SparseAutoencoder.load(sae_dir(run))
    x = next(open_activations(run / "activations" / "A" / hooks.MLP_POST).batches(512))
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), ours.encode(x), atol=1e-5)
        assert torch.allclose(theirs.decode(ours.encode(x)), ours(x)[0], atol=1e-5)
    m = theirs.cfg.metadata
    assert (m.model_name, m.hook_name, m.context_size, m.dataset_path) == ("A", hooks.MLP_POST, 64, "corpus.jsonl")
    assert m.prepend_bos is False and m.monosemantic_architecture == "tm2023"


def test_the_hub_folder_loads_through_saelens_pretrained_loader(sae_lens, run, tmp_path, monkeypatch) -> None:
    """`SAE.from_pretrained(release=REPO, sae_id=NAME)` with the Hub download pointed at the exported folder."""
    import sae_lens.loading.pretrained_sae_loaders as loaders
    from huggingface_hub.errors import EntryNotFoundError

    hub = tmp_path / "hub"
    assert cli("sae", "export", run / "sae" / "A" / hooks.MLP_POST, hub, "--format", "hub", "--repo-id", "me/tiny") == 0
    assert sorted(p.name for p in hub.iterdir()) == [".monosemantic-export", "README.md", "tm2023-128", "tm2023-64"]

    def download(repo_id, filename=None, subfolder=None, force_download=False, **_):
        assert repo_id == "me/tiny"
        path = hub / (f"{subfolder}/{filename}" if subfolder else filename)
        if not path.is_file():
            raise EntryNotFoundError(str(path))
        return str(path)

    monkeypatch.setattr(loaders, "hf_hub_download", download)
    for name in ("tm2023-64", "tm2023-128"):
        theirs, cfg, log_sparsity = sae_lens.SAE.from_pretrained_with_cfg_and_sparsity("me/tiny", name)
        ours = SparseAutoencoder.load(sae_dir(run, name))
        assert type(theirs).__name__ == "StandardSAE" and theirs.cfg.d_sae == ours.cfg.n_features
        assert torch.equal(theirs.W_dec.detach(), ours.W_dec.detach())
        assert cfg["metadata"]["hook_name"] == hooks.MLP_POST
        assert torch.equal(log_sparsity, load_tensors(hub / name / "sparsity.safetensors")["sparsity"])
        assert log_sparsity.max() <= 0 and log_sparsity.min() >= -10  # log10 of a fraction, dead at −10
    readme = (hub / "README.md").read_text()
    assert "[tm2023-64](tm2023-64/)" in readme and 'sae_id="tm2023-64"' in readme and 'release="me/tiny"' in readme
