import pytest

from monosemantic.errors import UserError
from monosemantic.io import atomic_path, is_complete, read_config, stage_dir, write_config, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_stage_dir_appears_only_when_complete(tmp_path):
    final = tmp_path / "stage"
    with pytest.raises(RuntimeError), stage_dir(final) as tmp:
        write_config(tmp / "config.json", "k", {})
        raise RuntimeError("interrupted")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with stage_dir(final) as tmp:
        write_config(tmp / "config.json", "k", {"a": 1})
    assert is_complete(final) and read_config(final / "config.json", "k")["a"] == 1
    with pytest.raises(UserError, match="--force"), stage_dir(final):
        pass


def test_stage_dir_force_replaces_only_after_success(tmp_path):
    final = tmp_path / "stage"
    with stage_dir(final) as tmp:
        write_config(tmp / "config.json", "k", {"v": 1})
    with pytest.raises(RuntimeError), stage_dir(final, force=True) as tmp:
        raise RuntimeError("interrupted")
    assert read_config(final / "config.json", "k")["v"] == 1  # the old folder survives a failed redo
    with stage_dir(final, force=True) as tmp:
        write_config(tmp / "config.json", "k", {"v": 2})
    assert read_config(final / "config.json", "k")["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_config_kind_and_version_are_checked(tmp_path):
    write_config(tmp_path / "c.json", "monosemantic.x", {})
    with pytest.raises(UserError, match="not a monosemantic.y config"):
        read_config(tmp_path / "c.json", "monosemantic.y")
    write_json(tmp_path / "v.json", {"kind": "k", "schema_version": 99})
    with pytest.raises(UserError, match="schema_version 99"):
        read_config(tmp_path / "v.json", "k")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        read_config(tmp_path / "bad.json", "k")
