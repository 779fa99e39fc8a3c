"""Universality (paper.md §8.12): a model matched with itself, and an SAE matched with a permuted copy."""

import shutil

import numpy as np
import pytest
import torch

from monosemantic.analyses.correlate import PearsonAccumulator
from monosemantic.analyses.loader import ensure_dictionaries
from monosemantic.analyses.universality import (
    UniversalityConfig,
    best_matches,
    distribution,
    format_universality,
    live_best,
    merged,
    run_universality,
)
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks

HOOK = hooks.MLP_POST


def test_best_matches_skips_nan_and_orders():
    corr = np.array([[0.1, np.nan, 0.9, 0.5], [np.nan] * 4])
    idx, r = best_matches(corr, 2)
    assert idx.tolist() == [[2, 3], [-1, -1]]
    np.testing.assert_allclose(r[0], [0.9, 0.5])
    d = distribution(r[:, 0], 10)
    assert d["n_alive"] == 1 and d["median"] == pytest.approx(0.9) and sum(d["hist"]["counts"]) == 1


@pytest.fixture(scope="module")
def twin_run(tiny_run, tmp_path_factory):
    """The tiny run with a model B that is a copy of A; B's tm2023-64 has A's features permuted."""
    run = tmp_path_factory.mktemp("twin") / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(run / "transformer/A", run / "transformer/B")
    (run / f"sae/B/{HOOK}").mkdir(parents=True)
    shutil.copytree(run / f"sae/A/{HOOK}/tm2023-128", run / f"sae/B/{HOOK}/tm2023-128")
    sae = SparseAutoencoder.load(run / f"sae/A/{HOOK}/tm2023-64")
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # B feature j = A feature perm[j]
        sae.W_enc.copy_(sae.W_enc[:, perm])
        sae.b_enc.copy_(sae.b_enc[perm])
        sae.W_dec.copy_(sae.W_dec[perm])
    sae.save(run / f"sae/B/{HOOK}/tm2023-64")
    return run, perm.numpy()


def test_a_model_matched_with_itself_and_a_permuted_sae(twin_run, tmp_path):
    run, perm = twin_run
    layout = RunLayout(run)
    conn = db.create(tmp_path / "f.sqlite")
    ensure_dictionaries(conn, layout, "A", HOOK)
    summary = run_universality(conn, layout, UniversalityConfig(n_tokens=1024, batch_size=4), progress=False)
    by_name = {p["dictionary"]: p for p in summary["pairs"]}
    assert set(by_name) == {"neurons", "tm2023-64", "tm2023-128"}
    for name in by_name:
        assert by_name[name]["n_alive"] > 0
        assert by_name[name]["median"] == pytest.approx(1.0, abs=1e-6)
    ids = {r[0]: r[1] for r in conn.execute("SELECT name, id FROM dictionaries WHERE model = 'A'")}
    rows = conn.execute(
        "SELECT feature, other_feature, corr FROM matches WHERE dictionary_id = ? AND rank = 0", (ids["tm2023-64"],)
    ).fetchall()
    inverse = np.argsort(perm)  # A feature i is B feature inverse[i]
    assert len(rows) == by_name["tm2023-64"]["n_alive"]
    for i, j, r in rows:
        assert j == inverse[i] and r == pytest.approx(1.0, abs=1e-6)
    same = conn.execute(
        "SELECT count(*) FROM matches WHERE dictionary_id = ? AND rank = 0 AND feature = other_feature",
        (ids["tm2023-128"],),
    ).fetchone()[0]
    assert same == by_name["tm2023-128"]["n_alive"]
    assert db.get_summary(conn, "universality")["paper"] == {"features": 0.72, "neurons": 0.46}
    assert "0.72" in format_universality(summary)


def test_missing_model_b_says_how_to_train_it(tiny_run, tmp_path):
    conn = db.create(tmp_path / "f.sqlite")
    ensure_dictionaries(conn, RunLayout(tiny_run), "A", HOOK)
    with pytest.raises(UserError, match="--seed 1"):
        run_universality(conn, RunLayout(tiny_run), UniversalityConfig(), progress=False)


