"""The feature database of the tiny run against brute force over the same held-out tokens."""

import dataclasses
import json
import shutil

import pytest
import torch

from monosemantic.cli import main
from monosemantic.data.tokens import TokenStore
from monosemantic.features import db, logits
from monosemantic.features.build import build_features
from monosemantic.features.config import FeaturesConfig, Step
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer, TransformerConfig, load_transformer

CFG = FeaturesConfig(
    n_tokens=4096, top_k=8, n_intervals=4, interval_samples=3, random_samples=5, hist_bins=12, analyses=("none",)
)


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory):
    """A copy of the tiny run with its feature database, and the brute-force activations."""
    run = tmp_path_factory.mktemp("features") / "run"
    shutil.copytree(tiny_run, run)
    path = build_features(RunLayout(run), CFG, progress=False)
    model = load_transformer(run / "transformer/A")
    sae = SparseAutoencoder.load(run / f"sae/A/{hooks.MLP_POST}/tm2023-64")
    ctx = held_out_contexts(TokenStore(run / "tokens"), model.cfg.ctx_len, CFG.n_tokens)
    acts, feats = dictionary_activations(
        model, model.hook_point(hooks.MLP_POST), {"s": sae}, torch.from_numpy(ctx.tokens)
    )
    conn = db.open_readonly(path)
    yield run, conn, ctx, {"neurons": acts, "tm2023-64": feats["s"]}
    conn.close()


EXAMPLES = "SELECT * FROM examples WHERE dictionary_id=? AND feature=?"


def _rows(conn, sql, *args):
    return [dict(r) for r in conn.execute(sql, args)]


@pytest.mark.parametrize("name", ["tm2023-64", "neurons"])
def test_statistics_and_top_examples_match_brute_force(built, name):
    _, conn, ctx, brute = built
    f3 = brute[name]
    f = f3.reshape(-1, f3.shape[-1])
    did = db.dictionary_id(conn, name)
    feats = _rows(conn, "SELECT * FROM features WHERE dictionary_id = ? ORDER BY feature", did)
    assert len(feats) == f.shape[1]  # every neuron / feature has a record
    for j, row in enumerate(feats):
        col = f[:, j]
        n_active = int((col > 0).sum())
        assert row["n_active"] == n_active and row["density"] == pytest.approx(n_active / f.shape[0])
        assert row["max_act"] == pytest.approx(float(col.max()), rel=1e-6)
        if n_active:
            assert row["mean_act"] == pytest.approx(float(col[col > 0].double().mean()), rel=1e-5)
            assert sum(json.loads(row["hist_json"])["counts"]) == n_active
            assert sum(json.loads(row["source_json"]).values()) == pytest.approx(1.0, abs=1e-4)
        top = _rows(
            conn, "SELECT * FROM examples WHERE dictionary_id=? AND feature=? AND kind='top' ORDER BY rank", did, j
        )
        want = col.topk(min(CFG.top_k, n_active)).values.tolist()
        assert [r["max_act"] for r in top] == pytest.approx(want, rel=1e-6)
        for r in top:  # each example points at a token whose activation is the one recorded
            row_i = int((torch.from_numpy(ctx.offsets) == r["ctx_offset"]).nonzero()[0])
            assert float(f3[row_i, r["ctx_pos"], j]) == pytest.approx(r["max_act"], rel=1e-6)
            acts = json.loads(r["acts_json"])
            lo = r["ctx_pos"] - r["max_index"]
            assert acts == pytest.approx(f3[row_i, lo : lo + len(acts), j].tolist(), abs=1e-4)
            assert len(json.loads(r["tokens_json"])) == len(acts)


def test_source_shares_match_brute_force(built):
    _, conn, ctx, brute = built
    f = brute["tm2023-64"].reshape(-1, 64).double()
    src = torch.from_numpy(ctx.src.reshape(-1).astype("int64"))
    did = db.dictionary_id(conn, "tm2023-64")
    for row in _rows(conn, "SELECT feature, source_json FROM features WHERE dictionary_id=? AND n_active>0", did):
        col = f[:, row["feature"]]
        shares = json.loads(row["source_json"])
        for s, name in enumerate(ctx.sources):
            assert shares.get(name, 0.0) == pytest.approx(float(col[src == s].sum() / col.sum()), abs=1e-5)


