"""Proxies (paper.md §8.1–§8.2): the LLR by hand on crafted vocabularies, and the case-study pass on the tiny run."""

import json
import math
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from monosemantic.analyses import proxies
from monosemantic.analyses.correlate import PearsonAccumulator
from monosemantic.analyses.proxies import ProxyConfig, _Codes, encoder, format_case_study, run_proxies
from monosemantic.analyses.proxy_defs import BUILTIN, ProxySet, max_suffix_sum, parse_custom, select
from monosemantic.browser.synthetic import build_synthetic_db
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.features.tokentext import char_spans, vocab_bytes
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.topk import TopKSAE, TopKSAEConfig
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer


def test_max_suffix_sum_matches_brute_force():
    rng = np.random.default_rng(0)
    l = rng.normal(size=(3, 9))
    for k in (1, 2, 3):
        got = max_suffix_sum(l, k)
        for r in range(3):
            for i in range(9):
                sums = [l[r, j : i + 1].sum() for j in range(0, i - k + 2)]
                assert got[r, i] == pytest.approx(max(sums)) if sums else got[r, i] == -np.inf


def test_dna_llr_by_hand():
    # vocab: EOT, "AC", "GT", "x", "AC" is 2 chars of 1/4 each.
    vocab = [b"", b"AC", b"GT", b"x"]
    sample = np.array([1, 1, 2, 3, 3, 3, 3, 0])  # counts 1,2,1,4 (+1 smoothing): 2,3,2,5 of 12
    ps = ProxySet([BUILTIN["dna"]], vocab, sample)
    logp = np.log(np.array([2, 3, 2, 5]) / 12)
    np.testing.assert_allclose(ps.logp, logp)
    l_ac, l_gt = 2 * math.log(1 / 4) - logp[1], 2 * math.log(1 / 4) - logp[2]
    l_x = math.log(1e-10) - logp[3]
    llr = ps.llr(np.array([[1, 2, 3, 1]]))[0, 0]
    # DNA looks at groups of at least two tokens: position 0 has none.
    assert llr[0] == -np.inf
    assert llr[1] == pytest.approx(l_ac + l_gt)
    assert llr[2] == pytest.approx(l_x + max(l_ac + l_gt, l_gt))
    assert llr[3] == pytest.approx(l_ac + l_x + max(0, l_gt, l_gt + l_ac))
    assert llr[2] < llr[1] < 0  # frequent tokens: likelier as unigram text than as random DNA
    np.testing.assert_array_equal(ps.values(llr[None, None])[0, 0], (llr > 0).astype(float))


def test_script_table_counts_fragments_by_their_use_in_context():
    # "\xa8" completes Arabic ب after \xd8 and Hebrew ר after \xd7.
    vocab = [b"", b"\xd8", b"\xa8", b"\xd7", " ب".encode()]
    sample = np.array([1, 2, 3, 2])
    ps = ProxySet([BUILTIN["arabic"], BUILTIN["hebrew"]], vocab, sample)
    np.testing.assert_allclose(ps.table["arabic"][:4], [0, 1, 0.5, 0])
    np.testing.assert_allclose(ps.table["hebrew"][:4], [0, 0, 0.5, 1])
    assert ps.table["arabic"][4] == 1  # unseen: judged alone; the space belongs to no script
    assert ps.base_rate["arabic"] == pytest.approx(0.5)
    llr = ps.llr(np.array([[1, 2, 4, 3]]))
    np.testing.assert_allclose(llr[0, 0], [math.log(2), 0, math.log(2), math.log(1e-10) - math.log(0.5)])


def test_char_spans_cover_split_characters():
    vocab = [b"", b"a", b"\xd8", b"\xa8", b" b"]
    text, first, stop = char_spans(vocab, np.array([1, 2, 3, 0, 4]))
    assert text == "aب b"
    assert list(zip(first, stop, strict=True)) == [(0, 1), (1, 2), (1, 2), (0, 0), (2, 4)]


def caps(tokens: list[str]) -> list[float]:
    """A user proxy: LLR 1 on all-caps tokens, 0 elsewhere."""
    return [float(t.isupper()) for t in tokens]