def test_medians_by_density_band_count_features_computed_directly(twin_run, tmp_path):
    """`by_density` puts each A feature in the band of its density on the same tokens (computed here)."""
    from monosemantic.data.tokens import TokenStore
    from monosemantic.features.stream import dictionary_activations, held_out_contexts
    from monosemantic.sae.model import SparseAutoencoder as SAE
    from monosemantic.transformer.model import load_transformer

    run, _ = twin_run
    layout = RunLayout(run)
    model = load_transformer(layout.transformer("A")).eval()
    ctx = held_out_contexts(TokenStore(layout.tokens), model.cfg.ctx_len, 1024)
    sae = SAE.load(run / f"sae/A/{HOOK}/tm2023-64").eval()
    fired = np.zeros(64, dtype=np.int64)
    for lo, hi in ctx.batches(4):
        _, feats = dictionary_activations(
            model, model.hook_point(HOOK), {"s": sae}, torch.from_numpy(ctx.tokens[lo:hi])
        )
        fired += (feats["s"].reshape(-1, 64) > 0).sum(0).numpy()
    density = fired / ctx.n_tokens
    edge = float(np.median(density[density > 0]))  # splits the live features in two bands
    conn = db.create(tmp_path / "f.sqlite")
    ensure_dictionaries(conn, layout, "A", HOOK)
    cfg = UniversalityConfig(n_tokens=1024, batch_size=4, density_edges=(edge,))
    summary = run_universality(conn, layout, cfg, progress=False)
    low, high = {p["dictionary"]: p["by_density"] for p in summary["pairs"]}["tm2023-64"]
    assert (low["lo"], low["hi"], high["lo"], high["hi"]) == (0.0, edge, edge, 1.0)
    assert low["n_alive"] == int(((density > 0) & (density <= edge)).sum()) > 0
    assert high["n_alive"] == int((density > edge).sum()) > 0
    assert low["median"] == pytest.approx(1.0, abs=1e-6)  # B is A permuted: every feature matched exactly
    assert "density" in format_universality(summary)
    with pytest.raises(ValueError):
        UniversalityConfig(density_edges=(1e-3, 1e-4))


def test_live_best_counts_every_live_feature_and_no_dead_one():
    best = np.array([0.9, np.nan, np.nan, 0.4])
    n_active = np.array([3, 0, 2, 1])  # feature 1 is dead; feature 2 fired but nothing in B varied with it
    out = live_best(best, n_active)
    np.testing.assert_array_equal(np.isnan(out), [False, True, False, False])
    np.testing.assert_allclose(out[[0, 2, 3]], [0.9, 0.0, 0.4])
    d = distribution(out, 10)
    assert d["n_alive"] == 3 and d["median"] == pytest.approx(0.4)


def test_merged_halves_equal_one_accumulator_over_all_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(200, 6, generator=g) - 1.0)  # sparse-ish, f >= 0
    y = torch.relu(torch.randn(200, 5, generator=g))
    whole, halves = PearsonAccumulator(6, 5), [PearsonAccumulator(6, 5), PearsonAccumulator(6, 5)]
    for k, lo in enumerate(range(0, 200, 30)):
        whole.update(x[lo : lo + 30], y[lo : lo + 30])
        halves[k % 2].update(x[lo : lo + 30], y[lo : lo + 30])
    np.testing.assert_allclose(merged(*halves).corr(), whole.corr(), rtol=1e-12, atol=1e-12)
    assert merged(*halves).n == 200


def test_summary_and_table_give_live_counts_both_medians_the_papers_and_the_bands(twin_run, tmp_path):
    run, _ = twin_run
    layout = RunLayout(run)
    conn = db.create(tmp_path / "f.sqlite")
    ensure_dictionaries(conn, layout, "A", HOOK)
    summary = run_universality(conn, layout, UniversalityConfig(n_tokens=2048, batch_size=4), progress=False)
    assert summary["largest"] == "tm2023-128"
    by_name = {p["dictionary"]: p for p in summary["pairs"]}
    for p in by_name.values():
        assert p["n_live"] == p["n_alive"] > 0  # the median runs over every live feature
        assert p["halves"][0] == pytest.approx(1.0, abs=1e-6) and p["halves"][1] == pytest.approx(1.0, abs=1e-6)
    text = format_universality(summary)
    largest, neurons = by_name["tm2023-128"], by_name["neurons"]
    assert f"tm2023-128: median 1.00 over all {largest['n_live']:,} live features (paper 0.72)" in text
    assert f"neurons: median 1.00 over all {neurons['n_live']:,} live neurons (paper 0.46)" in text
    assert "on each half of the tokens 1.00 / 1.00" in text
    for band in largest["by_density"]:
        assert band["label"] in text


def test_model_b_differs_from_a_in_every_seed_and_keeps_a_s_settings():
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config
    from monosemantic.pipeline import model_b_config

    a = run_config(_parser().parse_args(["demo", "--preset", "tiny"]), prefixed=True)
    b = model_b_config(a)
    assert (a.lm.seed, a.lm.data_seed, a.lm.order_seed) == (0, None, 0)  # A as before: one seed for both
    assert (b.lm.seed, b.lm.order_seed) == (1, 1)  # B: another initialisation and another data order
    assert b.harvest.seed == a.harvest.seed + 1  # other contexts and positions harvested
    assert b.ladder.init_seed == a.ladder.init_seed + 1 and b.sae.seed == a.sae.seed + 1
    assert b.ladder.n_features == (max(a.ladder.n_features),)  # only the largest dictionary: A/1 against B/1
    same = ("n_steps", "batch_size", "lr", "warmup_steps")
    assert [getattr(b.lm, f) for f in same] == [getattr(a.lm, f) for f in same]
    assert b.harvest.n_tokens == a.harvest.n_tokens and b.sae.l1_coeff == a.sae.l1_coeff
    assert b.transformer == a.transformer and b.features == a.features