def test_intervals_cover_the_range_and_samples_lie_in_them(built):
    _, conn, _, brute = built
    f = brute["tm2023-64"].reshape(-1, 64)
    did = db.dictionary_id(conn, "tm2023-64")
    for feat in _rows(
        conn, "SELECT feature, max_act, n_active FROM features WHERE dictionary_id=? AND n_active>0", did
    ):
        j, col = feat["feature"], f[:, feat["feature"]]
        iv = _rows(conn, "SELECT * FROM intervals WHERE dictionary_id=? AND feature=? ORDER BY interval", did, j)
        assert [r["interval"] for r in iv] == list(range(CFG.n_intervals))
        assert iv[0]["lo"] == 0 and iv[-1]["hi"] == pytest.approx(feat["max_act"])
        assert all(a["hi"] == b["lo"] for a, b in zip(iv, iv[1:], strict=False))
        assert sum(r["count"] for r in iv) == feat["n_active"]
        for r in iv:
            in_range = (col > r["lo"]) & (col <= r["hi"])
            assert r["count"] == int(in_range.sum())
            samples = _rows(
                conn, "SELECT * FROM examples WHERE dictionary_id=? AND feature=? AND kind='interval' AND interval=?",
                did, j, r["interval"],
            )  # fmt: skip
            assert len(samples) == min(r["count"], CFG.interval_samples)
            assert all(r["lo"] < s["max_act"] <= r["hi"] for s in samples)
            assert len({(s["ctx_offset"], s["ctx_pos"]) for s in samples}) == len(samples)  # without replacement
        rnd = _rows(conn, "SELECT * FROM examples WHERE dictionary_id=? AND feature=? AND kind='random'", did, j)
        assert len(rnd) == min(feat["n_active"], CFG.random_samples) and all(s["max_act"] > 0 for s in rnd)


def test_dictionaries_meta_and_eval_summary(built):
    run, conn, ctx, _ = built
    dicts = {r["name"]: r for r in _rows(conn, "SELECT * FROM dictionaries")}
    assert set(dicts) == {"neurons", "tm2023-64", "tm2023-128"}
    assert dicts["neurons"]["kind"] == "neurons" and dicts["tm2023-64"]["architecture"] == "tm2023"
    assert all(d["n_tokens"] == ctx.n_tokens and d["model"] == "A" for d in dicts.values())
    metrics = json.loads((run / f"eval/A/{hooks.MLP_POST}/tm2023-64/metrics.json").read_text())
    assert json.loads(dicts["tm2023-64"]["metrics_json"])["l0"] == metrics["l0"]
    table = {r["dictionary"]: r for r in db.get_summary(conn, "eval")}
    assert set(table) == {"tm2023-64", "tm2023-128"} and table["tm2023-64"]["fvu"] == metrics["fvu"]
    assert db.get_meta(conn, "features")["config"]["top_k"] == CFG.top_k
    # the search index finds a feature by its top tokens
    word = conn.execute("SELECT top_tokens FROM features WHERE top_tokens != '' LIMIT 1").fetchone()[0].split()[0]
    assert conn.execute("SELECT count(*) FROM feature_search WHERE top_tokens MATCH ?", (f'"{word}"',)).fetchone()[0]


