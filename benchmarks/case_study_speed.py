"""Time the case-study pass (analyses/proxies.py) by component, and end to end, on this machine.

    PYTHONPATH=src python benchmarks/case_study_speed.py --source runs/default --work /tmp/cs-bench --n-tokens 131072

`--source` is a run folder with `tokenizer/` and `tokens/` (any finished `tokenize` stage). With
`--trained`, its model A and its SAEs are used; otherwise the work folder gets a model of the
paper's shape (d_mlp 512) and SAEs of `--sizes` with random weights, their encoder biases set so
that about 1 % of features fire (the work, not the result, is what is timed). Per batch of
`--batch-size` contexts it times: the forward to the hook, the proxies' LLR, the SAE encoders in
float32 (and bfloat16, for reference), the streamed moments (casestudy.Moments) and, for
comparison, the general accumulator (correlate.PearsonAccumulator) the pass used before. Then it
runs `run_proxies` end to end. Per-component seconds are extrapolated to 1,048,576 tokens. Prints
a table and writes benchmarks/results/case_study_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import torch

from monosemantic import paths
from monosemantic.activations.capture import capture
from monosemantic.analyses.casestudy import Moments
from monosemantic.analyses.correlate import PearsonAccumulator
from monosemantic.analyses.proxies import ProxyConfig, encoder, run_proxies
from monosemantic.analyses.proxy_defs import BUILTIN, ProxySet, select
from monosemantic.data.tokenizer import load_tokenizer
from monosemantic.data.tokens import TokenStore
from monosemantic.features import db
from monosemantic.features.stream import held_out_contexts
from monosemantic.features.tokentext import vocab_bytes
from monosemantic.io import save_tensors, write_config, write_json
from monosemantic.paths import RunLayout
from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.transformer.hooks import MLP_POST
from monosemantic.transformer.model import KIND, Transformer, TransformerConfig, load_transformer

TARGET = 1_048_576


def build_work(source: Path, work: Path, sizes: list[int], trained: bool) -> None:
    """`work`: links to the source's tokenizer and tokens (and model and SAEs if `trained`), a database."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    links = ("tokenizer", "tokens", "transformer", "sae") if trained else ("tokenizer", "tokens")
    for name in links:
        (work / name).symlink_to((source / name).resolve(), target_is_directory=True)
    store = TokenStore(work / "tokens")
    if not trained:
        torch.manual_seed(0)
        cfg = TransformerConfig(vocab_size=store.vocab_size)
        model = Transformer(cfg).eval()
        folder = work / "transformer/A"
        folder.mkdir(parents=True)
        save_tensors(folder / paths.MODEL_WEIGHTS, model.state_dict())
        write_config(folder / paths.CONFIG, KIND, {"model": cfg.__dict__, "name": "A"})
        ctx = held_out_contexts(store, cfg.ctx_len, 8 * cfg.ctx_len)
        with torch.inference_mode():
            x = capture(model, torch.from_numpy(ctx.tokens), model.hook_point(MLP_POST)).reshape(-1, cfg.d_mlp)
        for n in sizes:
            sae = SparseAutoencoder(SAEConfig(cfg.d_mlp, n))
            with torch.no_grad():
                sae.b_enc -= torch.quantile(sae.pre_activations(x), 0.99, dim=0)  # ~1 % of features fire
            sae.save(work / f"sae/A/{MLP_POST}/tm2023-{n}")
    model = load_transformer(work / "transformer/A")
    conn = db.create(work / "base.sqlite")
    db.add_dictionary(conn, name="neurons", model="A", hook=MLP_POST, kind="neurons",
                      n_features=model.cfg.d_mlp, n_tokens=0)  # fmt: skip
    for sae_dir in sorted((work / f"sae/A/{MLP_POST}").iterdir()):
        n = SparseAutoencoder.load(sae_dir).cfg.n_features
        db.add_dictionary(conn, name=sae_dir.name, model="A", hook=MLP_POST, kind="sae", n_features=n, n_tokens=0)
    conn.commit()
    conn.close()


