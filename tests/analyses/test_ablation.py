"""Feature ablations and pinned sampling against plain forwards with the edited activation."""

import json
import sqlite3

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monosemantic.analyses import pinned
from monosemantic.analyses.ablation import (
    AblationConfig,
    Example,
    ablate_features,
    prompt_ids,
    run_ablation,
    stream_slices,
)
from monosemantic.analyses.forward import edited_logits
from monosemantic.analyses.loader import Dictionary
from monosemantic.data.tokens import TokenStore
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer

HOOK = hooks.MLP_POST


def planted(direction: torch.Tensor, bias: float = 0.0) -> Dictionary:
    """One feature: f = relu(x · d + bias), decoder row d (unit)."""
    d = direction / direction.norm()
    return Dictionary(0, "planted", "sae", 1, lambda x: torch.relu(x @ d[:, None] + bias), d[None, :])


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_transformer(tiny_run / "transformer/A").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def contexts(tiny_run):
    split = TokenStore(tiny_run / "tokens").val
    return stream_slices(split, np.array([0, 64, 128]), 40)


def manual_deltas(model, tokens, edit):
    """log p_edited − log p_clean of every token (from position 1), by two full forwards."""
    clean = F.log_softmax(model(tokens), -1)
    edited = F.log_softmax(edited_logits(model, tokens, edit, HOOK), -1)
    nxt = tokens[:, 1:, None]
    return (edited[:, :-1].gather(2, nxt) - clean[:, :-1].gather(2, nxt))[..., 0], clean, edited


def test_ablating_a_planted_feature_matches_a_manual_forward(model, contexts):
    # The planted direction: one token's activation minus the mean, so it fires on some tokens only.
    tokens = torch.from_numpy(contexts)
    acts = model.run_with_cache(tokens, (HOOK,))[1][HOOK]
    d = planted(acts[0, 20] - acts.mean((0, 1)))
    dvec = d.W_dec[0]
    examples = [Example(rowid=10 + c, feature=0, ctx_offset=0, start=5, length=30, ctx_pos=20) for c in range(3)]
    got = ablate_features(model, d, examples, contexts, HOOK)[0]

    deltas, clean, edited = manual_deltas(model, tokens, lambda x: x - d.encode(x) * dvec)
    for c in range(3):
        want = deltas[c, 4:34]  # window tokens 5..34 are predicted at positions 4..33
        assert torch.allclose(torch.tensor(got.window_deltas[10 + c]), want, atol=1e-4)
    touched = d.encode(acts)[:, 4:34, 0] > 0
    assert touched.any() and not touched.all()
    assert got.mean_loss_delta == pytest.approx(float(-deltas[:, 4:34][touched].mean()), abs=1e-5)
    effect = (clean[:, 20] - edited[:, 20]).mean(0)
    assert torch.allclose(got.mean_effect, effect, atol=1e-4)


def test_ablating_a_never_active_feature_changes_nothing(model, contexts):
    tokens = torch.from_numpy(contexts)
    dead = planted(torch.ones(model.cfg.d_mlp), bias=-1e6)
    examples = [Example(rowid=c, feature=0, ctx_offset=0, start=0, length=10, ctx_pos=3) for c in range(3)]
    got = ablate_features(model, dead, examples, contexts, HOOK)[0]
    for c in range(3):
        assert got.window_deltas[c] == [None] + [0.0] * 9
    assert got.mean_loss_delta == 0.0 and torch.equal(got.mean_effect, torch.zeros(model.cfg.vocab_size))
    assert torch.equal(edited_logits(model, tokens, lambda x: x - dead.encode(x) * dead.W_dec[0], HOOK), model(tokens))


