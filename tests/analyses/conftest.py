"""A feature database for the tiny run, built by brute force (what the core build writes, minus extras).

Rows follow features/db.py's conventions: `features` with density / max_act / top_tokens, and `top`
examples whose ctx_offset is the context's offset in the validation stream (as
`stream.held_out_contexts` gives it), ctx_pos the max token's position, max_index its index in the
display window.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from monosemantic import paths
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.data.tokens import TokenStore
from monosemantic.features import db
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import load_transformer

HOOK = hooks.MLP_POST
CTX_LEN = 64
SAES = ("tm2023-64", "tm2023-128")


def build_tiny_db(run: Path, path: Path, n_tokens: int = 4096, n_top: int = 4, before: int = 6, after: int = 3):
    """Dictionaries (neurons + the run's SAEs), their features and top examples, into a new DB at `path`."""
    model = load_transformer(run / "transformer/A").eval()
    tok = load_tokenizer(run / "tokenizer/tokenizer.json")
    saes = {n: SparseAutoencoder.load(run / f"sae/A/{HOOK}/{n}") for n in SAES}
    ctx = held_out_contexts(TokenStore(run / "tokens"), CTX_LEN, n_tokens)
    acts, feats = dictionary_activations(model, model.hook_point(HOOK), saes, torch.from_numpy(ctx.tokens))
    conn = db.create(path)
    for name, f, kind in [("neurons", acts, "neurons"), *((n, feats[n], "sae") for n in SAES)]:
        n = f.shape[-1]
        did = db.add_dictionary(
            conn, name=name, model="A", hook=HOOK, kind=kind, n_features=n, n_tokens=ctx.n_tokens,
            architecture=None if kind == "neurons" else "tm2023",
        )  # fmt: skip
        flat = f.reshape(-1, n)
        features, examples = [], []
        for i in range(n):
            col = flat[:, i]
            active = int((col > 0).sum())
            top = torch.topk(col, n_top).indices.tolist() if active else []
            top = [t for t in top if col[t] > 0]
            words = [tok.decode([int(ctx.tokens.flat[t])]) for t in top]
            features.append(
                {
                    "dictionary_id": did, "feature": i, "density": active / ctx.n_tokens, "n_active": active,
                    "mean_act": float(col[col > 0].mean()) if active else None, "max_act": float(col.max()),
                    "top_tokens": " ".join(w.strip() or "␣" for w in words),
                }
            )  # fmt: skip
            for rank, t in enumerate(top):
                c, p = divmod(t, CTX_LEN)
                lo, hi = max(p - before, 0), min(p + after + 1, CTX_LEN)
                examples.append(
                    {
                        "dictionary_id": did, "feature": i, "kind": "top", "interval": None, "rank": rank,
                        "ctx_offset": int(ctx.offsets[c]), "ctx_pos": p, "src": ctx.sources[int(ctx.src[c, p])],
                        "max_act": float(col[t]), "max_index": p - lo,
                        "tokens_json": [tok.decode([int(x)]) for x in ctx.tokens[c, lo:hi]],
                        "acts_json": [round(float(a), 4) for a in f[c, lo:hi, i]],
                    }
                )  # fmt: skip
        db.insert_rows(conn, "features", features)
        db.insert_rows(conn, "examples", examples)
    conn.commit()
    conn.close()


@pytest.fixture(scope="session")
def tiny_db_template(tiny_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_db") / paths.FEATURES_DB
    build_tiny_db(tiny_run, path)
    return path


@pytest.fixture
def tiny_db(tiny_db_template, tmp_path) -> Path:
    """A fresh copy of the tiny run's feature database (tests may write into it)."""
    path = tmp_path / paths.FEATURES_DB
    shutil.copy(tiny_db_template, path)
    return path
