"""Every GPU path against the CPU, on whatever CUDA device is present; on a CPU-only machine, the CPU halves.

    PYTHONPATH=src python benchmarks/gpu_check.py               # full sizes
    PYTHONPATH=src python benchmarks/gpu_check.py --quick       # small sizes (tests/test_gpu_check.py in CI)

Each check computes its CPU reference, makes the comparison that needs only the CPU, and then, where
CUDA is present, runs the same path on the GPU and compares it with the CPU's result:

- harvest: a random 8-layer Llama (Hugging Face) harvested by the harvest stage into float32 stores;
  CPU: a bfloat16 subject against float32; CUDA: float32 (TF32 off) and bfloat16 against the CPU's
  float32, and tokens/s on both;
- sae steps: the paper recipe's gradients by the dense (autograd) and the sparse step; CPU: sparse
  against dense; CUDA: both against the CPU's dense; then the crossover *on each device*: dense and
  sparse step times at several fractions of features firing, and the largest fraction at which the
  sparse step still wins, beside the switch `step="auto"` uses (`sparse_step.SPARSE_L0_FRACTION`,
  measured on the CPU);
- resampling: per-input losses (CPU: the sparse scoring against the dense one; CUDA: against the
  CPU's), and `resample_dead_` with the same draw (the loss is non-zero on exactly the inputs drawn);
- features build: a run with a random one-layer model and SAE; CPU: the spill against re-encoding;
  CUDA: the database against the CPU's (densities, maxima, top examples);
- nccl: `sae train` by 2 processes under torchrun against 1 (CPU: gloo; CUDA: NCCL, with 2 GPUs);
- saelens (CUDA only): `sae_vs_saelens.py --device cuda`, act/s of both tools on the same card (the
  CPU's numbers are docs/benchmarks.md's).

Prints one row per comparison (ok / FAIL / skipped, with the reason) and writes
benchmarks/results/gpu_check.json; exits 1 if a comparison fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic import paths
from monosemantic.io import write_json

HERE = Path(__file__).parent
Row = dict[str, Any]
ROWS: list[Row] = []


def report(check: str, part: str, ok: bool | None, detail: str, **numbers: Any) -> None:
    """One comparison; `ok=None` is skipped, `detail` then says why."""
    status = "skipped" if ok is None else ("ok" if ok else "FAIL")
    ROWS.append({"check": check, "part": part, "status": status, "detail": detail, **numbers})
    print(f"{check:<15} {part:<22} {status:<8} {detail}", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-30))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


# -- a small run directory: text, tokenizer, tokens ----------------------------------------------------


def documents(n: int, seed: int = 0) -> list[tuple[str, str]]:
    r = random.Random(seed)
    words = ["the", "whale", "sea", "ship", "captain", "moon", "storm", "rope", "map", "coin", "crew", "old"]
    docs = []
    for i in range(n):
        if i % 3 == 0:
            text = " ".join(f"{r.randint(0, 999)}" for _ in range(120))
        else:
            text = " ".join(r.choice(words) for _ in range(200)) + "."
        docs.append(("prose/gen" if i % 3 else "synthetic/num", text))
    return docs


def make_tokens(root: Path, n_docs: int) -> paths.RunLayout:
    from monosemantic.data.tokenizer import save_tokenizer, train_tokenizer
    from monosemantic.data.tokens import TokensConfig, write_tokens

    layout = paths.RunLayout(root)
    docs = documents(n_docs)
    tok = train_tokenizer((t for _, t in docs), vocab_size=300)
    layout.tokenizer.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, layout.tokenizer / paths.TOKENIZER_JSON)
    write_tokens(iter(docs), tok, layout.tokens, TokensConfig(val_fraction=0.2), progress=False)
    return layout


# -- the checks ----------------------------------------------------------------------------------------


def check_harvest(layout: paths.RunLayout, quick: bool, cuda: bool) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from monosemantic.activations.harvest import HarvestConfig, harvest
    from monosemantic.data.tokens import TokenStore
    from monosemantic.transformer.hf import HFSubject

    torch.manual_seed(0)
    d = 64 if quick else 256
    cfg = LlamaConfig(vocab_size=300, hidden_size=d, intermediate_size=3 * d, num_hidden_layers=8,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    split = TokenStore(layout.tokens).train
    hcfg = HarvestConfig(n_tokens=2048 if quick else 32768, positions_per_context=32, batch_contexts=16,
                         store_dtype="float32", shard_rows=1 << 20)  # fmt: skip

    def run(device: str, dtype: torch.dtype, name: str) -> tuple[np.ndarray, float]:
        model = HFSubject(copy.deepcopy(hf), 64, "random Llama").to(device=device, dtype=dtype)  # hf stays float32
        module = model.find_module("model.layers.2.mlp.down_proj")
        out = layout.root / "harvest" / name
        body, _ = timed(lambda: harvest(model, split, module, 64, hcfg, out, False, True, which="input"), device)
        return np.load(out / body["shards"][0]["acts"]), body["tokens_per_s"]

    ref, cpu_tps = run("cpu", torch.float32, "cpu-float32")
    bf, _ = run("cpu", torch.bfloat16, "cpu-bfloat16")
    e = rel(torch.from_numpy(bf), torch.from_numpy(ref))
    report("harvest", "cpu bfloat16 vs float32", 0 < e < 0.02, f"rel. error {e:.2e} (< 2e-2)", cpu_tokens_per_s=cpu_tps)
    if not cuda:
        report("harvest", "cuda vs cpu", None, "no CUDA device")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    got, gpu_tps = run("cuda", torch.float32, "cuda-float32")
    e = rel(torch.from_numpy(got), torch.from_numpy(ref))
    report("harvest", "cuda float32 vs cpu", e < 1e-4, f"rel. error {e:.2e} (< 1e-4); {gpu_tps:,.0f} vs "
           f"{cpu_tps:,.0f} tokens/s", cuda_tokens_per_s=gpu_tps, cpu_tokens_per_s=cpu_tps)  # fmt: skip
    got, bf_tps = run("cuda", torch.bfloat16, "cuda-bfloat16")
    e = rel(torch.from_numpy(got), torch.from_numpy(ref))
    report("harvest", "cuda bfloat16 vs cpu", e < 0.02, f"rel. error {e:.2e} (< 2e-2); {bf_tps:,.0f} tokens/s",
           cuda_bf16_tokens_per_s=bf_tps)  # fmt: skip


def sae_at(d: int, m: int, fraction: float, x: torch.Tensor):
    """A paper-recipe SAE whose features each fire on about `fraction` of `x`."""
    from monosemantic.sae.model import SAEConfig, SparseAutoencoder

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d, m))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
        sae.b_enc.copy_(-torch.quantile((x[:1024] - sae.b_dec) @ sae.W_enc, 1 - fraction, dim=0))
    return sae


def grads(sae) -> list[torch.Tensor]:
    return [p.grad.detach().cpu().clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]


def check_sae_steps(quick: bool, cuda: bool) -> None:
    from monosemantic.sae.sparse_step import SPARSE_L0_FRACTION, dense_gradients, sparse_gradients
    from monosemantic.sae.train import SAETrainConfig

    batch, d, m = (512, 64, 1024) if quick else (4096, 512, 4096)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(0)).relu_()
    cfg = SAETrainConfig(l1_coeff=0.008, batch_size=batch)
    sae = sae_at(d, m, 1 / 32, x)
    dead = torch.zeros(m, dtype=torch.bool)
    dense_gradients(sae, cfg, x, 1, dead)
    ref = grads(sae)
    sparse_gradients(sae, cfg, x, 1, dead)
    e = max(rel(a, b) for a, b in zip(grads(sae), ref, strict=True))
    report("sae steps", "cpu sparse vs dense", e < 1e-4, f"largest rel. gradient error {e:.2e} (< 1e-4)")
    devices = ["cpu"]
    if cuda:
        devices.append("cuda")
        g = sae.to("cuda")
        for name, step in (("dense", dense_gradients), ("sparse", sparse_gradients)):
            step(g, cfg, x.cuda(), 1, dead.cuda())
            e = max(rel(a, b) for a, b in zip(grads(g), ref, strict=True))
            report("sae steps", f"cuda {name} vs cpu dense", e < 1e-4, f"largest rel. gradient error {e:.2e} (< 1e-4)")
    else:
        report("sae steps", "cuda vs cpu", None, "no CUDA device")
    fractions = [1 / 64, 1 / 8] if quick else [1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2]
    n_steps = 2 if quick else 7
    for device in devices:  # the crossover is measured per device type, never assumed from the CPU's
        xd, deadd, wins = x.to(device), dead.to(device), []
        for fraction in fractions:
            s = sae_at(d, m, fraction, x).to(device)
            t: dict[str, list[float]] = {"dense": [], "sparse": []}
            for i in range(n_steps + 1):
                for name, step in (("dense", dense_gradients), ("sparse", sparse_gradients)):
                    _, sec = timed(lambda s=s, step=step, xd=xd, deadd=deadd: step(s, cfg, xd, 1, deadd), device)
                    if i:  # the first round warms up
                        t[name].append(sec)
            ratio = statistics.median(t["dense"]) / statistics.median(t["sparse"])
            wins.append({"fraction": fraction, "dense_over_sparse": ratio})
        best = max((w["fraction"] for w in wins if w["dense_over_sparse"] > 1), default=0.0)
        table = ", ".join(f"1/{round(1 / w['fraction'])}: {w['dense_over_sparse']:.2f}x" for w in wins)
        report("sae steps", f"{device} crossover", True, f"dense/sparse time {table}; sparse wins up to {best:g} "
               f"(auto switches at {SPARSE_L0_FRACTION:g})", crossover=wins, sparse_wins_up_to=best)  # fmt: skip


def check_resampling(quick: bool, cuda: bool) -> None:
    from monosemantic.sae.resample import _dense_loss, resample_dead_, resample_losses

    batch, d, m = (512, 64, 1024) if quick else (4096, 512, 4096)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(1)).relu_()
    sae = sae_at(d, m, 1 / 64, x)
    ref = _dense_loss(sae, x, 0.008).detach()
    e = rel(resample_losses(sae, x, 0.008), ref)
    report("resampling", "cpu sparse vs dense loss", e < 1e-5, f"rel. error {e:.2e} (< 1e-5)")
    dead = torch.zeros(m, dtype=torch.bool)
    dead[:: m // 16] = True
    n_dead = int(dead.sum())
    loss = torch.zeros(batch)
    loss[torch.randperm(batch, generator=torch.Generator().manual_seed(2))[:n_dead]] = 1.0  # the draw is fixed

    def resampled(device: str) -> list[torch.Tensor]:
        s = sae_at(d, m, 1 / 64, x).to(device)
        gen = torch.Generator(device).manual_seed(0)
        picked = resample_dead_(s, None, dead.to(device), x.to(device), loss.to(device), generator=gen)
        order = picked.cpu().argsort()  # the same inputs in a device-dependent order: compare by input
        dd = dead.nonzero().squeeze(1)[order]
        return [s.W_dec.detach().cpu()[dd], s.W_enc.detach().cpu()[:, dd], s.W_dec.detach().cpu()[~dead]]

    cpu = resampled("cpu")
    if not cuda:
        report("resampling", "cuda vs cpu", None, "no CUDA device")
        return
    e = rel(resample_losses(sae.to("cuda"), x.cuda(), 0.008), ref)
    report("resampling", "cuda loss vs cpu", e < 1e-4, f"rel. error {e:.2e} (< 1e-4)")
    e = max(rel(a, b) for a, b in zip(resampled("cuda"), cpu, strict=True))
    report("resampling", "cuda weights vs cpu", e < 1e-5, f"largest rel. error {e:.2e} (< 1e-5) over {n_dead} dead")


def make_feature_run(layout: paths.RunLayout, quick: bool) -> None:
    """transformer/A (a random one-layer model) and sae/A/<hook>/tm2023-N (random, ~2 % firing)."""
    from monosemantic.activations.capture import capture
    from monosemantic.data.tokens import TokenStore
    from monosemantic.features.stream import held_out_contexts
    from monosemantic.io import save_tensors, write_config
    from monosemantic.sae.model import SAEConfig, SparseAutoencoder
    from monosemantic.transformer.hooks import MLP_POST
    from monosemantic.transformer.model import KIND, Transformer, TransformerConfig

    store = TokenStore(layout.tokens)
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=store.vocab_size, d_model=32, d_mlp=64 if quick else 512, n_heads=2, ctx_len=64)
    model = Transformer(cfg).eval()
    folder = layout.transformer("A")
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / paths.MODEL_WEIGHTS, model.state_dict())
    write_config(folder / paths.CONFIG, KIND, {"model": cfg.to_dict(), "name": "A"})
    ctx = held_out_contexts(store, cfg.ctx_len, 16 * cfg.ctx_len)
    with torch.inference_mode():
        x = capture(model, torch.from_numpy(ctx.tokens), model.hook_point(MLP_POST)).reshape(-1, cfg.d_mlp)
    sae = SparseAutoencoder(SAEConfig(cfg.d_mlp, 4 * cfg.d_mlp))
    with torch.no_grad():
        sae.b_enc -= torch.quantile(sae.pre_activations(x), 0.98, dim=0)
    sae.save(layout.saes("A", MLP_POST) / f"tm2023-{4 * cfg.d_mlp}")


def database(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        feats = conn.execute("SELECT dictionary_id, feature, density, max_act FROM features ORDER BY 1, 2").fetchall()
        top = conn.execute("SELECT dictionary_id, feature, ctx_offset, ctx_pos FROM examples WHERE kind = 'top'")
        return {"features": np.array(feats, dtype=np.float64), "top": set(top.fetchall())}
    finally:
        conn.close()


def check_features(layout: paths.RunLayout, quick: bool, cuda: bool) -> None:
    from monosemantic.features.build import build_features
    from monosemantic.features.config import FeaturesConfig

    make_feature_run(layout, quick)
    cfg = FeaturesConfig(n_tokens=4096 if quick else 65536, top_k=5, analyses=("none",))

    def build(name: str, **kw: Any) -> dict[str, Any]:
        path, sec = timed(lambda: build_features(layout, FeaturesConfig(**{**cfg.__dict__, **kw}), True, False),
                          kw.get("device", "cpu"))  # fmt: skip
        shutil.copy(path, layout.root / f"{name}.sqlite")
        return database(layout.root / f"{name}.sqlite") | {"seconds": sec}

    def compare(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float]:
        fa, fb = a["features"], b["features"]
        overlap = len(a["top"] & b["top"]) / max(len(b["top"]), 1)
        return float(np.abs(fa[:, 2] - fb[:, 2]).max()), float(np.abs(fa[:, 3] - fb[:, 3]).max()), overlap

    ref = build("cpu")
    dd, dm, overlap = compare(build("cpu-no-spill", spill=False), ref)
    report("features build", "cpu no-spill vs spill", dd == 0 and dm < 1e-5 and overlap == 1.0,
           f"density Δ {dd:.1e}, max_act Δ {dm:.1e}, top examples {overlap:.0%} the same")  # fmt: skip
    if not cuda:
        report("features build", "cuda vs cpu", None, "no CUDA device")
        return
    got = build("cuda", device="cuda")
    dd, dm, overlap = compare(got, ref)
    report("features build", "cuda vs cpu", dd < 1e-3 and dm < 1e-3 and overlap > 0.95,
           f"density Δ {dd:.1e} (< 1e-3), max_act Δ {dm:.1e} (< 1e-3), top examples {overlap:.1%} the same "
           f"(> 95 %); {got['seconds']:.1f} s vs {ref['seconds']:.1f} s")  # fmt: skip


def check_nccl(root: Path, quick: bool, n_gpus: int) -> None:
    """`sae train` by two processes against one: gloo on the CPU; NCCL when two GPUs are present."""
    from safetensors.torch import load_file

    acts = root / "acts.npy"
    rng = np.random.default_rng(0)
    np.save(acts, np.maximum(rng.standard_normal((8192 if quick else 65536, 32)), 0).astype(np.float32))
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "OMP_NUM_THREADS": "1"}
    train = ["sae", "train", "--activations", str(acts), "--n-features", "128", "--batch-size", "512",
             "--no-progress", "--n-resamples", "1", "--dtype", "float32"]  # fmt: skip
    # float32 pinned: the default preset's auto dtype is bfloat16 where native (a CUDA device among them), whose
    # rounding differs with each rank's shard shape
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

    def compare(device: str) -> tuple[bool, str]:
        outs = {}
        for name, launch in (("one", [sys.executable]), ("two", torchrun)):
            out = root / f"{device}-{name}"
            cmd = [*launch, "-m", "monosemantic", *train, "--device", device, "--out", str(out)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                return False, f"{name} process(es) failed: {proc.stderr.strip().splitlines()[-1:]}"
            outs[name] = load_file(next(out.glob("*/sae.safetensors")))
        e = max(rel(outs["two"][k], outs["one"][k]) for k in outs["one"])
        return e < 1e-3, f"largest rel. weight difference {e:.2e} (< 1e-3)"

    ok, detail = compare("cpu")
    report("nccl", "cpu: 2 gloo vs 1 process", ok, detail)
    if n_gpus < 2:
        report("nccl", "cuda: 2 nccl vs 1", None, f"needs 2 CUDA devices, found {n_gpus}")
        return
    ok, detail = compare("cuda")
    report("nccl", "cuda: 2 nccl vs 1", ok, detail)


def check_saelens(root: Path, quick: bool, cuda: bool) -> None:
    if not cuda:
        report("saelens", "cuda act/s", None, "no CUDA device (the CPU's numbers: docs/benchmarks.md)")
        return
    out = root / "sae_vs_saelens_cuda.json"
    sizes = ["4096"] if quick else ["4096", "16384"]
    cmd = [sys.executable, str(HERE / "sae_vs_saelens.py"), "--device", "cuda", "--features", *sizes,
           "--recipes", "paper", "topk", "--steps", "20", "--rounds", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")}, capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    if proc.returncode != 0:
        report("saelens", "cuda act/s", False, f"sae_vs_saelens.py failed: {proc.stderr.strip()[-300:]}")
        return
    rows = json.loads(out.read_text())["rows"]
    ratios = "; ".join(f"{r['recipe']} {r['n_features']} {r['matmul_dtype']}: {r['ratio']:.2f}x" for r in rows)
    report("saelens", "cuda act/s ours/SAELens", True, ratios, rows=rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: the reduced form CI runs")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu-check"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu_check.json")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    n_gpus = torch.cuda.device_count() if cuda else 0
    name = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"CUDA: {name} ({n_gpus} device(s)); torch {torch.__version__}; {'quick' if args.quick else 'full'} sizes")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    layout = make_tokens(args.work / "run", 60 if args.quick else 400)
    check_harvest(layout, args.quick, cuda)
    check_sae_steps(args.quick, cuda)
    check_resampling(args.quick, cuda)
    check_features(layout, args.quick, cuda)
    check_nccl(args.work, args.quick, n_gpus)
    check_saelens(args.work, args.quick, cuda)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "cuda": name,
               "n_gpus": n_gpus, "torch": torch.__version__, "load_average": os.getloadavg()[0]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "machine": machine, "rows": ROWS})
    print(f"wrote {args.out}")
    if any(r["status"] == "FAIL" for r in ROWS):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