def test_run_ablation_writes_what_a_manual_forward_gives(tiny_run, tiny_db, model):
    conn = sqlite3.connect(tiny_db)
    counts = run_ablation(conn, RunLayout(tiny_run), AblationConfig(n_samples=2, n_new_tokens=5), progress=False)
    assert set(counts) == {"neurons", "tm2023-64", "tm2023-128"}
    did = conn.execute("SELECT id FROM dictionaries WHERE name = 'tm2023-64'").fetchone()[0]
    n_alive = conn.execute("SELECT count(*) FROM features WHERE dictionary_id = ? AND n_active > 0", (did,)).fetchone()
    assert counts["tm2023-64"] == {"ablated": n_alive[0], "pinned": n_alive[0]}
    # The strongest example of the first live feature, redone by hand with the real SAE.
    feat, off, pos, mi, toks, abl = conn.execute(
        "SELECT feature, ctx_offset, ctx_pos, max_index, tokens_json, ablation_json FROM examples"
        " WHERE dictionary_id = ? AND kind = 'top' AND rank = 0 ORDER BY feature LIMIT 1",
        (did,),
    ).fetchone()
    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{HOOK}/tm2023-64")
    tokens = torch.from_numpy(stream_slices(TokenStore(tiny_run / "tokens").val, np.array([off]), 64))
    deltas, _, _ = manual_deltas(model, tokens, lambda x: x - sae.encode(x)[..., feat, None] * sae.W_dec[feat])
    start, abl = pos - mi, json.loads(abl)
    assert len(abl) == len(json.loads(toks))
    want = [None if p == 0 else float(deltas[0, p - 1]) for p in range(start, start + len(abl))]
    assert [a is None for a in abl] == [w is None for w in want]
    assert np.allclose([a for a in abl if a is not None], [w for w in want if w is not None], atol=2e-4)
    assert abl[mi + 1] != 0.0  # the token after the max token: the feature fired before it
    promoted = json.loads(
        conn.execute("SELECT promoted_json FROM ablations WHERE dictionary_id = ?", (did,)).fetchone()[0]
    )
    assert len(promoted) == 10 and promoted[0][1] >= promoted[-1][1]
    # Pinned samples: n_samples per live feature, each a decoded string; the baseline is stored too.
    n = conn.execute("SELECT count(*) FROM pinned WHERE dictionary_id = ?", (did,)).fetchone()[0]
    assert n == 2 * n_alive[0]
    base = json.loads(conn.execute("SELECT value FROM summary WHERE key = 'pinned_baseline'").fetchone()[0])
    assert base["prompt"] == "1,2,3,4,5,6,7,8,9,10" and len(base["samples"]) == 2


def test_the_context_cache_gives_what_per_batch_forwards_give(tiny_run, tiny_db, tmp_path):
    def ablate(cache_mb: int) -> tuple[list, list]:
        path = tmp_path / f"cache{cache_mb}.sqlite"
        path.write_bytes(tiny_db.read_bytes())
        conn = sqlite3.connect(path)
        cfg = AblationConfig(pinned=False, batch_contexts=8, cache_mb=cache_mb)
        run_ablation(conn, RunLayout(tiny_run), cfg, progress=False)
        abl = conn.execute("SELECT dictionary_id, feature, mean_loss_delta, promoted_json FROM ablations ORDER BY 1, 2")
        ex = conn.execute("SELECT rowid, ablation_json FROM examples WHERE kind = 'top' ORDER BY rowid")
        return abl.fetchall(), ex.fetchall()

    (abl_c, ex_c), (abl_p, ex_p) = ablate(2048), ablate(0)
    assert len(abl_c) == len(abl_p) > 0 and len(ex_c) == len(ex_p) > 0
    for a, b in zip(abl_c, abl_p, strict=True):
        assert a[:2] == b[:2] and a[2] == pytest.approx(b[2], abs=1e-5)
        assert np.allclose([v for _, v in json.loads(a[3])], [v for _, v in json.loads(b[3])], atol=2e-4)
    for (ra, ja), (rb, jb) in zip(ex_c, ex_p, strict=True):
        va, vb = json.loads(ja), json.loads(jb)
        assert ra == rb and [v is None for v in va] == [v is None for v in vb]
        assert np.allclose([v for v in va if v is not None], [v for v in vb if v is not None], atol=2e-4)


def test_a_window_past_the_models_context_is_a_one_line_error(tiny_run, tiny_db):
    from monosemantic.errors import UserError

    conn = sqlite3.connect(tiny_db)
    conn.execute("UPDATE examples SET ctx_pos = ctx_pos + 1000 WHERE rowid = (SELECT min(rowid) FROM examples)")
    with pytest.raises(UserError, match="past ctx_len"):
        run_ablation(conn, RunLayout(tiny_run), AblationConfig(pinned=False), progress=False)
    assert conn.execute("SELECT count(*) FROM ablations").fetchone()[0] == 0  # nothing ablated first


