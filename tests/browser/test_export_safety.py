"""`export-html --force` replaces only an earlier export: never the run, `.`, a folder around or inside the run,
a user's folder, a file or a link; and a killed export's leftovers go at the next export."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from monosemantic.cli import main


@pytest.fixture
def run(feature_db, tmp_path) -> Path:
    """A run folder of its own (the commands below would wreck a shared one if they misbehaved)."""
    run = tmp_path / "run"
    (run / "features").mkdir(parents=True)
    shutil.copy(feature_db, run / "features" / "features.sqlite")
    return run


def refused(capsys, *args) -> str:
    assert main(["export-html", *map(str, args), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monosemantic: error:") and "\n" not in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_never_replaces_a_folder_it_did_not_write(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert "not an earlier export" in refused(capsys, run, mine, "--force")
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_force_refuses_the_run_itself_and_folders_around_or_inside_it(run, tmp_path, capsys, monkeypatch):
    before = snapshot(run)
    assert "holds" in refused(capsys, run, run, "--force")
    assert "holds" in refused(capsys, run, tmp_path, "--force")  # a folder that contains the run
    assert "inside" in refused(capsys, run, run / "features", "--force")
    assert "inside" in refused(capsys, run, run / "site")  # a new folder inside the run, too
    db = run / "features" / "features.sqlite"
    assert "is a file" in refused(capsys, db, db, "--force")
    assert "holds" in refused(capsys, db, run / "features", "--force")  # the folder of a database named alone
    assert snapshot(run) == before

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("keep")
    monkeypatch.chdir(elsewhere)
    assert "current folder" in refused(capsys, run, ".", "--force")
    assert "current folder" in refused(capsys, run, Path.cwd(), "--force")
    assert (elsewhere / "notes.txt").read_text() == "keep" and snapshot(run) == before


def test_force_onto_a_file_or_a_symlink_is_a_one_line_error(run, tmp_path, capsys):
    file = tmp_path / "site.html"
    file.write_text("mine")
    assert "is a file" in refused(capsys, run, file, "--force")
    assert file.read_text() == "mine"
    site = tmp_path / "site"
    assert main(["export-html", str(run), str(site), "--no-progress"]) == 0
    link = tmp_path / "link"
    link.symlink_to(site, target_is_directory=True)
    assert "symbolic link" in refused(capsys, run, link, "--force")
    assert link.is_symlink() and (site / "index.html").is_file()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "symbolic link" in refused(capsys, run, dangling, "--force")


def test_force_replaces_an_earlier_export_or_an_empty_folder(run, tmp_path, capsys):
    site = tmp_path / "site"
    assert main(["export-html", str(run), str(site), "--no-progress"]) == 0
    assert (site / ".monosemantic-export").is_file()
    (site / "stale.html").write_text("old page")
    assert "use --force" in refused(capsys, run, site)
    assert main(["export-html", str(run), str(site), "--no-progress", "--force"]) == 0
    assert not (site / "stale.html").exists() and (site / "index.html").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export-html", str(run), str(empty), "--no-progress", "--force"]) == 0
    assert (empty / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run", "site"]  # no temporary left beside


def test_a_killed_export_s_leftovers_go_at_the_next_export(run, tmp_path, capsys):
    stale = Path(tempfile.mkdtemp(prefix=".site.", suffix=".tmp", dir=tmp_path))  # what SIGKILL leaves
    (stale / "index.html").write_text("half")
    old = Path(tempfile.mkdtemp(prefix=".site.", suffix=".old", dir=tmp_path))
    (old / "site").mkdir()
    assert main(["export-html", str(run), str(tmp_path / "site"), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "site"]
    assert os.listdir(tmp_path / "site")


def test_every_export_and_import_force_spares_a_users_folder(tiny_run, tmp_path, capsys):
    """`sae export` (SAELens and hub), `sae import` and `features export` follow the same rule as export-html."""
    sae = tiny_run / "sae" / "A" / "blocks.0.mlp.hook_post" / "tm2023-64"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    saelens = tmp_path / "saelens"
    assert main(["sae", "export", str(sae), str(saelens)]) == 0
    for args in (
        ["sae", "export", sae, mine, "--force"],
        ["sae", "export", sae.parent, mine, "--format", "hub", "--force"],
        ["sae", "import", saelens, mine, "--force"],
        ["sae", "export", sae, sae / "inside", "--force"],
    ):
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("monosemantic: error:"), err
    assert (mine / "notes.txt").read_text() == "keep" and not (sae / "inside").exists()
    imported = tmp_path / "imported"
    assert main(["sae", "import", str(saelens), str(imported)]) == 0
    assert main(["sae", "import", str(saelens), str(imported), "--force"]) == 0  # its own earlier import
    assert main(["sae", "export", str(sae), str(saelens), "--force"]) == 0
