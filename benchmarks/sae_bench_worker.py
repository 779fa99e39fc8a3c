"""One measurement of `sae_vs_saelens.py`, run in a fresh process: train, time, evaluate, report.

Not meant to be run by hand; `sae_vs_saelens.py --worker '{json}'` calls `run_worker`.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import torch

BATCH, D_IN, N_EVAL = 4096, 512, 4
TARGET_L0 = 32  # the sparse start's L0
PAPER_L1 = 0.008  # λ of the paper recipe on the mean MSE (the demo's)
JUMPRELU_LR = 1e-3  # Gemma Scope's 7e-5 is for ~1M steps; both tools get the same short-run lr
JUMPRELU_L0 = 0.05  # λ of the L0 penalty, on inputs of unit mean norm (jumprelu_train.py)


def matmul_peaks(device: str = "cpu", n: int = 4096, reps: int = 5) -> dict[str, float]:
    """Measured GFLOP/s of one n × n × n product in float32 and bfloat16 on `device` (median of `reps`)."""
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
        a @ b
        times = []
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n**3 / statistics.median(times) / 1e9
    return out


PRELOAD_LIMIT = 4 << 30
"""Bytes of training batches held in memory at most; a longer whole run streams from the store."""


def stream_batches(path: str, n_train: int, n_eval: int) -> tuple[Iterator[torch.Tensor], list[torch.Tensor], str]:
    """A long run's batches read from the store as training goes: (training stream, held-out, source).

    1,708 preloaded batches (the demo's run) would be 14 GB. Both tools read the stream alike, so
    each pays the store's reading (about 15 ms a batch, docs/benchmarks.md) in its wall time. The
    held-out batches come first in the store's order here, and set the scale.
    """
    from monosemantic.activations.store import open_activations
    from monosemantic.sae.normalize import Normalizer

    store = open_activations(path)
    if store.n_rows // BATCH < n_train + n_eval:
        raise SystemExit(f"{path}: {store.n_rows // BATCH} batches of {BATCH}, need {n_train} + {n_eval} held out")
    it = store.batches(BATCH, seed=0, drop_last=True)
    held_out = [next(it) for _ in range(n_eval)]
    scale = Normalizer.fit(held_out[0]).factor
    train = ((x * scale).contiguous() for _, x in zip(range(n_train), it, strict=False))
    return train, [(x * scale).contiguous() for x in held_out], f"{path} (harvested, streamed)"


def load_batches(path: str, n: int) -> tuple[list[torch.Tensor], str]:
    """`n` float32 batches `[4096, 512]` scaled to E‖x‖ = √d_in, and where they came from."""
    from monosemantic.sae.normalize import Normalizer

    if Path(path).exists():
        from monosemantic.activations.store import open_activations

        it = open_activations(path).batches(BATCH, seed=0, drop_last=True)
        xs = [next(it) for _ in range(n)]
        source = f"{path} (harvested)"
    else:
        from monosemantic.sae.synthetic import planted_features

        _, sampler = planted_features(n_dirs=4 * D_IN, d=D_IN, density=0.01, seed=0)
        xs = list(sampler.batches(batch_size=BATCH, n_batches=n))
        source = "planted features (synthetic; no store at the given path)"
    scale = Normalizer.fit(xs[0]).factor
    return [(x * scale).contiguous() for x in xs], source


def build_ours(recipe: str, m: int, steps: int, start: str, first: torch.Tensor, spec: dict) -> tuple[Any, Any]:
    from monosemantic.sae import SAEConfig, SAETrainConfig
    from monosemantic.sae.april import AprilSAE, AprilTrainConfig
    from monosemantic.sae.batchtopk import BatchTopKSAE, BatchTopKTrainConfig
    from monosemantic.sae.geometric_median import geometric_median
    from monosemantic.sae.jumprelu import JumpReLUSAE
    from monosemantic.sae.jumprelu_train import JumpReLUTrainConfig
    from monosemantic.sae.model import SparseAutoencoder
    from monosemantic.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainConfig

    torch.manual_seed(0)
    common = {"batch_size": BATCH, "n_steps": steps, "log_every": 10**9, "matmul_dtype": spec["matmul_dtype"]}
    if spec["matmul_dtype"] == "dense":  # the plain autograd step: what every fast path must match
        common.update(matmul_dtype="float32", step="dense")
    # b_dec is set here for both starts (below) and copied into SAELens, whose trainer has no data init:
    # with our trainer's own init SAELens would start from b_dec = 0 and ours from the median
    keep = {"b_dec_init": "keep"}
    if recipe.startswith("paper"):  # paper-clip: SAELens's clip at 1 on its summed MSE is 1 / d_in on our mean MSE
        sae = SparseAutoencoder(SAEConfig(D_IN, m))
        clip = {"max_grad_norm": 1.0 / D_IN} if recipe == "paper-clip" else {}
        cfg = SAETrainConfig(l1_coeff=PAPER_L1, lr=1e-3, n_resamples=0, **keep, **clip, **common)
    elif recipe == "april":
        sae = AprilSAE(SAEConfig(D_IN, m))
        cfg = AprilTrainConfig(normalize_inputs=False, **common)
    elif recipe == "batchtopk":  # [BTKC]'s lr, β2, AuxK; the inputs are already at E‖x‖ = √d_in
        sae = BatchTopKSAE(TopKSAEConfig(D_IN, m, k=32))
        cfg = BatchTopKTrainConfig(normalize_inputs=False, fit_to_run=False, **common)
    elif recipe == "jumprelu":  # Gemma Scope's recipe at lr 1e-3 (a short run); it rescales to E‖x‖ = 1 itself
        sae = JumpReLUSAE(SAEConfig(D_IN, m))
        cfg = JumpReLUTrainConfig(
            lr=JUMPRELU_LR, fit_to_run=False, lr_warmup_steps=0, l0_warmup_steps=0, normalize_n_inputs=BATCH, **common
        )
    else:  # topk-clip: SAELens's trainer clips every gradient to norm 1 (docs/benchmarks.md); ours too here
        sae = TopKSAE(TopKSAEConfig(D_IN, m, k=32))
        clip = {"max_grad_norm": 1.0} if recipe == "topk-clip" else {}
        cfg = TopKTrainConfig(**keep, **clip, **common)
    with torch.no_grad():
        if sae.pre_encoder_bias:  # both starts: b_dec at the geometric median of the first batch (paper.md §3.1)
            sae.b_dec.copy_(geometric_median(first))
        if start == "sparse" and not recipe.startswith(("topk", "batchtopk")):
            fire_on(sae, first, TARGET_L0 / m)
    return sae, cfg


@torch.no_grad()
def fire_on(sae: Any, x: torch.Tensor, fraction: float) -> None:
    """Set b_enc so that each feature fires on about `fraction` of the inputs `x` (its first 1,024)."""
    x_bar = x[:1024] - sae.b_dec if sae.pre_encoder_bias else x[:1024]
    sae.b_enc.copy_(-torch.quantile(x_bar @ sae.W_enc, 1 - fraction, dim=0))


def saelens_copy(ours: Any, recipe: str, steps: int, device: str = "cpu") -> tuple[Any, Any]:
    """SAELens's SAE with our weights, and its trainer config for the same recipe."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    m = ours.cfg.n_features
    beta1 = 0.9
    if recipe == "batchtopk":  # SAELens's own BatchTopK trainer: same k, AuxK 1/32; its θ by a moving average
        cfg_b = BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=m, k=32, apply_b_dec_to_input=True)
        sae = BatchTopKTrainingSAE(cfg_b)
        lr, l1_warm, lr_decay = 3e-4, 0, 0
    elif recipe == "jumprelu":  # DeepMind's STE ("step"); θ₀ and ε at E‖x‖ = √d_in, λ × d_in for the summed MSE
        cfg_j = JumpReLUTrainingSAEConfig(
            d_in=D_IN,
            d_sae=m,
            apply_b_dec_to_input=False,
            jumprelu_init_threshold=0.001 * D_IN**0.5,
            jumprelu_bandwidth=0.001 * D_IN**0.5,
            l0_coefficient=JUMPRELU_L0 * D_IN,
        )
        sae = JumpReLUTrainingSAE(cfg_j)
        lr, l1_warm, lr_decay, beta1 = JUMPRELU_LR, 0, 0, 0.0
    elif recipe.startswith("topk"):
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=m, k=32, apply_b_dec_to_input=True))
        lr, l1_warm, lr_decay = 1e-4, 0, 0
    elif recipe.startswith("paper"):  # λ on the mean MSE → d_in·λ on SAELens's summed MSE (our loss.py)
        l1 = PAPER_L1 * D_IN
        sae_cfg = StandardTrainingSAEConfig(d_in=D_IN, d_sae=m, l1_coefficient=l1, apply_b_dec_to_input=True)
        sae = StandardTrainingSAE(sae_cfg)
        lr, l1_warm, lr_decay = 1e-3, 0, 0
    else:  # April 2024: SAELens's standard SAE is this recipe
        sae_cfg = StandardTrainingSAEConfig(
            d_in=D_IN, d_sae=m, l1_coefficient=5.0, l1_warm_up_steps=steps // 20, apply_b_dec_to_input=False
        )
        sae = StandardTrainingSAE(sae_cfg)
        lr, l1_warm, lr_decay = 5e-5, steps // 20, steps // 5
    sae.to(device)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(ours, name))
        if recipe == "jumprelu":  # ours starts at θ₀ on its E‖x‖ = 1 scale, the same threshold
            sae.threshold.fill_(0.001 * D_IN**0.5)
    cfg = SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=lr,
        lr_end=0.0,
        lr_decay_steps=lr_decay,
        adam_beta1=beta1,
        device=device,
    )
    del l1_warm
    return sae, cfg


