"""Feature splitting (masked activation cosine) and the automata links, against hand computations."""

import math
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from monosemantic.analyses import automata
from monosemantic.analyses.loader import load_dictionaries
from monosemantic.analyses.splitting import (
    PairSums,
    SplitConfig,
    ladder_pairs,
    masked_cosine,
    pair_sums_dense,
    run_split,
)
from monosemantic.data.tokens import TokenStore
from monosemantic.features.stream import held_out_contexts
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer

from .conftest import build_tiny_db

HOOK = hooks.MLP_POST


def test_masked_cosine_of_a_handmade_matrix():
    # One small feature a and two large ones over 4 tokens.
    a = torch.tensor([[1.0], [2.0], [0.0], [0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 1.0], [0.0, 0.0]])
    # (a, b0): over S_a = {0,1}: [1,2]·[1,0] / (√5 · 1) = 1/√5; over S_b0 = {0,2}: [1,0]·[1,2] / (1 · √5) = 1/√5
    # (a, b1): over S_a: [1,2]·[0,3] / (√5 · 3) = 2/√5; over S_b1 = {1,2}: [2,0]·[3,1] / (2 · √10) = 3/√10
    want = torch.tensor([[1 / math.sqrt(5), 3 / math.sqrt(10)]], dtype=torch.float64)
    s = PairSums(1, 2)
    s.update(a[:2], b[:2])  # two batches: the sums are additive
    s.update(a[2:], b[2:])
    torch.testing.assert_close(masked_cosine(*s.matrices(), s.q_a, s.q_b), want)
    G, M1, M2 = pair_sums_dense(a, b)
    torch.testing.assert_close(masked_cosine(G, M1, M2, s.q_a, s.q_b), want)


def test_sparse_pair_sums_equal_the_dense_ones():
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(300, 20, generator=g) - 1.2)
    b = torch.relu(torch.randn(300, 50, generator=g) - 1.5)
    b[:, 7] = 0  # a feature that never fires: similarity 0, no NaN
    s = PairSums(20, 50, max_pairs=100)  # many small chunks
    s.update(a, b)
    for got, want in zip(s.matrices(), pair_sums_dense(a, b), strict=True):
        torch.testing.assert_close(got, want)
    sim = masked_cosine(*s.matrices(), s.q_a, s.q_b)
    assert torch.isfinite(sim).all() and (sim[:, 7] == 0).all() and sim.max() <= 1 + 1e-9


def test_column_encoder_equals_encode_then_select(tiny_run):
    from monosemantic.analyses.loader import Dictionary, column_encoder

    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{HOOK}/tm2023-64")
    d = Dictionary(0, "s", "sae", 64, sae.encode, sae.W_dec.detach(), sae)
    x, cols = torch.rand(50, sae.cfg.d_in), torch.tensor([3, 0, 63, 10])
    with torch.no_grad():
        torch.testing.assert_close(column_encoder(d, cols)(x), sae.encode(x)[:, cols])


def test_ladder_pairs_are_consecutive_plus_smallest_to_largest():
    assert ladder_pairs([512, 1024, 2048, 4096]) == [(0, 1), (1, 2), (2, 3), (0, 3)]
    assert ladder_pairs([64, 128]) == [(0, 1)]


def test_logit_effects_by_hand():
    # Identity path (W_out = W_U = I, gain 1, 1/σ = 1): effect = d − mean(d), then minus the median.
    got = automata.logit_effects(torch.tensor([[1.0, 2.0, 3.0, 6.0]]), torch.eye(4), torch.ones(4), 1.0, torch.eye(4))
    # d − 3 = [-2, -1, 0, 3]; torch's median of an even count is the lower middle, -1
    assert got.tolist() == [[-1.0, 0.0, 1.0, 4.0]]


def test_link_weights_follow_the_target_features_tokens():
    effects = torch.tensor([[0.0, 5.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]])  # 0 raises token 1; 1 raises token 0
    # feature 0 fires on token 3; feature 1 on tokens 1 (weight 3) and 2 (weight 1); feature 2 never
    targets = torch.tensor([[0, 0, 0, 1.0], [0, 0.75, 0.25, 0], [0, 0, 0, 0]]).to_sparse()
    w = automata.link_weights(effects, targets)
    torch.testing.assert_close(w, torch.tensor([[1.0, 3.75, 0.0], [0.0, 0.0, 0.0]]))
    values, idx = automata.top_links(w, torch.tensor([True, True, False]), k=5)
    assert idx.tolist() == [[1, 0], [0, 1]] and values[0].tolist() == [3.75, 1.0]


