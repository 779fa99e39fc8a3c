"""Automated interpretability (paper §8.8): the offline pair, the split, the scores, the whole pass."""

import json
import random
from collections import defaultdict

import numpy as np
import pytest
from scipy.stats import spearmanr

from monosemantic import paths
from monosemantic.analyses.autointerp import AutoInterpConfig, format_interpretability, make_pair, run_autointerp
from monosemantic.analyses.explain import (
    SCRIPTS,
    Evidence,
    Example,
    OfflineExplainer,
    OfflineSimulator,
    parse_offline,
    quantize,
)
from monosemantic.analyses.llm import LLMConfig
from monosemantic.analyses.proxy_defs import in_script
from monosemantic.analyses.sampling import StoredExample, is_single_token, split_by_context, stored_test_windows
from monosemantic.analyses.scoring import importance_weights, midranks, pearson, spearman, stratum, window_scores
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


def test_a_smaller_token_budget_names_fewer_tokens_and_predicts_less_of_a_lookup_feature():
    # A feature that fires on four unrelated words: an explanation may list all four only if its
    # budget allows, and a shorter one predicts the words it leaves out as 0.
    rng = random.Random(1)
    ex = [_window(rng, WORDS[i % 4], act=5.0 - 0.5 * (i % 4)) for i in range(12)]
    full = OfflineExplainer().explain(Evidence(ex))
    short = OfflineExplainer(max_tokens=2, max_bigrams=1).explain(Evidence(ex))
    assert set(parse_offline(full).tokens) == set(WORDS[:4])
    assert set(parse_offline(short).tokens) == set(WORDS[:2])
    windows = [[w, "the"] for w in WORDS[:4]]
    assert [p[0] > 0 for p in OfflineSimulator().simulate(short, windows)] == [True, True, False, False]
    cfg = AutoInterpConfig(offline_max_tokens=2)
    explainer, _ = make_pair(cfg, LLMConfig(), RunLayout("unused"))
    assert explainer.explain(Evidence(ex)) == short
    with pytest.raises(ValueError, match="offline_max_tokens"):
        AutoInterpConfig(offline_max_tokens=0)


def _plain_explain(evidence: Evidence, max_tokens: int = 8, max_bigrams: int = 4) -> str:
    """The explainer as first written, with numpy per token: the reference for the faster one."""
    top = max((max(e.acts) for e in evidence.examples if e.acts), default=0.0)
    if top <= 0:
        return "never fires"
    one, two = defaultdict(list), defaultdict(list)
    for e in evidence.examples:
        for i, (t, a) in enumerate(zip(e.tokens, e.acts, strict=True)):
            one[t].append(a)
            if i:
                two[e.tokens[i - 1], t].append(a)
    level = {t: int(quantize(np.array([np.mean(a)]), top)[0]) for t, a in one.items()}
    mass = {t: float(np.sum(a)) for t, a in one.items()}
    tokens = [t for t in sorted(mass, key=lambda t: -mass[t]) if level[t] >= 1][:max_tokens]
    bigrams = []
    for (p, t), a in sorted(two.items(), key=lambda kv: -float(np.sum(kv[1]))):
        lv = int(quantize(np.array([np.mean(a)]), top)[0])
        if lv >= level[t] + 2 and len(bigrams) < max_bigrams:
            bigrams.append((p, t, lv))
    q = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731
    parts = []
    if tokens:
        parts.append("tokens " + ", ".join(f"{q(t)} ({level[t]})" for t in tokens))
    if bigrams:
        parts.append("; ".join(f"after {q(p)}: {q(t)} ({lv})" for p, t, lv in bigrams))
    total = sum(mass.values())
    for name, proxy in SCRIPTS.items():
        members = [t for t in one if in_script(t, proxy.ranges)]
        if sum(mass[t] for t in members) / total >= 0.5:
            acts = np.concatenate([one[t] for t in members])
            parts.append(f"{name.capitalize()} script ({int(quantize(np.array([acts.mean()]), top)[0])})")
    if evidence.sources:
        src, share = max(evidence.sources.items(), key=lambda kv: kv[1])
        if share >= 0.5:
            parts.append(f"mostly {src}")
    return "; ".join(parts) if parts else "no consistent pattern"