def run_worker(spec: dict) -> dict:
    from monosemantic.runtime import tune_allocator

    tune_allocator()  # what our CLI does at start-up; a no-op where the parent set MONOSEMANTIC_DEFAULT_MALLOC
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    n_steps = spec["warmup"] + spec["steps"]
    train: Iterable[torch.Tensor]
    if spec["start"] == "init" and Path(spec["activations"]).exists() and n_steps * BATCH * D_IN * 4 > PRELOAD_LIMIT:
        train, held_out, source = stream_batches(spec["activations"], n_steps, N_EVAL)
        first, train = _peek(train)
    else:
        xs, source = load_batches(spec["activations"], n_steps + N_EVAL)
        train, held_out, first = xs[:n_steps], xs[n_steps:], xs[0]
    device = spec.get("device", "cpu")
    if device != "cpu":  # both tools on one card: the batches live there, as a GPU data loader would leave them
        train = [x.to(device) for x in train]
        held_out, first = [x.to(device) for x in held_out], first.to(device)
    ours, our_cfg = build_ours(spec["recipe"], spec["n_features"], n_steps, spec["start"], first, spec)
    ours.to(device)
    rss_before = _rss_mib()
    stamps: list[float] = []

    def timed(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for x in batches:
            _sync(device)
            stamps.append(time.perf_counter())
            yield x
        _sync(device)
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    if spec["tool"] == "ours":
        from monosemantic.sae import train_sae

        train_sae([ours], timed(train), our_cfg)
        encode, decode, W_dec = ours.encode, ours.decode, ours.W_dec
    else:
        from sae_lens.training.sae_trainer import SAETrainer

        sae, cfg = saelens_copy(ours, spec["recipe"], n_steps, device)
        SAETrainer(cfg=cfg, sae=sae, data_provider=timed(train)).fit()
        encode, decode, W_dec = sae.encode, sae.decode, sae.W_dec
    wall = time.perf_counter() - t0
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][spec["warmup"] :]
    step_s = statistics.median(steps) if steps else math.nan
    return {
        "act_per_s": BATCH / step_s,
        "median_step_s": step_s,
        "step_s": steps,
        "wall_s": wall,
        **held_out_loss(encode, decode, held_out, W_dec),
        "peak_mib": _rss_mib(),
        "rss_before_train_mib": rss_before,
        "source": source,
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def held_out_loss(
    encode: Any, decode: Any, held_out: list[torch.Tensor], W_dec: torch.Tensor | None = None
) -> dict[str, float]:
    """MSE (mean over elements) and L0 of an SAE's `encode`/`decode`, averaged over the held-out batches.

    With `W_dec [m, d_in]`, also `l1`: the mean over rows of Σ_i f_i ‖W_dec,i‖, the penalty both tools'
    paper-recipe loss puts on the codes (ours keeps ‖W_dec,i‖ = 1, paper.md §3.1; SAELens's standard SAE
    weights by the norm). MSE + λ·l1 is then the objective both minimise, on held-out data.
    """
    mse, l0, l1 = [], [], []
    norms = W_dec.detach().float().norm(dim=1) if W_dec is not None else None
    for x in held_out:
        f = encode(x)
        mse.append(float((decode(f) - x).pow(2).mean()))
        l0.append(float((f > 0).sum(-1).float().mean()))
        if norms is not None:
            l1.append(float((f * norms).sum(-1).mean()))
    out = {"mse": statistics.mean(mse), "l0": statistics.mean(l0)}
    return out | ({"l1": statistics.mean(l1)} if l1 else {})


def _sync(device: str) -> None:
    """CUDA runs asynchronously: wait for the device before reading the clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peek(it: Iterator[torch.Tensor]) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    first = next(it)
    return first, chain([first], it)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