@pytest.fixture(scope="module")
def dup_run(tiny_run, tmp_path_factory):
    """The tiny run with tm2023-128's feature 100 replaced by tm2023-64's feature 7, and its DB."""
    root = tmp_path_factory.mktemp("dup")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    small = SparseAutoencoder.load(run / f"sae/A/{HOOK}/tm2023-64")
    large = SparseAutoencoder.load(run / f"sae/A/{HOOK}/tm2023-128")
    with torch.no_grad():
        large.W_enc[:, 100] = small.W_enc[:, 7]
        # (x − b_dec') @ w + b' = (x − b_dec) @ w + b  ⇔  b' = b + (b_dec' − b_dec) @ w
        large.b_enc[100] = small.b_enc[7] + (large.b_dec - small.b_dec) @ small.W_enc[:, 7]
        large.W_dec[100] = small.W_dec[7]
    large.save(run / f"sae/A/{HOOK}/tm2023-128")
    build_tiny_db(run, root / "features.sqlite")
    return run, root / "features.sqlite"


def test_a_duplicated_feature_links_with_cosine_one(dup_run):
    run, path = dup_run
    conn = sqlite3.connect(path)
    counts = run_split(conn, RunLayout(run), SplitConfig(n_tokens=2048, ctx_len=64), progress=False)
    ids = dict(conn.execute("SELECT name, id FROM dictionaries"))
    row = conn.execute(
        "SELECT act_cosine, dec_cosine FROM splits WHERE parent_dictionary_id = ? AND parent_feature = 7"
        " AND child_dictionary_id = ? AND child_feature = 100",
        (ids["tm2023-64"], ids["tm2023-128"]),
    ).fetchone()
    assert row is not None and row[0] == pytest.approx(1.0, abs=1e-4) and row[1] == pytest.approx(1.0, abs=1e-4)
    sims = [r[0] for r in conn.execute("SELECT act_cosine FROM splits")]
    assert counts["splits"] == len(sims) and min(sims) > 0.4 and max(sims) <= 1 + 1e-6
    # Automata: every live feature gets n_links targets within its own dictionary.
    n_alive = conn.execute("SELECT count(*) FROM features WHERE n_active > 0").fetchone()[0]
    assert counts["logit_links"] == conn.execute("SELECT count(*) FROM logit_links").fetchone()[0]
    assert counts["logit_links"] == 10 * n_alive
    # One link redone by hand: i's effect on the max tokens of j's top examples, weighted by activation.
    did, i, j, w = conn.execute(
        "SELECT dictionary_id, feature, target_feature, weight FROM logit_links WHERE rank = 0 LIMIT 1"
    ).fetchone()
    name = conn.execute("SELECT name FROM dictionaries WHERE id = ?", (did,)).fetchone()[0]
    stream = TokenStore(run / "tokens").val.all_tokens()
    ex = conn.execute(
        "SELECT ctx_offset + ctx_pos, max_act FROM examples WHERE dictionary_id = ? AND feature = ? AND kind = 'top'",
        (did, j),
    ).fetchall()
    model = load_transformer(run / "transformer/A")
    d = next(x for x in load_dictionaries(conn, RunLayout(run), "A", HOOK) if x.name == name)
    L = model.cfg.ctx_len
    ctx = torch.from_numpy(held_out_contexts(TokenStore(run / "tokens"), L, 16 * L).tokens)
    with torch.inference_mode():
        inv = automata.mean_inv_sigma(model, ctx)
        eff = automata.logit_effects(d.W_dec[i : i + 1], model.blocks[0].mlp.W_out, model.ln_f.weight, inv, model.W_U)[
            0
        ]
    acts = np.array([a for _, a in ex])
    want = sum(a * float(eff[stream[t]]) for t, a in ex) / acts.sum()
    assert w == pytest.approx(want, abs=1e-4)
