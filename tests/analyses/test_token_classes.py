"""The class pair: explanations that name classes of tokens, never a token (analyses/token_classes.py)."""

import json
import sqlite3

import numpy as np
import pytest

from monosemantic.analyses.autointerp import CLASSES_SUMMARY, AutoInterpConfig, format_interpretability, run_autointerp
from monosemantic.analyses.explain import Evidence, Example
from monosemantic.analyses.token_classes import (
    ClassExplainer,
    ClassSimulator,
    class_of_strings,
    parse_classes,
    token_classes,
)
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.paths import RunLayout

ANIMALS, VEHICLES = range(10, 20), range(20, 30)
THE, DOT, TO, IT = 0, 1, 2, 3


def _stream(reps: int = 50) -> np.ndarray:
    """Animals always between "the" and "."; vehicles always between "to" and "it"; each as often as the others."""
    out: list[int] = []
    for _ in range(reps):
        for a in ANIMALS:
            out += [THE, a, DOT]
        for v in VEHICLES:
            out += [TO, v, IT]
    return np.array(out, dtype=np.uint16)


def test_tokens_that_share_their_contexts_share_a_class_and_others_do_not():
    label = token_classes(_stream(), vocab_size=32, n_classes=6, seed=0)
    assert label.shape == (32,) and label.min() >= 0 and label.max() < 6
    assert len({label[a] for a in ANIMALS}) == 1 and len({label[v] for v in VEHICLES}) == 1
    assert label[ANIMALS[0]] != label[VEHICLES[0]]
    np.testing.assert_array_equal(label, token_classes(_stream(), 32, 6, seed=0))  # seeded: reproducible
    with pytest.raises(ValueError, match="n_classes"):
        token_classes(_stream(), 32, 33)


def _examples(words: list[str], act: float = 5.0) -> list[Example]:
    """One window per word: the word fires at `act` between two words that never fire."""
    return [Example(["on", w, "then"], [0.0, act, 0.0]) for w in words]


def test_a_class_explanation_names_no_token_and_predicts_the_class_members_it_never_saw():
    classes = {"cat": 0, "dog": 0, "cow": 0, "car": 1, "bus": 1, "on": 2, "then": 3}
    explanation = ClassExplainer(classes, max_classes=2).explain(Evidence(_examples(["cat", "dog"] * 5)))
    assert explanation == "classes 0 (9)"
    assert not any(t in explanation for t in classes)  # no token string, only class numbers
    (pred,) = ClassSimulator(classes).simulate(explanation, [["cow", "on", "car", "unknown"]])
    assert pred == [9.0, 0.0, 0.0, 0.0]  # "cow" never appeared in the examples; its class did
    assert ClassExplainer(classes).explain(Evidence([Example(["cat"], [0.0])])) == "never fires"

    # at most max_classes, the ones with the most mass first; a script holding half the mass is named too
    mixed = _examples(["cat"] * 6 + ["car"] * 3 + ["on"] * 1) + _examples(["مرحبا"] * 4, act=2.0)
    one = ClassExplainer({**classes, "مرحبا": 4}, max_classes=1).explain(Evidence(mixed))
    assert one.startswith("classes 0 (9)") and ", " not in one
    levels, scripts = parse_classes("classes 0 (9), 4 (4); arabic (4); nonsense (7)")
    assert levels == {0: 9, 4: 4} and scripts == {"arabic": 4}
    assert ClassSimulator(classes).simulate("arabic (6)", [["كتاب", "cat"]]) == [[6.0, 0.0]]


def test_class_of_strings_keeps_the_lowest_id_of_a_shared_string():
    assert class_of_strings(["a", "b", "a"], np.array([5, 6, 7])) == {"a": 5, "b": 6}


def test_the_class_pair_scores_a_run_without_touching_its_explanations(tiny_run, tiny_db, one_thread):
    conn = sqlite3.connect(tiny_db)
    layout = RunLayout(tiny_run)
    tokens = run_autointerp(
        conn, layout, AutoInterpConfig(max_features=20, pool_contexts=8, min_examples=2), progress=False
    )
    before = conn.execute("SELECT dictionary_id, feature, explanation, explainer, score FROM features").fetchall()
    cfg = AutoInterpConfig(explainer="classes", n_classes=16, max_features=20, pool_contexts=8, min_examples=2)
    summary = run_autointerp(conn, layout, cfg, progress=False)
    assert (
        conn.execute("SELECT dictionary_id, feature, explanation, explainer, score FROM features").fetchall() == before
    )
    assert db.get_summary(conn, "interpretability") == tokens  # the token pair's summary is kept
    assert db.get_summary(conn, CLASSES_SUMMARY) == summary
    assert summary["explainer"].startswith("classes/classes (16 classes of tokens, at most 4 named)")
    rows = summary["dictionaries"]
    assert rows and all(0 < r["n_explained"] == r["n_scored"] <= 20 for r in rows)  # only the scored sample
    assert all(r["median"] is not None and -1 <= r["median"] <= 1 for r in rows)
    assert "classes/classes" in format_interpretability(summary)
    assert json.dumps(summary)  # plain JSON, as the overview shows it


def test_the_class_pair_refuses_a_model_that_is_not_the_runs(tmp_path):
    conn = db.create(tmp_path / "f.sqlite")
    db.add_dictionary(conn, name="neurons", model="hf-gpt2", hook="h", kind="neurons", n_features=4, n_tokens=10)
    conn.commit()
    with pytest.raises(UserError, match="hf-gpt2 is not a model of"):
        run_autointerp(conn, RunLayout(tmp_path), AutoInterpConfig(explainer="classes"), progress=False)
