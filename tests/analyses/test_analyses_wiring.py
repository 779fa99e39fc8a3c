"""`features build` runs every analysis after the core records, into the one database."""

import shutil
import sqlite3

import pytest

from monosemantic.analyses.steps import NAMES, selected
from monosemantic.cli import main
from monosemantic.errors import UserError


def test_build_fills_every_analysis_table(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("features"))
    assert main(["features", "build", "--run", str(run), "--n-tokens", "2048", "--top-k", "4", "--no-progress"]) == 0
    conn = sqlite3.connect(run / "features/features.sqlite")
    count = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    n_dicts = count("SELECT count(*) FROM dictionaries")
    assert n_dicts == 3  # tm2023-64, tm2023-128, neurons
    # ablations: one row per feature that has top examples, and per-token effects on those examples
    assert count("SELECT count(DISTINCT dictionary_id) FROM ablations") == n_dicts
    assert count("SELECT count(*) FROM examples WHERE kind = 'top' AND ablation_json IS NOT NULL") > 0
    assert count("SELECT count(*) FROM pinned") > 0
    # splitting: links from the 64- to the 128-feature SAE; automata links in every dictionary
    assert count("SELECT count(*) FROM splits") > 0
    assert count("SELECT count(DISTINCT dictionary_id) FROM logit_links") == n_dicts
    # the map: every live SAE feature placed, clusters labelled
    assert count("SELECT count(*) FROM features f JOIN dictionaries d ON d.id = f.dictionary_id"
                 " WHERE d.kind = 'sae' AND f.n_active > 0 AND f.umap_x IS NULL") == 0  # fmt: skip
    assert count("SELECT count(*) FROM features WHERE umap_x IS NOT NULL") > 0
    # explanations with scores, searchable; the case-study table; no model B here, so no universality
    assert count("SELECT count(*) FROM features WHERE explanation IS NOT NULL AND score IS NOT NULL") > 0
    assert count("SELECT count(*) FROM feature_search WHERE feature_search MATCH 'neurons OR the OR a'") >= 0
    assert count("SELECT count(DISTINCT name) FROM proxies") >= 4
    assert count("SELECT count(*) FROM summary WHERE key = 'case_study'") == 1
    assert count("SELECT count(*) FROM matches") == 0


def test_analyses_are_chosen_by_name():
    assert [s.name for s in selected(("all",))] == NAMES
    assert selected(("none",)) == [] and selected(()) == []
    assert [s.name for s in selected(("map", "ablations"))] == ["ablations", "map"]  # pipeline order, not the spec's
    assert NAMES == ["explain", "ablations", "split", "map", "proxies", "universality"]
    assert [s.name for s in selected(("all",)) if s.any_subject] == ["explain", "ablations", "split", "map", "proxies"]
    with pytest.raises(UserError, match="--analyses: unknown nope"):
        selected(("nope",))
