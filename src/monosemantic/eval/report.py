"""The eval stage: every number of paper.md §7 for one or more SAEs, in one pass over held-out text.

    metrics = evaluate_sae(sae, model, hooks.MLP_POST, windows)          # in memory
    table = run(model_folder, {"A1": sae_folder}, tokens_folder, out_root, EvalConfig())

For each SAE, `run` writes `out_root/<name>/`:

    metrics.json   reconstruction (mse, normalized_mse, fvu), sparsity (l0, l1), density counts
                   (dead, dense, ultralow) and histogram, splice losses and loss recovered, the
                   token counts, and the formula of every number (§7: "write the formula and the
                   token count next to every number")
    density.png    the log10(density) histogram (paper.md §7.2)
    config.json    what was evaluated: model, SAE and token folders, hook, EvalConfig (written last)

How it runs: pass 1 computes the mean hook activation (for mean ablation) and stops each forward at
the hook; pass 2 runs, per batch of windows, the clean model, zero and mean ablation, and one
spliced forward per SAE (`splice.evaluate_splices`). The spliced forward is where each SAE sees the
clean activations of every position, so the reconstruction and density statistics come from that
same call: no extra SAE forward. `acts_for_stats` instead takes the statistics from other
activation batches (e.g. many more tokens from the activation store, without running the LM).

An SAE is treated as mapping raw activations to raw reconstructions: one trained on normalised
inputs has its scale folded back into its weights (`sae/normalize.py`).

Section numbers (§n) refer to the method reference `docs/reference/paper.md`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from monosemantic import paths, provenance
from monosemantic.activations.capture import capture
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.eval.metrics import (
    DENSE_THRESHOLD,
    ULTRALOW_THRESHOLD,
    DensityHistogram,
    FeatureStats,
    ReconstructionStats,
    density_histogram,
    plot_density_histogram,
    require_matplotlib,
)
from monosemantic.eval.splice import SpliceResult, evaluate_splices, mean_activation
from monosemantic.io import read_json, stage_dir, write_config, write_json
from monosemantic.runtime import autocast, check_dtype, check_subject_dtype, pick_device
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer
from monosemantic.transformer.subject import context_length, find_hook, load_model, parse_hook

log = logging.getLogger(__name__)

KIND = "monosemantic.eval"
DENSITY_PNG = "density.png"

DEFINITIONS = {
    "mse": "mean over tokens and d_in elements of (x - x_hat)^2 (TM loss term, paper.md §3.2)",
    "normalized_mse": "sum ||x - x_hat||^2 / sum ||x||^2 (likely [APR24]'s 'Normalized MSE')",
    "fvu": "sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, mean over stats tokens per dimension",
    "explained_variance": "1 - fvu ([SM]'s 'variance explained')",
    "l0": "mean over tokens of #{i: f_i > 0}",
    "l1": "mean over tokens of sum_i |f_i| (raw activation units)",
    "density": "fraction of stats tokens with f_i > 0 (paper.md §7.1)",
    "n_dead": "features with density 0 on the stats tokens",
    "n_dense": f"features with density > {DENSE_THRESHOLD}",
    "n_ultralow": f"features with 0 < density < {ULTRALOW_THRESHOLD} (§7.1); needs > 1e6 stats tokens to be nonzero",
    "min_resolvable_density": "1 / stats_tokens: the smallest nonzero density measurable",
    "density_histogram": "counts of alive features per log10(density) bin; dead features in n_dead",
    "loss_clean": "mean next-token cross-entropy (nats) of the unmodified model on eval_tokens",
    "loss_sae": "the same with the hook activations replaced by the SAE reconstruction",
    "loss_zero": "the same with the hook activations set to 0",
    "loss_mean": "the same with the hook activations set to their mean over eval_tokens",
    "kl_*": "mean over eval_tokens of KL(p_clean || p_*) in nats",
    "loss_recovered": "(loss_zero - loss_sae) / (loss_zero - loss_clean) (paper.md §7.4)",
    "loss_recovered_vs_mean": "(loss_mean - loss_sae) / (loss_mean - loss_clean)",
    "eval_tokens": "next-token targets scored in the splice runs (held-out split, all positions)",
    "stats_tokens": "activation rows behind the reconstruction, sparsity and density numbers",
}


@dataclass(frozen=True)
class EvalConfig:
    """How SAEs are evaluated (paper.md §7; token counts and positions are our choice, paper.md §13)."""

    eval_tokens: int = 262_144
    """Held-out tokens (next-token targets) scored: the first windows of the validation split, all
    positions. With N tokens, densities below 1/N read as dead (the paper used 1e8 tokens)."""
    batch_size: int = 16
    """Windows per forward pass; memory grows with batch_size × ctx_len × (vocab + n_features)."""
    hist_bins: int = 60
    """Bins of the log10(density) histogram, spanning [min(-6, floor(log10(1/N))), 0]."""
    hook: str = hooks.MLP_POST
    """Activation site the SAEs read and the splice replaces (the paper's: MLP_POST); for a Hugging Face model
    MODULE.PATH[:input|:output]."""
    device: str = "auto"
    """cpu, cuda, mps, or auto."""
    dtype: str = "float32"
    """Compute dtype of the forwards and SAEs: float32, or bfloat16 (autocast, runtime.autocast; faster on GPUs,
    the losses then carry bfloat16 rounding of the products). Sums are float64 either way."""
    subject_dtype: str = "float32"
    """The subject model's weight dtype: float32, bfloat16 or float16 (the weights themselves are cast, unlike
    --dtype's autocast; half the memory and the fastest forward on a GPU). The SAEs keep their own dtype."""
    device_map: str = ""
    """A Hugging Face subject larger than one device: accelerate's device_map (auto, balanced, sequential)
    spreads its layers over every GPU, then the CPU; empty puts the whole model on --device."""

    def __post_init__(self) -> None:
        check_dtype(self.dtype)
        check_subject_dtype(self.subject_dtype)
        for name in ("eval_tokens", "batch_size", "hist_bins"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EvalConfig.{name} must be positive, got {getattr(self, name)}")
        try:  # a hook name or MODULE.PATH[:input|:output]; found in the model at run time
            parse_hook(self.hook)
        except UserError as e:
            raise ValueError(f"EvalConfig.hook: {e}") from None


class _RecordingSplice:
    """The SAE reconstruction as a splice replacement that also accumulates statistics."""

    def __init__(self, sae: SparseAutoencoder, record: bool) -> None:
        self.sae, self.record = sae, record
        self.device = next(sae.parameters()).device
        self.recon = ReconstructionStats()
        self.features = FeatureStats(sae.cfg.n_features, device=self.device)

    def __call__(self, a: Tensor) -> Tensor:
        # The SAE's own device and dtype: the subject may hold bfloat16 weights, or this layer on another GPU.
        x = a.flatten(0, 1).to(self.device, torch.float32)  # [batch * pos, d_in]
        x_hat, f = self.sae(x)
        if self.record:
            self.recon.update(x, x_hat)
            self.features.update(f)
        return x_hat.view(a.shape).to(a.device, a.dtype)


@torch.no_grad()
def evaluate_saes(
    saes: Mapping[str, SparseAutoencoder],
    model: nn.Module,
    hook: str,
    windows: Tensor,
    batch_size: int = 16,
    hist_bins: int = 60,
    acts_for_stats: Iterable[Tensor] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """All of paper.md §7 for several SAEs, sharing the clean and ablation runs.

    Args:
        saes: name → SAE reading `hook` (raw activations in, raw reconstructions out).
        model: the subject model (ours or an `HFSubject`); SAEs and model on the same device.
        windows: `[n, ctx+1]` int64 held-out windows (`TokenStore.val.windows`).
        acts_for_stats: optional `[batch, d_in]` batches, read once; if given, reconstruction,
            sparsity and density come from them instead of the hook activations of `windows`.
    Returns:
        name → flat metrics dict (the keys of `DEFINITIONS`, plus the histogram and shapes).
    """
    mean_act = mean_activation(model, hook, windows, batch_size)  # [d]; pass 1
    for name, sae in saes.items():
        if sae.cfg.d_in != mean_act.numel():
            raise UserError(f"SAE {name!r} reads {sae.cfg.d_in} dims but {hook} has {mean_act.numel()}")
    recorders = {name: _RecordingSplice(sae, record=acts_for_stats is None) for name, sae in saes.items()}
    splices = evaluate_splices(model, hook, windows, recorders, batch_size, mean_act, progress)  # pass 2
    if acts_for_stats is not None:
        device = mean_act.device
        for x in acts_for_stats:
            x = x.to(device=device, dtype=torch.float32)
            for r in recorders.values():
                x_hat, f = r.sae(x)
                r.recon.update(x, x_hat)
                r.features.update(f)

    return {name: _metrics(r, splices[name], hook, hist_bins) for name, r in recorders.items()}


def _metrics(r: _RecordingSplice, splice: SpliceResult, hook: str, hist_bins: int) -> dict[str, Any]:
    """One SAE's flat metrics dict from its accumulated statistics and splice result."""
    n = r.features.n_rows
    if n == 0:
        raise ValueError("no activation rows for the reconstruction and density statistics")
    recon = r.recon.result()
    log10_min = min(-6.0, math.floor(math.log10(1 / n)))  # show every alive feature, and 1e-6 (§7.1)
    hist = density_histogram(r.features.density, hist_bins, log10_min)
    m = {
        "hook": hook,
        "n_features": r.sae.cfg.n_features,
        "d_in": r.sae.cfg.d_in,
        **recon,
        "explained_variance": 1 - recon["fvu"],
        **r.features.summary(),
        "min_resolvable_density": 1 / n,
        "density_histogram": asdict(hist),
        **splice.to_dict(),
    }
    m["eval_tokens"], m["stats_tokens"] = m.pop("n_tokens"), m.pop("n_rows")
    return m


def evaluate_sae(
    sae: SparseAutoencoder,
    model: nn.Module,
    hook: str,
    windows: Tensor,
    batch_size: int = 16,
    hist_bins: int = 60,
    acts_for_stats: Iterable[Tensor] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """`evaluate_saes` for one SAE; returns its metrics dict."""
    return evaluate_saes({"sae": sae}, model, hook, windows, batch_size, hist_bins, acts_for_stats, progress)["sae"]


def run(
    model_folder: Path | str,
    sae_folders: Mapping[str, Path],
    tokens_folder: Path,
    out_root: Path,
    cfg: EvalConfig = EvalConfig(),
    force: bool = False,
    progress: bool = True,
    ctx_len: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The stage: evaluate each SAE folder and write `out_root/<name>/` (see the module docstring).

    `model_folder` is a run's transformer folder or a Hugging Face model (`subject.load_model`;
    `ctx_len` applies to the latter).

    SAEs whose folder is complete and made from the same SAE, model and tokens (`provenance`) are
    skipped (their metrics are read back) unless `force`; the rest share one pass over the held-out
    windows. Returns name → metrics, for `format_table`.
    """
    # a model folder (ours, or a save_pretrained one: its JSON is its stamp); a .gguf file or hub name by name
    model_input = [Path(model_folder)] if Path(model_folder).is_dir() else []
    external = [] if model_input else [str(model_folder)]
    ins = {
        name: provenance.inputs(Path(out_root) / name, [Path(f), *model_input, Path(tokens_folder)], external)
        for name, f in sae_folders.items()
    }
    todo = {
        name: Path(f)
        for name, f in sae_folders.items()
        if not provenance.reuse(Path(out_root) / name, ins[name], force)
    }
    results = {name: read_json(Path(out_root) / name / paths.METRICS) for name in sae_folders if name not in todo}
    for name in results:
        log.info("%s: evaluated already (use --force to redo)", Path(out_root) / name)
    if not todo:
        return results

    require_matplotlib()  # fail before the long pass, not after it
    device = pick_device(cfg.device)
    saes = {name: SparseAutoencoder.load(folder, device=device).float() for name, folder in todo.items()}
    store = TokenStore(tokens_folder)
    model = load_model(model_folder, str(device), ctx_len, cfg.subject_dtype, cfg.device_map)
    n_ctx = context_length(model)
    if store.vocab_size > (model.cfg.vocab_size if isinstance(model, Transformer) else model.vocab_size):
        raise UserError(f"{tokens_folder}: vocabulary {store.vocab_size} is larger than the model's ({model_folder})")
    windows = torch.from_numpy(store.val.windows(n_ctx + 1, cfg.eval_tokens))
    site = find_hook(model, cfg.hook)
    with torch.no_grad():
        d = capture(model, windows[:1, :-1].to(device), site.module, site.which).shape[-1]
    for name, sae in saes.items():  # before the long pass, naming the folder
        if sae.cfg.d_in != d:
            raise UserError(f"{todo[name]}: the SAE reads {sae.cfg.d_in} dims but {cfg.hook} of {model_folder} has {d}")
    n_tokens = windows.shape[0] * n_ctx
    if n_tokens < cfg.eval_tokens:
        log.warning("the validation split holds only %s of the %s eval tokens asked for", n_tokens, cfg.eval_tokens)
    log.info("evaluating %d SAE(s) at %s on %s held-out tokens", len(saes), cfg.hook, f"{n_tokens:,}")
    with autocast(device, cfg.dtype):
        metrics = evaluate_saes(saes, model, cfg.hook, windows, cfg.batch_size, cfg.hist_bins, progress=progress)

    for name, m in metrics.items():
        m = _finite_or_none({**m, "split": "val", "definitions": DEFINITIONS})
        body = {
            "name": name,
            "hook": cfg.hook,
            "model_folder": str(model_folder),
            "sae_folder": str(todo[name]),
            "tokens_folder": str(tokens_folder),
            "eval": asdict(cfg),
        }
        final = Path(out_root) / name
        with stage_dir(final, force=force or final.exists()) as tmp:
            write_json(tmp / paths.METRICS, m)
            hist = DensityHistogram(**m["density_histogram"])
            plot_density_histogram(hist, tmp / DENSITY_PNG, title=f"{name}: {m['n_features']:,} features, {cfg.hook}")
            write_config(tmp / paths.CONFIG, KIND, body)
            provenance.record(tmp, ins[name])
        results[name] = m
        log.info("%s", format_table({name: m}).splitlines()[-1])
    return {name: results[name] for name in sae_folders}


def format_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table, one row per SAE: features, L0, FVU, dead %, dense %, loss recovered."""
    head = f"{'sae':<16} {'features':>9} {'L0':>8} {'FVU':>7} {'dead %':>7} {'dense %':>8} {'loss rec':>9}"
    rows = [head]
    for name, m in metrics.items():
        rows.append(
            f"{name:<16} {m['n_features']:>9,} {m['l0']:>8.2f} {_num(m['fvu'], '7.4f')} "
            f"{100 * m['dead_frac']:>7.2f} {100 * m['dense_frac']:>8.2f} {_num(m['loss_recovered'], '9.3f')}"
        )
    return "\n".join(rows)


def _num(x: float | None, fmt: str) -> str:
    width = int(fmt.split(".")[0])
    return format(x, fmt) if x is not None and math.isfinite(x) else f"{'n/a':>{width}}"


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN or infinity: write them as null (e.g. loss_recovered when the ablation is free)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj
