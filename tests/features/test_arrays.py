"""`features.build_from_arrays` (arrays.py) and `browser.start` (server.py): a feature database and a
browser from token ids and activations alone, no run folder."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import monosemantic.browser
import monosemantic.features
from monosemantic.errors import UserError
from monosemantic.features.config import FeaturesConfig
from monosemantic.sae import SAEConfig, SparseAutoencoder

D, VOCAB = 8, 12


def _arrays(n_ctx: int = 6, ctx_len: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and activations where token t writes direction t % D with magnitude 1 + t / VOCAB."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (n_ctx, ctx_len), generator=g)
    acts = torch.nn.functional.one_hot(tokens % D, D).float() * (1 + tokens / VOCAB)[..., None]
    return tokens, acts


def _identity_sae() -> SparseAutoencoder:
    """Feature i reads and writes dimension i: its activation is acts[..., i]."""
    sae = SparseAutoencoder(SAEConfig(D, D))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(D))
        sae.W_dec.copy_(torch.eye(D))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_database_from_arrays_holds_each_features_top_examples(tmp_path: Path) -> None:
    tokens, acts = _arrays()
    words = [f"w{i}" for i in range(VOCAB)]
    path = monosemantic.features.build_from_arrays(
        tokens, acts, {"identity": _identity_sae()}, tokenizer=words, out=tmp_path / "f.sqlite"
    )
    with sqlite3.connect(path) as conn:
        dicts = conn.execute("SELECT id, name, kind, n_features, n_tokens FROM dictionaries ORDER BY id").fetchall()
        assert [(n, k, f, t) for _, n, k, f, t in dicts] == [
            ("neurons", "neurons", D, tokens.numel()),
            ("identity", "sae", D, tokens.numel()),
        ]
        sae_id = dicts[1][0]
        for feature in range(D):  # the top example of feature i is its largest token: the highest t with t % D == i
            best = max(t for t in range(VOCAB) if t % D == feature and (tokens == t).any())
            row = conn.execute(
                "SELECT tokens_json, acts_json, max_index, max_act FROM examples"
                " WHERE dictionary_id = ? AND feature = ? AND kind = 'top' ORDER BY rank LIMIT 1",
                (sae_id, feature),
            ).fetchone()
            toks, vals = json.loads(row[0]), json.loads(row[1])
            assert toks[row[2]] == words[best] and row[3] == pytest.approx(1 + best / VOCAB, abs=1e-3)
            assert max(vals) == pytest.approx(row[3], abs=1e-3)
        density = conn.execute(
            "SELECT density FROM features WHERE dictionary_id = ? ORDER BY feature", (sae_id,)
        ).fetchall()
    expected = [float(((tokens % D) == i).float().mean()) for i in range(D)]
    assert [d for (d,) in density] == pytest.approx(expected)


def test_flat_inputs_other_tokenizers_and_the_browser(tmp_path: Path) -> None:
    tokens, acts = _arrays(n_ctx=4, ctx_len=32)
    path = monosemantic.features.build_from_arrays(
        tokens.reshape(-1).numpy(),
        acts.reshape(-1, D).numpy(),
        [_identity_sae()],
        tokenizer=lambda i: f"<{i * 10}>",
        out=tmp_path / "flat.sqlite",
        ctx_len=32,
        neurons=False,
        cfg=FeaturesConfig(top_k=3),
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM dictionaries").fetchall() == [("tm2023-8",)]
        top = conn.execute("SELECT COUNT(*) FROM examples WHERE kind = 'top'").fetchone()[0]
        assert top <= 3 * D
    server = monosemantic.browser.start(path)
    try:
        with urllib.request.urlopen(server.url + "api/dict/1/feature/3", timeout=30) as r:
            page = json.load(r)
        assert page["feature"]["feature"] == 3
        with urllib.request.urlopen(server.url, timeout=30) as r:
            assert b"tm2023-8" in r.read()
    finally:
        server.stop()
    assert not server._thread.is_alive()


def test_bad_arrays_are_one_line_errors(tmp_path: Path) -> None:
    tokens, acts = _arrays()
    build = monosemantic.features.build_from_arrays
    with pytest.raises(UserError, match="do not match token ids"):
        build(tokens, acts[:, :-1], _identity_sae(), out=tmp_path / "a.sqlite")
    with pytest.raises(UserError, match="reads 8 dims, the activations have 4"):
        build(tokens, acts[..., :4], _identity_sae(), out=tmp_path / "a.sqlite")
    with pytest.raises(UserError, match="NaN"):
        build(tokens, acts * np.nan, _identity_sae(), out=tmp_path / "a.sqlite")
    with pytest.raises(UserError, match="strings for token ids"):
        build(tokens, acts, _identity_sae(), tokenizer=["a"], out=tmp_path / "a.sqlite")
    (tmp_path / "a.sqlite").write_text("x")
    with pytest.raises(UserError, match="exists"):
        build(tokens, acts, _identity_sae(), out=tmp_path / "a.sqlite")
    assert (tmp_path / "a.sqlite").read_text() == "x"  # never half-written or deleted