def test_logit_weights_by_hand_on_a_tiny_model():
    model = Transformer(TransformerConfig(vocab_size=3, d_model=2, d_mlp=2, n_heads=1, ctx_len=4))
    with torch.no_grad():
        model.blocks[0].mlp.W_out.copy_(torch.tensor([[1.0, 3.0], [0.0, 2.0]]))
        model.ln_f.weight.copy_(torch.tensor([2.0, 0.5]))
        model.unembed.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 4.0, 1.0]]).T)
    # direction e_0 writes r = (1, 3); minus its mean: (-1, 1); times gain / sigma (sigma = 2): (-1, 0.25);
    # unembedding: (-1, 1, -1.75); shifted to a median of zero: (0, 2, -0.75)
    mlp = model.blocks[0].mlp
    w = logits.logit_effects(torch.tensor([[1.0, 0.0]]), mlp.W_out, model.ln_f.weight, 0.5, model.W_U)
    torch.testing.assert_close(w, torch.tensor([[-1.0, 1.0, -1.75]]))
    shifted = logits.median_shift(w, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(shifted, torch.tensor([[0.0, 2.0, -0.75]]))
    rec = logits.logit_records(shifted, torch.tensor([True, True, False]), ["a", "b", "c"], n_top=1, n_bins=2)[0]
    assert rec["top"] == [["b", 2.0]] and rec["bottom"] == [["a", 0.0]]  # "c" is left out
    assert rec["hist"]["counts"] == [1, 1]


def test_ln_scale_is_the_mean_inverse_std_at_ln_f(tiny_run):
    model = load_transformer(tiny_run / "transformer/A")
    tokens = torch.from_numpy(held_out_contexts(TokenStore(tiny_run / "tokens"), 64, 640).tokens)
    _, cache = model.run_with_cache(tokens, (hooks.RESID_POST,))
    x = cache[hooks.RESID_POST]
    want = (1 / torch.sqrt(x.var(-1, unbiased=False) + model.ln_f.eps)).mean().detach()
    assert logits.ln_inv_scale(model, tokens, batch_size=3) == pytest.approx(float(want), rel=1e-5)


def test_stored_logit_weights_of_a_neuron(built):
    run, conn, _, _ = built
    model = load_transformer(run / "transformer/A")
    scale = db.get_meta(conn, "features")["ln_inv_scale"]
    did = db.dictionary_id(conn, "neurons")
    row = conn.execute("SELECT logit_json FROM features WHERE dictionary_id=? AND feature=3", (did,)).fetchone()
    stored = json.loads(row[0])
    # by hand: neuron 3's output weights, LN's mean removal and mean scale, the unembedding
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        r = mlp.W_out[3] - mlp.W_out[3].mean()
        w = (r * model.ln_f.weight * scale) @ model.unembed.weight.T
    store = TokenStore(run / "tokens")
    shown = torch.from_numpy(logits.token_counts(store.train, store.vocab_size)) >= CFG.logit_min_count
    w = (w - w[shown].median())[shown]
    assert [v for _, v in stored["top"]] == pytest.approx(w.topk(CFG.logit_top).values.tolist(), abs=2e-4)
    assert [v for _, v in stored["bottom"]] == pytest.approx((-w).topk(CFG.logit_top).values.neg().tolist(), abs=2e-4)
    assert sum(stored["hist"]["counts"]) == int(shown.sum())


def test_stage_is_atomic_and_skips_when_complete(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    layout, cfg = RunLayout(run), FeaturesConfig(n_tokens=640, saes=("tm2023-64",), neurons=False)

    def interrupted(conn, layout, cfg, progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_features(layout, cfg, progress=False, steps=[Step("boom", interrupted)])
    assert not (run / "features/features.sqlite").exists()
    assert list((run / "features").iterdir()) == []  # no temporary file left either
    calls = []
    path = build_features(layout, cfg, progress=False, steps=[Step("record", lambda c, lay, cf, pr: calls.append(c))])
    assert len(calls) == 1 and (run / "features/config.json").is_file()
    mtime = path.stat().st_mtime_ns
    assert build_features(layout, cfg, progress=False, steps=[Step("boom", interrupted)]) == path  # skipped
    assert path.stat().st_mtime_ns == mtime


def test_pass_two_from_the_spill_equals_encoding_again(built, tmp_path):
    """The spill (pass 1's SAE non-zeros on disk) is an optimisation: the database is the same."""
    run, conn, _, _ = built
    other = tmp_path / "run"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("features"))
    path = build_features(RunLayout(other), dataclasses.replace(CFG, spill=False), progress=False)
    plain = db.open_readonly(path)
    for table, order in [("features", "dictionary_id, feature"), ("intervals", "dictionary_id, feature, interval"),
                         ("examples", "dictionary_id, feature, kind, interval, rank")]:  # fmt: skip
        sql = f"SELECT * FROM {table} ORDER BY {order}"
        assert [tuple(r) for r in conn.execute(sql)] == [tuple(r) for r in plain.execute(sql)], table
    plain.close()


def test_cli_builds_and_errors_are_one_line(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("features"))
    argv = ["features", "build", "--run", str(run), "--n-tokens", "640", "--saes", "tm2023-128", "--analyses", "none"]
    argv.append("--no-progress")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tm2023-128" in out and "neurons" in out and str(run / "features/features.sqlite") in out
    assert main([*argv[:-3], "--saes", "nope", "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "tm2023-64" in err
    assert main(["features", "build", "--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "monosemantic: error:" in err
    assert main([*argv, "--top-k", "0"]) == 2
    assert "top_k" in capsys.readouterr().err


def test_partial_utf8_tokens_display_as_byte_escapes(tiny_run):
    from monosemantic.data.tokenizer import load_tokenizer
    from monosemantic.features.rows import display_tokens

    tok = load_tokenizer(tiny_run / "tokenizer/tokenizer.json")
    ids = [tok.token_to_id("Ø"), tok.token_to_id("Ġthe") or tok.token_to_id("the")]  # byte 0xd8; a whole word
    shown = display_tokens(tok.decode_batch([[i] for i in ids]), [tok.id_to_token(i) for i in ids])
    assert shown[0] == "\\xd8" and "\ufffd" not in shown[1] and "the" in shown[1]


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["features", "build", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "features.sqlite" in out
    for field in dataclasses.fields(FeaturesConfig):
        assert "--" + field.name.replace("_", "-") in out
    assert "(default: 1048576)" in out and "--no-spill" in out