def components(work: Path, n_tokens: int, batch_size: int) -> dict[str, float]:
    """Seconds per component over `n_tokens` held-out tokens, and the bf16 encoders' largest |Δr|."""
    store = TokenStore(work / "tokens")
    model = load_transformer(work / "transformer/A").eval()
    saes = {p.name: SparseAutoencoder.load(p).eval() for p in sorted((work / f"sae/A/{MLP_POST}").iterdir())}
    tok_bytes = vocab_bytes(load_tokenizer(work / "tokenizer/tokenizer.json"))
    pset = ProxySet(select(",".join(BUILTIN)), tok_bytes, store.train.all_tokens(2_000_000))
    ctx = held_out_contexts(store, model.cfg.ctx_len, n_tokens)
    synthetic = np.array([s.startswith("synthetic/") for s in ctx.sources])[ctx.src]
    P = len(pset.proxies)
    enc32 = {n: encoder(s) for n, s in saes.items()}
    bf = {n: (s.W_enc.detach().bfloat16(), s.b_enc.detach(), s.b_dec.detach()) for n, s in saes.items()}
    widths = {n: s.cfg.n_features for n, s in saes.items()}
    mom, mom_bf = Moments(widths, P, 2), Moments(widths, P, 2)
    old = {n: PearsonAccumulator(s.cfg.n_features, P) for n, s in saes.items()}
    t = dict.fromkeys(("forward", "llr", "encode_f32", "moments", "old_accumulator", "encode_bf16"), 0.0)
    # CPU seconds of this process: on a shared machine, wall time measures the neighbours too.
    clock = time.process_time
    with torch.inference_mode():
        for lo, hi in ctx.batches(batch_size):
            ids = ctx.tokens[lo:hi]
            start = clock()
            x = capture(model, torch.from_numpy(ids), model.hook_point(MLP_POST))
            x = x.reshape(-1, x.shape[-1]).float()
            t["forward"] += clock() - start
            start = clock()
            val = pset.values(pset.llr(ids).reshape(P, -1))
            t["llr"] += clock() - start
            y = torch.from_numpy(np.ascontiguousarray(val.T))
            member = torch.from_numpy(np.stack([np.ones(len(y), dtype=bool), ~synthetic[lo:hi].reshape(-1)]))
            start = clock()
            mom.batch(y, member)
            t["moments"] += clock() - start
            mom_bf.batch(y, member)
            for n in saes:
                start = clock()
                f = enc32[n](x)
                t["encode_f32"] += clock() - start
                start = clock()
                mom.add(n, f)
                t["moments"] += clock() - start
                start = clock()
                old[n].update(f, y)
                t["old_accumulator"] += clock() - start
                W, b, b_dec = bf[n]
                start = clock()
                fb = torch.relu_(((x - b_dec).bfloat16() @ W).float() + b)
                t["encode_bf16"] += clock() - start
                mom_bf.add(n, fb)
    out = {f"{k}_cpu_s_per_1M": v * TARGET / ctx.n_tokens for k, v in t.items()}
    r32 = {n: np.nan_to_num(mom.corr(n), nan=-2) for n in saes}
    r16 = {n: np.nan_to_num(mom_bf.corr(n), nan=-2) for n in saes}
    dr = max(float(np.abs(r32[n] - r16[n]).max()) for n in saes)
    same = all((r32[n].argmax(1) == r16[n].argmax(1)).all() for n in saes)
    return {**out, "bf16_max_abs_dr": dr, "bf16_same_best_features": bool(same), "n_tokens": ctx.n_tokens}


def end_to_end(work: Path, n_tokens: int, batch_size: int) -> dict[str, float]:
    path = work / "features.sqlite"
    shutil.copy(work / "base.sqlite", path)
    conn = sqlite3.connect(path)
    start, cpu = time.perf_counter(), time.process_time()
    summary = run_proxies(conn, RunLayout(work), ProxyConfig(n_tokens=n_tokens, batch_size=batch_size), progress=False)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    sec = summary["seconds"]
    per = TARGET / summary["sample"]["n_tokens"]
    return {"n_tokens": summary["sample"]["n_tokens"], "total_s": total, "cpu_s": cpu,
            **{f"{k}_s": v for k, v in sec.items()},
            "passes_s_per_1M": (sec["pass1"] + sec["pass2"]) * per,
            "passes_cpu_s_per_1M": (sec["pass1_cpu"] + sec["pass2_cpu"]) * per,
            "fixed_s": total - sec["pass1"] - sec["pass2"] - sec["split_share"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/case-study-bench"))
    p.add_argument("--trained", action="store_true", help="use the source's model A and SAEs")
    p.add_argument("--sizes", default="512,1024,2048,4096")
    p.add_argument("--n-tokens", type=int, default=131_072)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "case_study_speed.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    build_work(args.source, args.work, [int(s) for s in args.sizes.split(",")], args.trained)
    comp = components(args.work, args.n_tokens, args.batch_size)
    e2e = end_to_end(args.work, args.n_tokens, args.batch_size)
    load = os.getloadavg()[0]
    threads = torch.get_num_threads()
    print(f"case-study pass on {comp['n_tokens']:,} tokens, per {TARGET:,} (torch threads {threads}, load {load:.1f})")
    print(f"{'component':<28} {'CPU s per 1M tokens':>20}")
    for k, v in comp.items():
        if k.endswith("_cpu_s_per_1M"):
            print(f"{k.removesuffix('_cpu_s_per_1M'):<28} {v:>20.1f}")
    print(f"bf16 encoders: largest |Δr| {comp['bf16_max_abs_dr']:.2e}, same best: {comp['bf16_same_best_features']}")
    print(f"run_proxies: {e2e['total_s']:.1f} s on {e2e['n_tokens']:,} tokens (pass 1 {e2e['pass1_s']:.1f} s,"
          f" pass 2 {e2e['pass2_s']:.1f} s, split share {e2e['split_share_s']:.1f} s, setup {e2e['fixed_s']:.1f} s);"
          f" both passes per 1M tokens: {e2e['passes_s_per_1M']:.1f} s wall,"
          f" {e2e['passes_cpu_s_per_1M']:.1f} s CPU")  # fmt: skip
    machine = {"cpu": platform.processor() or platform.machine(), "threads": threads, "load_average": load}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"machine": machine, "source": str(args.source), "trained": args.trained,
                          "sizes": args.sizes, "components": comp, "end_to_end": e2e})  # fmt: skip


if __name__ == "__main__":
    main()
