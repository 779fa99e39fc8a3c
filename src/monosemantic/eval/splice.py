"""Fraction of MLP loss recovered: splice an SAE's reconstruction into the transformer (paper.md §7.4).

    results = evaluate_splices(model, hooks.MLP_POST, windows, {"A1": sae_replacement(sae)})
    results["A1"].loss_recovered        # (L_zero − L_sae) / (L_zero − L_clean)

[TM]: "replace the MLP activations with the autoencoder predictions, measure the loss ... and
calculate the difference in loss. We often normalize this by dividing by the difference in loss
between the baseline transformer's performance and its performance after ablating the MLP layer."
A/1 recovers 79 %, A/5 94.5 % (§12 #9).

One pass over the windows serves any number of SAEs: per batch we run the clean model once, the
two ablations once, and one spliced forward per SAE, and compare each with the clean next-token
distribution on the spot (keeping clean log-probs for all tokens would cost tokens × vocab floats).
The mean-ablation vector needs its own, cheaper first pass (`mean_activation`), unless passed in.

Choices the paper leaves open (§13), made here and recorded in `metrics.json`:
- Tokens: held-out windows (`TokenStore.val.windows`), every position of each window, each
  next-token target counted once. The paper measures on *training* data; held-out text is the
  stricter test and is what the interp stage browses.
- Zero ablation ablates the MLP layer, as the paper says: for a hook inside the MLP (`MLP_PRE`,
  `MLP_POST`) the MLP's *output* (`MLP_OUT`) is set to 0, so its bias `b_out` goes too (reference
  §7.4: "Zero ablation sets the MLP output to zero"). For any other hook its own activations are
  zeroed (for a Hugging Face model's hook, e.g. the input of `mlp.down_proj`, the neurons are
  zeroed and the MLP's output bias stays).
- Mean ablation (not in [TM]; common since) sets the activations to their mean over the same
  evaluation tokens, a kinder baseline that makes `loss_recovered_vs_mean` a stricter score.
- Everything runs in float32 unless the caller wraps it in bfloat16 autocast (`sae eval --dtype
  bfloat16`, `runtime.autocast`); sums are accumulated in float64 either way.

Section numbers (§n) refer to the method reference `docs/reference/paper.md`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from monosemantic.activations.capture import capture
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer import hooks
from monosemantic.transformer.subject import find_hook

Replacement = Callable[[Tensor], Tensor]
"""Maps the hook's activations `[batch, pos, d]` to a tensor of the same shape."""

ZERO_ABLATION_SITE = {hooks.MLP_PRE: hooks.MLP_OUT, hooks.MLP_POST: hooks.MLP_OUT}
"""Where zero ablation acts for a hook inside the MLP: the MLP's output, bias included (§7.4)."""


def loss_recovered(loss_clean: float, loss_spliced: float, loss_ablated: float) -> float:
    """paper.md §7.4: `(L_ablated − L_spliced) / (L_ablated − L_clean)`; 1 is perfect, 0 is no better
    than the ablation. NaN when the ablation costs nothing (`L_ablated == L_clean`)."""
    gap = loss_ablated - loss_clean
    return (loss_ablated - loss_spliced) / gap if gap != 0 else math.nan


@dataclass(frozen=True)
class SpliceResult:
    """Mean next-token losses (nats) and KL divergences from the clean model (nats per token)."""

    loss_clean: float
    """Cross-entropy of the unmodified model."""
    loss_sae: float
    """Cross-entropy with the hook's activations replaced (by the SAE reconstruction)."""
    loss_zero: float
    """Cross-entropy with the hook's activations set to 0 (zero ablation, paper.md §7.4)."""
    loss_mean: float
    """Cross-entropy with the hook's activations set to their mean over the evaluation tokens."""
    kl_sae: float
    """Mean over tokens of KL(p_clean ‖ p_sae)."""
    kl_zero: float
    """Mean over tokens of KL(p_clean ‖ p_zero)."""
    kl_mean: float
    """Mean over tokens of KL(p_clean ‖ p_mean)."""
    n_tokens: int
    """Next-token targets scored (windows × positions)."""

    @property
    def loss_recovered(self) -> float:
        """paper.md §7.4 with zero ablation: `(L_zero − L_sae) / (L_zero − L_clean)`."""
        return loss_recovered(self.loss_clean, self.loss_sae, self.loss_zero)

    @property
    def loss_recovered_vs_mean(self) -> float:
        """The same with mean ablation: `(L_mean − L_sae) / (L_mean − L_clean)`."""
        return loss_recovered(self.loss_clean, self.loss_sae, self.loss_mean)

    def to_dict(self) -> dict[str, float | int]:
        return {
            **asdict(self),
            "loss_recovered": self.loss_recovered,
            "loss_recovered_vs_mean": self.loss_recovered_vs_mean,
        }


def sae_replacement(sae: SparseAutoencoder) -> Replacement:
    """The SAE's reconstruction as a `Replacement`: `[batch, pos, d_in] → [batch, pos, d_in]`.

    The SAE maps raw activations to raw reconstructions (one trained on normalised inputs has its
    scale folded into its weights, `sae/normalize.py`).
    """
    p = next(sae.parameters())
    return lambda a: sae(a.flatten(0, 1).to(p.device, p.dtype))[0].view(a.shape).to(a.device, a.dtype)