def test_regex_and_user_proxies():
    vocab = [b"", b"<b", b">", b"HI", b"&amp;"]
    custom = ["caps=py:tests.analyses.test_proxies:caps", "his=regex:HI+"]
    ps = ProxySet(select(("html",), custom), vocab, np.array([1, 2, 3, 3, 4, 3]))
    assert ps.base_rate["html"] == pytest.approx(3 / 6) and ps.base_rate["his"] == pytest.approx(3 / 6)
    llr = ps.llr(np.array([[1, 2, 3, 4]]))
    np.testing.assert_allclose(llr[0, 0], np.where([1, 1, 0, 1], 0, math.log(1e-10)) - math.log(0.5))
    np.testing.assert_array_equal(llr[1, 0], [0, 0, 1, 0])
    assert (ps.values(llr)[2, 0] > 0).tolist() == [False, False, True, False]
    with pytest.raises(UserError, match="NAME=regex"):
        parse_custom("oops")
    with pytest.raises(UserError, match="bad regular expression"):
        parse_custom("x=regex:(")
    with pytest.raises(UserError, match="cannot import"):
        parse_custom("x=py:no_such_module_here:f")


def want_kept(x, y):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(x.T, y.T)[: x.shape[1], x.shape[1] :]


def test_pearson_accumulator_sparse_and_dense_paths_match_numpy():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(500, 7)) - 1.5, 0)
    x[:, 3] = 0  # dead: NaN
    y = rng.normal(size=(500, 2))
    for sparse_below in (0.0, 1.0):
        acc = PearsonAccumulator(7, 2, sparse_below=sparse_below)
        for lo in range(0, 500, 128):
            acc.update(torch.from_numpy(x[lo : lo + 128]), torch.from_numpy(y[lo : lo + 128]))
        r = acc.corr()
        kept = PearsonAccumulator(7, 2, sparse_below=sparse_below)
        keep = rng.random(500) < 0.5
        kept.update(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(keep))
        np.testing.assert_allclose(np.nan_to_num(kept.corr()), np.nan_to_num(want_kept(x[keep], y[keep])), atol=1e-10)
        assert np.isnan(r[3]).all()
        with np.errstate(invalid="ignore", divide="ignore"):  # the dead column
            want = np.corrcoef(x.T, y.T)[:7, 7:]
        np.testing.assert_allclose(np.delete(r, 3, 0), np.delete(want, 3, 0), atol=1e-10)


def _db_with_dictionaries(conn, run, names=("tm2023-64",), model="A"):
    hook = hooks.MLP_POST
    db.add_dictionary(conn, name="neurons", model=model, hook=hook, kind="neurons", n_features=128, n_tokens=0)
    for n in names:
        sae = SparseAutoencoder.load(run / f"sae/{model}/{hook}/{n}")
        db.add_dictionary(conn, name=n, model=model, hook=hook, kind="sae", n_features=sae.cfg.n_features, n_tokens=0)


def test_case_study_pass_matches_a_direct_computation(tiny_run, tmp_path):
    conn = db.create(tmp_path / "f.sqlite")
    _db_with_dictionaries(conn, tiny_run)
    cfg = ProxyConfig(proxies=("arabic", "hebrew", "cjk", "dna"), n_tokens=2048, sample_tokens=20000, batch_size=3,
                      family_min_r=0.1, n_levels=10)  # fmt: skip
    summary = run_proxies(conn, RunLayout(tiny_run), cfg, progress=False)

    # Recompute by hand: activations of every feature on the same contexts, Pearson with the proxy.
    hook = hooks.MLP_POST
    model = load_transformer(tiny_run / "transformer/A")
    sae = SparseAutoencoder.load(tiny_run / f"sae/A/{hook}/tm2023-64")
    store = TokenStore(tiny_run / "tokens")
    ctx = held_out_contexts(store, model.cfg.ctx_len, 2048)
    assert ctx.offsets[-1] > store.val.n_tokens // 2  # spread: not just the split's first windows
    tok_bytes = vocab_bytes(load_tokenizer(tiny_run / "tokenizer/tokenizer.json"))
    ps = ProxySet(select(cfg.proxies), tok_bytes, store.train.all_tokens(cfg.sample_tokens))
    neurons, feats = dictionary_activations(model, model.hook_point(hook), {"s": sae}, torch.from_numpy(ctx.tokens))
    f = feats["s"].reshape(-1, 64).numpy().astype(np.float64)
    nrn = neurons.reshape(-1, 128).numpy().astype(np.float64)
    v = ps.values(ps.llr(ctx.tokens)).reshape(4, -1)
    rows = {(r["name"], r["with_synthetic"]): r for r in summary["rows"]}
    arabic = rows["arabic", 1]
    assert arabic["n_tokens"] == int((v[0] > 0).sum()) > 0
    corr = want_kept(f, v[:1].T)[:, 0]
    assert arabic["feature"] == int(np.nanargmax(corr))
    assert arabic["feature_corr"] == pytest.approx(np.nanmax(corr), abs=1e-5)
    ncorr = want_kept(nrn, v[:1].T)[:, 0]
    assert arabic["neuron"] == int(np.nanargmax(ncorr))
    assert arabic["neuron_corr"] == pytest.approx(np.nanmax(ncorr), abs=1e-5)
    held = v[0] > 0
    stored = json.loads(conn.execute(
        "SELECT specificity_json FROM proxies WHERE name = 'arabic' AND with_synthetic = 1").fetchone()[0])  # fmt: skip
    for a, key, got in ((f[:, arabic["feature"]], "specificity", stored["feature"]),
                        (nrn[:, arabic["neuron"]], "neuron_specificity", stored["neuron"])):  # fmt: skip
        # Specificity by level: 10 equal intervals of (0, max], the proxy's share in each.
        m = a.max()
        e = np.linspace(0, m, 11)
        assert got["max"] == pytest.approx(m, rel=1e-6)
        assert got["tokens"] == [int(((a > e[k]) & (a <= e[k + 1])).sum()) for k in range(10)]
        assert got["proxy_tokens"] == [int(((a > e[k]) & (a <= e[k + 1]) & held).sum()) for k in range(10)]
        high = a > m / 2
        assert arabic[key] == pytest.approx((high & held).sum() / high.sum())
    # The old scalars: the share of the best feature's activation mass on Arabic tokens, and the
    # share of the proxy's mass where the feature fires.
    a = f[:, arabic["feature"]]
    assert arabic["mass_specificity"] == pytest.approx((a * held).sum() / a.sum(), rel=1e-5)
    assert arabic["sensitivity"] == pytest.approx((v[0] * (a > 0)).sum() / v[0].sum(), rel=1e-5)
    # The family: every feature with r >= 0.1, by r; the r of their summed activation.
    fam = [(i, corr[i]) for i in np.argsort(-np.nan_to_num(corr, nan=-1)) if corr[i] >= 0.1]
    assert [i for i, _ in arabic["family"]["members"]] == [i for i, _ in fam] and len(fam) >= 1
    np.testing.assert_allclose([r for _, r in arabic["family"]["members"]], [r for _, r in fam], atol=1e-5)
    summed = f[:, [i for i, _ in fam]].sum(1)
    assert arabic["family"]["sum_corr"] == pytest.approx(np.corrcoef(summed, v[0])[0, 1], abs=1e-5)
    # The decoder row over the neurons.
    w = sae.W_dec.detach()[arabic["feature"]].double().numpy()
    w = w / np.linalg.norm(w)
    assert arabic["decoder"]["n_ge"] == int((np.abs(w) >= 0.1).sum())
    assert [i for i, _ in arabic["decoder"]["top"]] == np.argsort(-np.abs(w))[:3].tolist()
    # Shares: in the sample, and over every window of the split.
    share = summary["shares"]["arabic"]
    assert share["sample"] == pytest.approx(held.mean())
    every = held_out_contexts(store, model.cfg.ctx_len, 10**9)
    assert share["split_tokens"] == every.n_tokens > ctx.n_tokens
    assert share["split"] == pytest.approx((ps.values(ps.llr(every.tokens))[0] > 0).mean())
    assert arabic["paper_corr"] == 0.74
    # Without the synthetic slice (the tiny corpus's synthetic/count docs) fewer tokens count.
    assert summary["n_tokens"]["without synthetic/"] < summary["n_tokens"]["all tokens"]
    assert conn.execute("SELECT count(*) FROM proxies").fetchone()[0] == 4 * 2
    assert db.get_summary(conn, "case_study")["rows"] == summary["rows"]
    table = format_case_study(summary)
    assert "arabic" in table and "0.74" in table and f"{arabic['feature_corr']:.2f}" in table
    # The browser's synthetic database (its test fixture) holds the same shape.
    syn = sqlite3.connect(build_synthetic_db(tmp_path / "synthetic.sqlite"))
    fake = db.get_summary(syn, "case_study")
    assert set(fake) == set(summary) and set(fake["sample"]) == set(summary["sample"])
    assert set(fake["rows"][0]) == set(arabic) and set(fake["shares"]["arabic"]) == set(share)
    assert set(fake["rows"][0]["decoder"]) == set(arabic["decoder"])
    assert set(fake["rows"][0]["family"]) == set(arabic["family"])
    fake_spec = json.loads(syn.execute("SELECT specificity_json FROM proxies LIMIT 1").fetchone()[0])
    assert set(fake_spec) == set(stored) and set(fake_spec["feature"]) == set(stored["feature"])


def test_missing_dictionaries_is_a_user_error(tiny_run, tmp_path):
    conn = db.create(tmp_path / "f.sqlite")
    with pytest.raises(UserError, match="features build"):
        run_proxies(conn, RunLayout(tiny_run), ProxyConfig(), progress=False)


_ = (shutil, sqlite3)


