"""Time the three analyses (ablate + pinned, split + automata, map) on a full-size run.

    PYTHONPATH=src python benchmarks/analyses_timing.py --run /work/main/runs/full --work /tmp/interp-a/bench

The source run is only read: the work folder gets symlinks to its tokenizer, tokens, transformer
and SAEs plus a feature database of its own. Until the core `features build` is merged, that
database is made here by a streaming brute-force pass (dictionaries, features with density /
max_act / top_tokens, `top` examples with windows of 20 tokens before and 10 after), which is
timed separately. Prints a table and writes benchmarks/results/analyses_timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

import torch

from monosemantic import paths
from monosemantic.analyses.ablation import AblationConfig, run_ablation
from monosemantic.analyses.featuremap import MapConfig, run_map
from monosemantic.analyses.splitting import SplitConfig, run_split
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.data.tokens import TokenStore
from monosemantic.features import db
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.io import write_json
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.hooks import MLP_POST
from monosemantic.transformer.model import load_transformer


def build_db(run: Path, path: Path, n_tokens: int, n_top: int, before: int = 20, after: int = 10) -> None:
    """A feature database of neurons + every SAE at MLP_POST, by one streaming pass over held-out tokens."""
    model = load_transformer(run / "transformer/A").eval()
    tok = load_tokenizer(run / "tokenizer/tokenizer.json")
    vocab = [tok.decode([i]) for i in range(model.cfg.vocab_size)]
    names = sorted((p.name for p in (run / f"sae/A/{MLP_POST}").iterdir()), key=lambda s: int(s.split("-")[-1]))
    saes = {n: SparseAutoencoder.load(run / f"sae/A/{MLP_POST}/{n}") for n in names}
    L = model.cfg.ctx_len
    ctx = held_out_contexts(TokenStore(run / "tokens"), L, n_tokens)
    sizes = {"neurons": model.cfg.d_mlp, **{n: s.cfg.n_features for n, s in saes.items()}}
    stats = {
        n: {
            "count": torch.zeros(k, dtype=torch.int64),
            "max": torch.zeros(k),
            "sum": torch.zeros(k, dtype=torch.float64),
            "top_v": torch.zeros(0, k),
            "top_i": torch.zeros(0, k, dtype=torch.int64),
        }
        for n, k in sizes.items()
    }
    with torch.inference_mode():
        for lo, hi in ctx.batches(32):
            acts, feats = dictionary_activations(
                model, model.hook_point(MLP_POST), saes, torch.from_numpy(ctx.tokens[lo:hi])
            )
            for n, f in {"neurons": acts, **feats}.items():
                f = f.reshape(-1, f.shape[-1]).float()
                s = stats[n]
                s["count"] += (f > 0).sum(0)
                s["max"] = torch.maximum(s["max"], f.max(0).values)
                s["sum"] += f.sum(0).double()
                v, i = torch.topk(f, min(n_top, len(f)), dim=0)
                allv, alli = torch.cat([s["top_v"], v]), torch.cat([s["top_i"], i + lo * L])
                keep = torch.topk(allv, min(n_top, len(allv)), dim=0).indices
                s["top_v"], s["top_i"] = allv.gather(0, keep), alli.gather(0, keep)
    conn = db.create(path)
    flat_tokens = ctx.tokens.reshape(-1)
    for n, k in sizes.items():
        did = db.add_dictionary(
            conn, name=n, model="A", hook=MLP_POST, kind="neurons" if n == "neurons" else "sae",
            n_features=k, n_tokens=ctx.n_tokens, architecture=None if n == "neurons" else "tm2023",
        )  # fmt: skip
        s, feats_rows, ex_rows = stats[n], [], []
        for i in range(k):
            c_i = int(s["count"][i])
            tops = [(float(v), int(t)) for v, t in zip(s["top_v"][:, i], s["top_i"][:, i], strict=True) if v > 0]
            words = Counter(vocab[int(flat_tokens[t])].strip() or "␣" for _, t in tops)
            feats_rows.append(
                {
                    "dictionary_id": did, "feature": i, "density": c_i / ctx.n_tokens, "n_active": c_i,
                    "mean_act": float(s["sum"][i]) / c_i if c_i else None, "max_act": float(s["max"][i]),
                    "top_tokens": " ".join(w for w, _ in words.most_common(5)),
                }
            )  # fmt: skip
            for rank, (v, t) in enumerate(tops):
                c, p = divmod(t, L)
                w0, w1 = max(p - before, 0), min(p + after + 1, L)
                ex_rows.append(
                    {
                        "dictionary_id": did, "feature": i, "kind": "top", "interval": None, "rank": rank,
                        "ctx_offset": int(ctx.offsets[c]), "ctx_pos": p, "src": None, "max_act": v,
                        "max_index": p - w0, "tokens_json": [vocab[int(x)] for x in ctx.tokens[c, w0:w1]],
                        "acts_json": [],
                    }
                )  # fmt: skip
        db.insert_rows(conn, "features", feats_rows)
        db.insert_rows(conn, "examples", ex_rows)
    conn.commit()
    conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/full"))
    p.add_argument("--work", type=Path, default=Path("/tmp/interp-bench"))
    p.add_argument("--db-tokens", type=int, default=262_144, help="held-out tokens of the brute-force DB")
    p.add_argument("--n-top", type=int, default=20, help="top examples per feature")
    p.add_argument("--split-tokens", type=int, default=1_000_000)
    p.add_argument("--only", default="ablate,split,map")
    p.add_argument("--ablate-dicts", default="tm2023-4096", help="dictionaries to ablate and pin ('' = all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/analyses_timing.json"))
    args = p.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("tokenizer", "tokens", "transformer", "sae"):
        if not (work / sub).exists():
            os.symlink((args.run / sub).resolve(), work / sub)
    template = work / "features_template.sqlite"
    times: dict[str, float] = {}
    if not template.exists():
        t0 = time.perf_counter()
        build_db(work, template, args.db_tokens, args.n_top)
        times["build_db (benchmark's brute force)"] = time.perf_counter() - t0
    path = work / "features" / paths.FEATURES_DB
    path.parent.mkdir(exist_ok=True)
    shutil.copy(template, path)
    layout, results = RunLayout(work), {}
    ablate_dicts = tuple(d for d in args.ablate_dicts.split(",") if d)
    steps = {
        "ablate": lambda c: run_ablation(c, layout, AblationConfig(dictionaries=ablate_dicts), progress=True),
        "split": lambda c: run_split(c, layout, SplitConfig(n_tokens=args.split_tokens), progress=True),
        "map": lambda c: run_map(c, layout, MapConfig(), progress=True),
    }
    for name in args.only.split(","):
        conn = sqlite3.connect(path)
        t0, c0 = time.perf_counter(), time.process_time()
        results[name] = steps[name](conn)
        times[name] = time.perf_counter() - t0
        times[name + " (CPU s, all threads)"] = time.process_time() - c0
        conn.close()
        print(name, results[name], f"{times[name]:.1f} s", flush=True)
    print(f"{'step':<40} {'seconds':>8}")
    for k, v in times.items():
        print(f"{k:<40} {v:8.1f}")
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "date": "2026-11-25",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "run": str(args.run),
        "db_tokens": args.db_tokens,
        "n_top": args.n_top,
        "split_tokens": args.split_tokens,
        "ablate_dicts": args.ablate_dicts,
        "load_average_at_end": os.getloadavg(),
        "seconds": times,
        "results": results,
    }
    write_json(args.out, record)


if __name__ == "__main__":
    main()