def test_offline_explainer_matches_the_plain_numpy_version():
    rng = random.Random(3)
    vocab = [*WORDS, *FILLER, " من", " في", "שלום", "AC", "GT"]
    for trial in range(200):
        examples = []
        for _ in range(rng.randint(1, 12)):
            toks = [rng.choice(vocab) for _ in range(rng.randint(1, 15))]
            acts = [round(rng.random() * 4, 3) if rng.random() < 0.4 else 0.0 for _ in toks]
            examples.append(Example(toks, acts))
        ev = Evidence(examples, {"a": rng.random(), "b": rng.random()})
        assert OfflineExplainer().explain(ev) == _plain_explain(ev), trial


def test_pearson_spearman_and_their_weights_by_hand():
    # Spearman with ties: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; of [1, 3, 2, 4] themselves.
    # Pearson of the ranks: cov 4.5 / sqrt(4.5 * 5) = 0.9487
    x, y = [1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]
    assert spearman(x, y) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert list(midranks(x)) == [0.5, 2.0, 2.0, 3.5]  # average rank - 1/2
    # Weights act as repeated rows: w = [2, 1, 1] on (0,0), (1,1), (1,0) is the rows (0,0),(0,0),(1,1),(1,0):
    # means 1/2 and 1/4, cov 1/8, variances 1/4 and 3/16, r = 1/sqrt(3).
    assert pearson([0, 1, 1], [0, 1, 0], np.array([2.0, 1, 1])) == pytest.approx(1 / np.sqrt(3))
    assert pearson([0, 0, 1, 1], [0, 0, 1, 0]) == pytest.approx(1 / np.sqrt(3))
    rows_x, rows_y, w = [0, 1, 1, 2, 2], [1, 0, 3, 3, 2], np.array([3.0, 1, 2, 1, 1])
    rep = np.repeat(np.arange(5), w.astype(int))
    assert spearman(rows_x, rows_y, w) == pytest.approx(spearmanr(np.take(rows_x, rep), np.take(rows_y, rep)).statistic)
    assert spearman(x, y, np.full(4, 7.0)) == pytest.approx(spearman(x, y))  # equal weights change nothing
    assert pearson([1, 1, 1], [0, 1, 2]) == 0.0 and spearman([0, 1], [3, 3]) == 0.0  # a constant side: 0


def test_importance_weights_and_strata_by_hand():
    # 100 held-out tokens: 90 zero, 6 in interval 0, 4 in interval 1. Test windows: two centred on
    # zeros, three in interval 0, one in interval 1: weights N_s / n_s = 45, 2, 4.
    assert list(importance_weights([0, 0, 1, 1, 1, 2], {0: 90, 1: 6, 2: 4})) == [45, 45, 2, 2, 2, 4]
    assert list(importance_weights([0, 3], {0: 10})) == [10, 0]  # no population: no weight
    assert [stratum(a, 4.0, 2) for a in (0.0, 0.5, 2.0, 2.01, 4.0, 9.0)] == [0, 1, 1, 2, 2, 2]
    assert stratum(3.0, 4.0, 0) == 1  # no intervals: one non-zero stratum
    # The weighted score reads only the windows with a weight; the unweighted one reads all.
    pred, true = [[0, 9], [0, 0], [9, 9]], [[0, 5], [0, 1], [0, 0]]
    s = window_scores(pred, true, [1.0, 1.0, None])
    assert s["spearman_weighted"] == pytest.approx(spearman([0, 9, 0, 0], [0, 5, 0, 1]))
    assert s["spearman"] == pytest.approx(spearman([0, 9, 0, 0, 9, 9], [0, 5, 0, 1, 0, 0]))
    assert s["pearson"] == pytest.approx(pearson([0, 9, 0, 0, 9, 9], [0, 5, 0, 1, 0, 0]))
    assert window_scores(pred, true, [None] * 3)["spearman_weighted"] is None


def _ex(kind, ctx, rank=0, interval=None, act=1.0, tokens=None):
    tokens = tokens or [f"t{i}" for i in range(15)]
    acts = [0.0] * 15
    acts[10] = act
    return StoredExample(kind, interval, rank, ctx, act, 10, json.dumps(tokens), json.dumps(acts))