def test_pinning_the_last_position_equals_pinning_every_position(tiny_run, model):
    from monosemantic.analyses.forward import to_resid
    from monosemantic.data.tokenizer import load_tokenizer

    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{HOOK}/tm2023-64")
    d = Dictionary(1, "s", "sae", 64, sae.encode, sae.W_dec.detach())
    prompt = prompt_ids(load_tokenizer(tiny_run / "tokenizer/tokenizer.json"), "1,2,3,4,5,6,7,8,9,10")
    seqs = prompt.expand(3, -1)
    feats, vals = torch.tensor([0, 5, 9]), torch.tensor([3.0, 5.0, 8.0])
    last = to_resid(model, seqs, HOOK, pinned.pin_edit(d, feats, vals, last_only=True))[1][:, -1]
    every = to_resid(model, seqs, HOOK, pinned.pin_edit(d, feats, vals, last_only=False))[1][:, -1]
    torch.testing.assert_close(last, every, atol=1e-5, rtol=1e-5)
    # and every position really reads the pinned value
    logits = edited_logits(model, seqs, pinned.pin_edit(d, feats, vals, last_only=False), HOOK)
    torch.testing.assert_close(model.unembed(model.ln_f(every)), logits[:, -1], atol=1e-4, rtol=1e-4)


def test_pinned_sampling_is_reproducible_and_differs_from_unpinned(tiny_run, model):
    from monosemantic.data.tokenizer import load_tokenizer

    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{HOOK}/tm2023-64")
    d = Dictionary(1, "s", "sae", 64, sae.encode, sae.W_dec.detach())
    prompt = prompt_ids(load_tokenizer(tiny_run / "tokenizer/tokenizer.json"), "1,2,3,4,5,6,7,8,9,10")
    u = pinned.uniforms(seed=0, feature=3, n_samples=4, n_new=12)
    edit = pinned.pin_edit(d, torch.full((4,), 3), torch.full((4,), 20.0), last_only=True)
    a = pinned.sample(model, prompt, u, 1.0, edit)
    b = pinned.sample(model, prompt, pinned.uniforms(0, 3, 4, 12), 1.0, edit)
    plain = pinned.sample(model, prompt, u, 1.0, None)
    assert a.shape == (4, 12) and torch.equal(a, b)
    assert not torch.equal(a, plain)
    # batching does not change a feature's samples: the same rows come out of a bigger batch
    both = pinned.sample(
        model,
        prompt,
        torch.cat([u, pinned.uniforms(0, 7, 4, 12)]),
        1.0,
        pinned.pin_edit(d, torch.tensor([3] * 4 + [7] * 4), torch.full((8,), 20.0), last_only=True),
    )
    assert torch.equal(both[:4], a)


def test_cached_sampling_equals_rerunning_the_window(tiny_run, model):
    from monosemantic.analyses.forward import to_resid
    from monosemantic.data.tokenizer import load_tokenizer

    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{HOOK}/tm2023-64")
    d = Dictionary(1, "s", "sae", 64, sae.encode, sae.W_dec.detach())
    prompt = prompt_ids(load_tokenizer(tiny_run / "tokenizer/tokenizer.json"), "1,2,3,4,5,6,7,8,9,10")
    feats, vals = torch.tensor([3, 3, 7, 7]), torch.tensor([20.0, 20.0, 5.0, 5.0])
    edit = pinned.pin_edit(d, feats, vals, last_only=True)
    u = torch.cat([pinned.uniforms(0, 3, 2, 16), pinned.uniforms(0, 7, 2, 16)])
    for e in (edit, None):
        cached = pinned.sample(model, prompt, u, 1.0, e)
        assert torch.equal(cached, pinned.sample(model, prompt, u, 1.0, e, cache=False))
    # the cached residual stream at each new position is the full window's, edit included
    seq = torch.cat([prompt.expand(4, -1), cached], dim=1)
    cache = pinned._KVCache(model, HOOK, edit)
    steps = [cache(seq[:, : prompt.numel()])]
    steps += [cache(seq[:, p : p + 1]) for p in range(prompt.numel(), seq.shape[1])]
    for p, got in zip(range(prompt.numel(), seq.shape[1] + 1), steps, strict=True):
        torch.testing.assert_close(got, to_resid(model, seq[:, :p], HOOK, edit)[1][:, -1], atol=1e-5, rtol=1e-5)


def test_draw_is_inverse_cdf():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]] * 4))
    got = pinned.draw(logits, torch.tensor([0.0, 0.19, 0.21, 0.99], dtype=torch.float64), 1.0)
    assert got.tolist() == [0, 0, 1, 2]
