"""Automated interpretability (TM §4): the offline explainer/simulator and the scoring pass."""

import json
import random

import numpy as np
import pytest

from monosemantic import paths
from monosemantic.analyses.autointerp import AutoInterpConfig, format_interpretability, run_autointerp, split_examples
from monosemantic.analyses.explain import (
    Evidence,
    Example,
    OfflineExplainer,
    OfflineSimulator,
    parse_offline,
    simulation_score,
)
from monosemantic.features import db
from monosemantic.paths import RunLayout

WORDS = [" whale", " sea", " ship", " captain", " rope", " harpoon"]
FILLER = ["the", ",", " and", " of", " a", " to"]


def _window(rng: random.Random, planted: str, n: int = 9, act: float = 5.0) -> Example:
    """A window of random words; `planted` fires with `act` wherever it occurs, nothing else does."""
    tokens = [rng.choice(FILLER) for _ in range(n)]
    tokens[n // 2] = planted
    return Example(tokens, [act if t == planted else 0.0 for t in tokens])


def test_offline_explainer_names_the_planted_token():
    rng = random.Random(0)
    ev = Evidence([_window(rng, " whale") for _ in range(10)], sources={"prose/moby-dick": 0.9})
    text = OfflineExplainer().explain(ev)
    assert text.startswith('tokens " whale" (9)')
    assert "mostly prose/moby-dick" in text
    assert parse_offline(text).tokens == {" whale": 9}


def test_offline_explainer_names_a_bigram_and_a_script():
    # "GT" fires only after "AC": the bigram clause carries it.
    ex = [Example(["AC", "GT", "TT", "GT"], [0.0, 4.0, 0.0, 0.0]) for _ in range(5)]
    parsed = parse_offline(OfflineExplainer().explain(Evidence(ex)))
    assert parsed.bigrams == {("AC", "GT"): 9}
    arabic = [Example([" من", " في", " the"], [3.0, 3.0, 0.0]) for _ in range(5)]
    text = OfflineExplainer().explain(Evidence(arabic))
    assert "Arabic script (9)" in text
    pred = OfflineSimulator().simulate(text, [[" على", " dog"]])
    assert pred == [[9.0, 0.0]]  # an Arabic word the explainer never saw


def test_simulation_score_prefers_the_right_explanation():
    rng = random.Random(1)
    test = [_window(rng, " whale") for _ in range(8)] + [_window(rng, " sea", act=0.0) for _ in range(8)]
    sim = OfflineSimulator()
    windows, true = [e.tokens for e in test], [e.acts for e in test]
    right = simulation_score(sim.simulate('tokens " whale" (9)', windows), true)
    wrong = simulation_score(sim.simulate('tokens " sea" (9)', windows), true)
    assert right == pytest.approx(1.0)
    assert wrong < 0.5
    assert simulation_score(sim.simulate("no consistent pattern", windows), true) == 0.0  # constant: 0


def test_split_is_disjoint_and_cuts_test_windows():
    rows = [{"kind": "top", "interval": None, "rank": r, "max_index": 10, "tokens": list("abcdefghijklmnopqrst"),
             "acts": [0.0] * 20} for r in range(4)]  # fmt: skip
    explain, test = split_examples(rows, window=4)
    assert len(explain) == 2 and len(test) == 2
    assert test[0].tokens == list("ghijklmno")  # ±4 around index 10


def _planted_db(path, n_features=6):
    """Features of 'sae' each fire on one planted word; 'neurons' fire on random tokens."""
    conn = db.create(path)
    rng = random.Random(0)
    for name, kind in (("tm2023-6", "sae"), ("neurons", "neurons")):
        did = db.add_dictionary(conn, name=name, model="A", hook="h", kind=kind, n_features=n_features, n_tokens=1)
        feats, exs = [], []
        for f in range(n_features):
            feats.append({"dictionary_id": did, "feature": f, "density": 0.01, "n_active": 5, "max_act": 5.0,
                          "source_json": {"prose/x": 1.0}})  # fmt: skip
            for rank in range(20):
                if kind == "sae":
                    e = _window(rng, WORDS[f % len(WORDS)], n=15)
                else:
                    toks = [rng.choice(WORDS + FILLER) for _ in range(15)]
                    e = Example(toks, [rng.random() * 5 for _ in toks])
                exs.append({"dictionary_id": did, "feature": f, "kind": "top", "interval": None, "rank": rank,
                            "ctx_offset": 0, "ctx_pos": 7, "src": "prose/x", "max_act": max(e.acts), "max_index": 7,
                            "tokens_json": e.tokens, "acts_json": e.acts})  # fmt: skip
        db.insert_rows(conn, "features", feats)
        db.insert_rows(conn, "examples", exs)
    conn.commit()
    return conn


def test_run_autointerp_scores_planted_features_above_random_neurons(tmp_path):
    conn = _planted_db(tmp_path / "f.sqlite")
    summary = run_autointerp(conn, RunLayout(tmp_path), AutoInterpConfig(), progress=False)
    by = {d["dictionary"]: d for d in summary["dictionaries"]}
    assert by["tm2023-6"]["n_scored"] == 6 and by["tm2023-6"]["median"] == pytest.approx(1.0)
    assert by["neurons"]["median"] < 0.5
    assert by["tm2023-6"]["single_token_share"] == 1.0 and by["tm2023-6"]["median_multi_token"] is None
    assert by["neurons"]["single_token_share"] == 0.0 and by["neurons"]["median_multi_token"] == by["neurons"]["median"]
    row = conn.execute("SELECT explanation, explainer, score FROM features WHERE feature = 1 AND dictionary_id = 1")
    explanation, explainer, score = row.fetchone()
    assert json.dumps(WORDS[1]) in explanation and explainer == "offline/offline" and score == pytest.approx(1.0)
    assert db.get_summary(conn, "interpretability") == summary
    assert "tm2023-6" in format_interpretability(summary)
    _ = np


def test_features_explain_cli(tmp_path, capsys):
    from monosemantic.cli import main

    (tmp_path / "features").mkdir()
    _planted_db(tmp_path / "features" / paths.FEATURES_DB).close()
    assert main(["features", "explain", "--run", str(tmp_path), "--no-progress", "--max-features", "3"]) == 0
    out = capsys.readouterr().out
    assert "tm2023-6" in out and "1.00" in out
    conn = db.open_readonly(tmp_path / "features" / paths.FEATURES_DB)
    hits = conn.execute("SELECT count(*) FROM feature_search WHERE feature_search MATCH 'whale'").fetchone()[0]
    assert hits >= 1  # explanations are in the full-text index
    assert main(["features", "explain", "--run", str(tmp_path / "nowhere")]) == 2