def test_split_is_disjoint_by_context_and_balanced():
    rows = [_ex("top", c, r) for r, c in enumerate([100, 100, 200, 300, 300, 400])]
    rows += [_ex("interval", c, r, interval=i) for i, c, r in [(0, 500, 0), (0, 200, 1), (1, 600, 0), (1, 700, 1)]]
    rows += [_ex("random", c, r) for r, c in enumerate([100, 800, 900])]
    explain, test = split_by_context(rows)
    assert {e.ctx_offset for e in explain}.isdisjoint({e.ctx_offset for e in test})
    assert len(explain) + len(test) == len(rows)
    # a new context goes to the side with fewer examples of its kind (ties: the explainer): top 100 (two
    # examples) -> explainer, 200 -> test, 300 (two) -> test (2 > 1), 400 -> explainer (2 <= 3)
    assert sorted(e.ctx_offset for e in explain if e.kind == "top") == [100, 100, 400]
    assert sorted(e.ctx_offset for e in test if e.kind == "top") == [200, 300, 300]
    # intervals from the top one down: 600 -> explainer, 700 -> test, 500 -> explainer, 200 was the test's
    assert {e.ctx_offset for e in explain if e.kind == "interval"} == {600, 500}
    assert {e.ctx_offset for e in test if e.kind == "interval"} == {700, 200}
    assert {e.kind for e in explain if e.ctx_offset == 100} == {"top", "random"}  # a seen context keeps its side
    assert {e.ctx_offset for e in test if e.kind == "random"} == {800, 900}  # new contexts of random go to test
    windows = stored_test_windows(test, 4, max_act=1.0, n_intervals=2)
    assert all(len(w.tokens) == 9 and w.tokens[4] == "t10" for w in windows)  # ±4 around the example's token
    assert {w.stratum for w in windows if w.kind == "interval"} <= {1, 2}


def test_single_token_needs_two_top_examples_with_one_max_token():
    same = [_ex("top", c, tokens=["x"] * 10 + [" the"] + ["y"] * 4) for c in (1, 2, 3)]
    assert is_single_token(same)
    assert not is_single_token(same[:1])  # one example says nothing
    assert not is_single_token([*same, _ex("top", 9)])  # another max token
    assert is_single_token([*same, _ex("interval", 9, interval=0)])  # only top examples count


def _synthetic_db(path, n_features=8, n_top=12, n_random=6):
    """Two dictionaries over the same kind of text, each example from its own context: 'planted' feature f
    fires (5.0) on word f wherever it occurs; 'shuffled' has the same activations permuted inside each
    window, so they follow no token (the paper's control, §8.9, without its single-token features)."""
    conn = db.create(path)
    rng = random.Random(0)
    for name in ("planted", "shuffled"):
        did = db.add_dictionary(conn, name=name, model=name, hook="h", kind="sae", n_features=n_features,
                                n_tokens=10_000)  # fmt: skip
        feats, exs = [], []
        for f in range(n_features):
            word = WORDS[f % len(WORDS)] + ("" if f < len(WORDS) else str(f))
            feats.append({"dictionary_id": did, "feature": f, "density": 0.01, "n_active": 100, "max_act": 5.0,
                          "source_json": {"prose/x": 1.0}})  # fmt: skip
            for kind, n in (("top", n_top), ("random", n_random)):
                for rank in range(n):
                    e = _window(rng, word, n=15)
                    acts = list(e.acts)
                    if name == "shuffled":
                        rng.shuffle(acts)
                    i = acts.index(max(acts))
                    exs.append({"dictionary_id": did, "feature": f, "kind": kind, "interval": None, "rank": rank,
                                "ctx_offset": 1000 * f + 100 * (kind == "random") + rank, "ctx_pos": i,
                                "src": "prose/x", "max_act": 5.0, "max_index": i,
                                "tokens_json": e.tokens, "acts_json": acts})  # fmt: skip
        db.insert_rows(conn, "features", feats)
        db.insert_rows(conn, "examples", exs)
    conn.commit()
    return conn


def test_offline_scores_a_planted_dictionary_above_a_shuffled_one(tmp_path):
    conn = _synthetic_db(tmp_path / "f.sqlite")
    cfg = AutoInterpConfig(max_features=5, pool_contexts=0)  # no run model here: stored examples only
    summary = run_autointerp(conn, RunLayout(tmp_path), cfg, progress=False)
    by = {d["dictionary"]: d for d in summary["dictionaries"]}
    planted, shuffled = by["planted"], by["shuffled"]
    assert planted["n_live"] == planted["n_explained"] == 8 and planted["n_scored"] == 5  # all explained, 5 scored
    assert planted["median"] > 0.9 and planted["single_token_share"] == 1.0
    assert shuffled["median"] < 0.5 * planted["median"]
    assert shuffled["median_multi_token"] == shuffled["median"] and planted["median_multi_token"] is None
    count = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    assert count("SELECT count(*) FROM features WHERE explanation IS NULL") == 0  # every live feature
    assert count("SELECT count(*) FROM features WHERE score IS NOT NULL") == 10  # the sample only
    explanation, explainer = conn.execute(
        "SELECT explanation, explainer FROM features WHERE dictionary_id = 1 AND feature = 1"
    ).fetchone()
    assert json.dumps(WORDS[1]) in explanation and explainer == "offline/offline"
    assert db.get_summary(conn, "interpretability") == summary
    table = format_interpretability(summary)
    assert "planted" in table and "shuffled" in table and "100%" in table
    assert "planted, shuffled: no forward of the model here" in table and planted["heldout_forward"] is False


def test_features_explain_cli(tmp_path, capsys):
    from monosemantic.cli import main

    (tmp_path / "features").mkdir()
    _synthetic_db(tmp_path / "features" / paths.FEATURES_DB).close()
    argv = ["features", "explain", "--run", str(tmp_path), "--no-progress", "--max-features", "3", "--models",
            "planted"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "planted" in out and "shuffled" not in out and "1.00" in out
    conn = db.open_readonly(tmp_path / "features" / paths.FEATURES_DB)
    hits = conn.execute("SELECT count(*) FROM feature_search WHERE feature_search MATCH 'whale'").fetchone()[0]
    assert hits >= 1  # explanations are in the full-text index
    assert main(["features", "explain", "--run", str(tmp_path / "nowhere")]) == 2


def test_heldout_windows_come_from_contexts_the_explainer_never_read(tiny_run, tiny_db, one_thread):
    import sqlite3

    from monosemantic.analyses.autointerp import live_features, scoring_windows
    from monosemantic.analyses.heldout import load_pool
    from monosemantic.analyses.loader import dictionaries, load_dictionaries
    from monosemantic.analyses.sampling import read_examples, top_tokens

    conn = sqlite3.connect(tiny_db)
    layout = RunLayout(tiny_run)
    (d,) = [r for r in dictionaries(conn, "A") if r.name == "tm2023-128"]
    pool = load_pool(layout, "A", d.hook, n_tokens=4096, n_contexts=32, seed=0)
    assert pool is not None and pool.tokens.shape == (32, 64) and len(set(pool.offsets.tolist())) == 32
    assert load_pool(layout, "hf-gpt2", d.hook, 4096, 32, 0) is None  # no run model: stored examples only
    # The pool's activations are the database's: a stored example in a pool context has its activation there.
    row_of = {int(o): i for i, o in enumerate(pool.offsets)}
    (dictionary,) = load_dictionaries(conn, layout, "A", d.hook, names=(d.name,))
    stored = conn.execute("SELECT feature, ctx_offset, ctx_pos, max_act FROM examples WHERE dictionary_id = ?", (d.id,))
    checked = 0
    for f, off, pos, act in stored:
        if off in row_of:
            got = pool.columns(dictionary, [f])[row_of[off] * 64 + pos, 0]
            assert got == pytest.approx(act, rel=1e-4, abs=1e-4)
            checked += 1
    assert checked > 0
    # Column encoding is the full encoder's columns.
    cols = list(range(0, 128, 3))
    full = dictionary.encode(pool.acts)[:, cols].numpy()
    np.testing.assert_allclose(pool.columns(dictionary, cols, chunk=100), full, rtol=1e-5, atol=1e-5)

    info, examples = live_features(conn, d), read_examples(conn, d.id)
    cfg = AutoInterpConfig(n_random=20, n_out_of_context=5)
    feats = sorted(info)[:30]
    acts = pool.columns(dictionary, feats)
    kinds, zeros = set(), 0
    for j, f in enumerate(feats):
        explain, test = split_by_context(examples[f])
        windows = scoring_windows(explain, test, info[f], cfg, pool, acts[:, j], np.random.default_rng(j))
        assert {w.ctx_offset for w in windows}.isdisjoint({e.ctx_offset for e in explain}), f
        kinds |= {w.kind for w in windows}
        zeros += sum(w.centre_act == 0 for w in windows if w.kind == "heldout")
        for w in windows:
            assert len(w.tokens) == len(w.acts) <= 9 and w.acts[w.centre] == pytest.approx(w.centre_act, abs=1e-4)
            if w.kind == "out_of_context":  # a top token of the explainer's examples, in another context
                assert w.stratum is None and w.tokens[w.centre] in top_tokens(explain)
        heldout = [w for w in windows if w.kind == "heldout"]
        assert len(heldout) == 20 and all(w.stratum is not None for w in heldout)
    assert {"top", "heldout", "out_of_context"} <= kinds and zeros > 0  # random tokens include zeros
