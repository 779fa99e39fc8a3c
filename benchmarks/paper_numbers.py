"""The paper's case-study, universality and automated-interpretability numbers on a finished run.

    python benchmarks/paper_numbers.py case-study   --run runs/full --db /tmp/me/features.sqlite
    python benchmarks/paper_numbers.py universality --run runs/full --db /tmp/me/features.sqlite
    python benchmarks/paper_numbers.py autointerp   --run runs/full --db /tmp/me/features.sqlite

Reads the run (never writes into it); the feature database `--db` is created if missing with the
run's dictionaries registered (the core `features build` pass fills the rest). Prints each table
and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from monosemantic.analyses.loader import ensure_dictionaries
from monosemantic.features import db
from monosemantic.io import write_json
from monosemantic.paths import RunLayout
from monosemantic.runtime import tune_allocator
from monosemantic.transformer.hooks import MLP_POST
from monosemantic.transformer.model import load_transformer


def _open(path: Path, layout: RunLayout, models: list[str]):
    conn = db.create(path) if not path.exists() else __import__("sqlite3").connect(path)
    for m in models:
        if layout.transformer(m).is_dir():
            ensure_dictionaries(conn, layout, m, MLP_POST)
    return conn


def collect_examples(
    conn, layout: RunLayout, n_tokens: int, sae_name: str, n_features: int, model_name: str = "A", seed: int = 0
) -> None:
    """A stand-in for the core build's examples (only for this benchmark): per sampled feature and
    neuron, the 20 top-activating tokens and 10 random tokens of `n_tokens` held-out tokens, each
    with a ±7-token window, plus the features rows autointerp reads."""
    import numpy as np
    import torch

    from monosemantic.analyses.loader import dictionaries, load_saes
    from monosemantic.data.tokenizer import load_tokenizer
    from monosemantic.data.tokens import TokenStore
    from monosemantic.features.stream import dictionary_activations, held_out_contexts
    from monosemantic.features.tokentext import vocab_bytes, vocab_strings
    from monosemantic.paths import TOKENIZER_JSON

    strings = vocab_strings(vocab_bytes(load_tokenizer(layout.tokenizer / TOKENIZER_JSON)))
    rows = {r.name: r for r in dictionaries(conn, model_name)}
    model = load_transformer(layout.transformer(model_name)).eval()
    saes = load_saes(layout, [rows[sae_name]])
    ctx = held_out_contexts(TokenStore(layout.tokens), model.cfg.ctx_len, n_tokens)
    rng = np.random.default_rng(seed)
    hook = model.hook_point(MLP_POST)
    fired = {"neurons": 0, sae_name: 0}
    for lo, hi in ctx.batches(16):  # which features fire at all on these tokens (most of the 4096 never do)
        neurons, feats = dictionary_activations(model, hook, saes, torch.from_numpy(ctx.tokens[lo:hi]))
        fired["neurons"] = fired["neurons"] + (neurons.reshape(-1, neurons.shape[-1]) > 0).sum(0)
        fired[sae_name] = fired[sae_name] + (feats[sae_name].reshape(-1, feats[sae_name].shape[-1]) > 0).sum(0)
    alive = {d: np.flatnonzero(f.numpy() > 0) for d, f in fired.items()}
    cols = {d: np.sort(rng.choice(a, min(n_features, len(a)), replace=False)) for d, a in alive.items()}
    print(
        {
            d: f"{len(a)} of {len(f)} fire on {ctx.n_tokens:,} tokens"
            for (d, a), f in zip(alive.items(), fired.values(), strict=True)
        }
    )
    acts = {d: [] for d in cols}
    for lo, hi in ctx.batches(16):
        neurons, feats = dictionary_activations(
            model, model.hook_point(MLP_POST), saes, torch.from_numpy(ctx.tokens[lo:hi])
        )
        acts["neurons"].append(neurons.reshape(-1, neurons.shape[-1])[:, cols["neurons"]])
        acts[sae_name].append(feats[sae_name].reshape(-1, feats[sae_name].shape[-1])[:, cols[sae_name]])
    T = ctx.tokens.shape[1]
    flat = ctx.tokens.reshape(-1)
    for d, c in cols.items():
        a = torch.cat(acts[d]).numpy()
        feat_rows, ex_rows = [], []
        for j, f in enumerate(c):
            col = a[:, j]
            n_active = int((col > 0).sum())
            feat_rows.append({"dictionary_id": rows[d].id, "feature": int(f), "density": n_active / len(col),
                              "n_active": n_active, "max_act": float(col.max())})  # fmt: skip
            if n_active == 0:
                continue
            top = np.argsort(-col)[:20]
            rand = rng.choice(len(col), 10, replace=False)
            for kind, picks in (("top", top), ("random", rand)):
                for rank, i in enumerate(picks):
                    ci, pos = divmod(int(i), T)
                    lo, hi = max(0, pos - 7), min(T, pos + 8)
                    ex_rows.append({"dictionary_id": rows[d].id, "feature": int(f), "kind": kind, "interval": None,
                                    "rank": rank, "ctx_offset": int(ctx.offsets[ci]), "ctx_pos": pos, "src": None,
                                    "max_act": float(col[i]), "max_index": pos - lo,
                                    "tokens_json": [strings[t] for t in flat[ci * T + lo : ci * T + hi]],
                                    "acts_json": col[ci * T + lo : ci * T + hi].tolist()})  # fmt: skip
        db.insert_rows(conn, "features", feat_rows)
        db.insert_rows(conn, "examples", ex_rows)
    conn.commit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["case-study", "universality", "autointerp"])
    p.add_argument("--run", type=Path, default=Path("runs/full"))
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--n-tokens", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument(
        "--sae", default="tm2023-4096", help="autointerp: the SAE whose features are scored beside the neurons"
    )
    p.add_argument("--models", default="A", help="autointerp: models scored (A,A-shuffled for the control)")
    p.add_argument("--n-features", type=int, default=300, help="autointerp: features (and neurons) sampled")
    args = p.parse_args()
    tune_allocator()
    layout = RunLayout(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.what == "case-study":
        from monosemantic.analyses.proxies import ProxyConfig, format_case_study, run_proxies

        conn = _open(args.db, layout, ["A"])
        summary = run_proxies(conn, layout, ProxyConfig(n_tokens=args.n_tokens, batch_size=16))
        print(format_case_study(summary))
    elif args.what == "universality":
        from monosemantic.analyses.universality import UniversalityConfig, format_universality, run_universality

        conn = _open(args.db, layout, ["A", "B"])
        summary = run_universality(conn, layout, UniversalityConfig(n_tokens=args.n_tokens))
        print(format_universality(summary))
    else:
        from monosemantic.analyses.autointerp import AutoInterpConfig, format_interpretability, run_autointerp

        models = args.models.split(",")
        conn = _open(args.db, layout, models)
        if conn.execute("SELECT count(*) FROM examples").fetchone()[0] == 0:
            for m in models:
                collect_examples(conn, layout, args.n_tokens, args.sae, args.n_features, m)
        cfg = AutoInterpConfig(models=tuple(m for m in args.models.split(",") if m), max_features=args.n_features)
        summary = run_autointerp(conn, layout, cfg)
        print(format_interpretability(summary))
    seconds = time.perf_counter() - t0
    print(f"{seconds:.0f} s")
    out = args.out / f"{args.what.replace('-', '_')}.json"
    write_json(out, {"run": str(args.run), "seconds": seconds, "summary": summary})


if __name__ == "__main__":
    main()