def test_spilled_activations_give_the_same_case_study_up_to_float16(tiny_run, tmp_path):
    """`spill=True` (pass 2 reads pass 1's activations from disk, rounded to float16 in both passes) against
    running the model twice: the same best features and neurons, correlations within float16 rounding."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the spill goes into the run directory
    out = {}
    for spill in (False, True):
        conn = db.create(tmp_path / f"f{spill}.sqlite")
        _db_with_dictionaries(conn, run)
        cfg = ProxyConfig(proxies=("arabic", "hebrew", "cjk", "dna"), n_tokens=2048, sample_tokens=20000,
                          batch_size=3, family_min_r=0.1, spill=spill)  # fmt: skip
        out[spill] = {
            (r["name"], r["with_synthetic"]): r for r in run_proxies(conn, RunLayout(tiny_run), cfg, False)["rows"]
        }
    assert not list(tiny_run.glob(".proxies-*"))  # the spill is removed
    for key, plain in out[False].items():
        got = out[True][key]
        assert (got["feature"], got["neuron"]) == (plain["feature"], plain["neuron"]), key
        for k in ("feature_corr", "neuron_corr", "specificity", "neuron_specificity"):
            if plain[k] is not None:
                assert got[k] == pytest.approx(plain[k], abs=2e-3), (key, k)


def test_stored_codes_give_the_columns_encoder_gives_bit_for_bit(tmp_path):
    """`_Codes` (pass 1's nonzeros, int16 or int32 columns) rebuilds the wanted columns, unsorted ones included,
    exactly as `encoder(sae, columns)` encodes them, batch after batch."""
    g = torch.Generator().manual_seed(0)
    for n_features in (64, 40_000):  # int16 columns; int32 above 32,768
        sae = TopKSAE(TopKSAEConfig(d_in=8, n_features=n_features, k=3), generator=g)
        with torch.no_grad():
            sae.b_enc.normal_(generator=g)
        codes = _Codes(tmp_path / f"codes-{n_features}", n_features)
        xs = [torch.randn(n, 8, generator=g) for n in (5, 7, 1)]
        for x in xs:
            codes.write(encoder(sae)(x))
        assert codes.index == (np.int16 if n_features == 64 else np.int32)
        fired = torch.cat([encoder(sae)(x) for x in xs]).nonzero()[:, 1].unique().tolist()
        columns = [n_features - 1, *fired[::-2], 0]  # some features that fire, some that may not, unsorted
        got = list(codes.read(columns))
        for x, g_x in zip(xs, got, strict=True):
            assert g_x.dtype == torch.float32 and torch.equal(g_x, encoder(sae, columns)(x))
        assert sum(int((g_x > 0).sum()) for g_x in got) >= len(fired[::-2])


def test_topk_case_study_from_pass_1_codes_equals_encoding_again(tiny_run, tmp_path, monkeypatch):
    """Pass 2 reads a TopK SAE's columns from pass 1's stored codes: the case study is exactly the one that encodes
    every feature again (levels, sensitivity, family r), with and without the spill."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    hook = hooks.MLP_POST
    relu = SparseAutoencoder.load(run / f"sae/A/{hook}/tm2023-64")
    topk = TopKSAE(TopKSAEConfig(d_in=relu.cfg.d_in, n_features=64, k=4))
    topk.load_state_dict(relu.state_dict())  # the ReLU SAE's directions, coupled by TopK
    topk.save(run / f"sae/A/{hook}/topk-64")
    read, reads = _Codes.read, []
    monkeypatch.setattr(_Codes, "read", lambda self, columns: reads.append(columns) or read(self, columns))
    for spill in (False, True):
        out = {}
        for reuse in (True, False):
            monkeypatch.setattr(proxies, "_REUSE_CODES", reuse)
            conn = db.create(tmp_path / f"f{spill}{reuse}.sqlite")
            _db_with_dictionaries(conn, run, names=("tm2023-64", "topk-64"))
            cfg = ProxyConfig(proxies=("arabic", "hebrew", "cjk", "dna"), n_tokens=2048, sample_tokens=20000,
                              batch_size=3, family_min_r=0.1, spill=spill)  # fmt: skip
            rows = run_proxies(conn, RunLayout(run), cfg, False)["rows"]
            table = conn.execute("SELECT * FROM proxies ORDER BY name, with_synthetic, dictionary_id").fetchall()
            out[reuse] = rows, table
        rows = [r for r in out[True][0] if r["dictionary"] == "topk-64"]
        assert sum(len(r["family"]["members"]) > 1 for r in rows) >= 2  # pass 2 sums several stored columns
        assert sum(r["specificity"] is not None for r in rows) >= 4  # best features' levels from stored columns
        assert len(reads) == 1 + spill and reads[-1]  # only the TopK SAE's columns were read back, once per case
        assert out[True] == out[False]