@contextlib.contextmanager
def replaced(model: nn.Module, hook: str, fn: Replacement) -> Iterator[None]:
    """Inside the block, the activations at `hook` are replaced by `fn(activations)`.

    `hook` is one of our hook names or `module.path[:input|:output]` (`subject.find_hook`): an
    output is replaced by a forward hook (the first element when the module returns a tuple, as
    Hugging Face blocks do), an input by a pre-hook, before the module runs.
    """
    site = find_hook(model, hook)

    def new(a: Tensor) -> Tensor:
        b = fn(a)
        if b.shape != a.shape:
            raise ValueError(f"replacement at {hook} returned shape {tuple(b.shape)}, expected {tuple(a.shape)}")
        return b.to(a.device, a.dtype)  # a bfloat16 subject, or a layer on another device (--device-map)

    def swap_out(_module: nn.Module, _inputs: object, out: Tensor | tuple) -> Tensor | tuple:
        return (new(out[0]), *out[1:]) if isinstance(out, tuple) else new(out)

    def swap_in(_module: nn.Module, args: tuple) -> tuple:
        return (new(args[0]), *args[1:])

    if site.which == "output":
        handle = site.module.register_forward_hook(swap_out)
    else:
        handle = site.module.register_forward_pre_hook(swap_in)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def mean_activation(model: nn.Module, hook: str, windows: Tensor, batch_size: int = 16) -> Tensor:
    """Mean of the hook's activations over every input position of `windows [n, ctx+1]`.

    Returns `[d]` float32 on the model's device. Runs the model only up to the hook (`capture`).
    """
    device = next(model.parameters()).device
    site = find_hook(model, hook)
    total: Tensor | None = None
    for i in range(0, len(windows), batch_size):
        s = (
            capture(model, windows[i : i + batch_size, :-1].to(device), site.module, site.which)
            .double()
            .sum(dim=(0, 1))
        )
        total = s if total is None else total + s
    assert total is not None, "no windows"
    return (total / (windows.shape[0] * (windows.shape[1] - 1))).float()


def _nll_sum(logp: Tensor, targets: Tensor) -> float:
    """Summed cross-entropy (float64) of log-probs `[B, T, vocab]` against targets `[B, T]`."""
    return float(F.nll_loss(logp.flatten(0, 1), targets.flatten(), reduction="none").double().sum())


def _kl_sum(logp: Tensor, clean_logp: Tensor) -> float:
    """Σ over tokens of KL(clean ‖ this), both `[B, T, vocab]` log-probs; float64 sum."""
    # kl_div(input=log q, target=log p, log_target=True) = p (log p − log q), elementwise
    return float(F.kl_div(logp, clean_logp, reduction="none", log_target=True).sum(dim=-1).double().sum())


@torch.no_grad()
def evaluate_splices(
    model: nn.Module,
    hook: str,
    windows: Tensor,
    replacements: Mapping[str, Replacement],
    batch_size: int = 16,
    mean_act: Tensor | None = None,
    progress: bool = False,
) -> dict[str, SpliceResult]:
    """Loss recovered for each replacement, with one clean and one run per ablation in total.

    Args:
        model: the subject model, ours or `transformer.hf.HFSubject` (in eval mode during the call).
        hook: a hook name from `transformer.hooks`, e.g. `MLP_POST`, or `module.path[:input]`.
        windows: `[n, ctx+1]` int64 token windows; inputs `[:, :-1]`, targets `[:, 1:]`.
        replacements: name → function of the hook activations `[batch, pos, d]` (see
            `sae_replacement`). Each sees the clean activations, since nothing upstream changes.
        mean_act: `[d]` mean activation for mean ablation; computed over `windows` if None.
    Returns:
        name → `SpliceResult`; the clean and ablation numbers are the same in every entry.
    """
    if not replacements:
        return {}
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    try:
        if mean_act is None:
            mean_act = mean_activation(model, hook, windows, batch_size)
        mean_vec = mean_act.to(device=device, dtype=torch.float32)  # [d]
        runs: dict[str, tuple[str, Replacement]] = {
            "zero": (ZERO_ABLATION_SITE.get(hook, hook), torch.zeros_like),
            "mean": (hook, lambda a: mean_vec.to(a.device, a.dtype).expand_as(a)),
            **{f"sae:{name}": (hook, fn) for name, fn in replacements.items()},
        }
        loss = dict.fromkeys(["clean", *runs], 0.0)
        kl = dict.fromkeys(runs, 0.0)
        for i in tqdm(range(0, len(windows), batch_size), desc="splice", unit="batch", disable=not progress):
            batch = windows[i : i + batch_size].to(device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            clean_logp = F.log_softmax(model(inputs).float(), dim=-1)  # [B, T, vocab]
            loss["clean"] += _nll_sum(clean_logp, targets)
            for key, (site, fn) in runs.items():
                with replaced(model, site, fn):
                    logp = F.log_softmax(model(inputs).float(), dim=-1)
                loss[key] += _nll_sum(logp, targets)
                kl[key] += _kl_sum(logp, clean_logp)
    finally:
        model.train(was_training)

    n = windows.shape[0] * (windows.shape[1] - 1)
    return {
        name: SpliceResult(
            loss_clean=loss["clean"] / n,
            loss_sae=loss[f"sae:{name}"] / n,
            loss_zero=loss["zero"] / n,
            loss_mean=loss["mean"] / n,
            kl_sae=kl[f"sae:{name}"] / n,
            kl_zero=kl["zero"] / n,
            kl_mean=kl["mean"] / n,
            n_tokens=n,
        )
        for name in replacements
    }
