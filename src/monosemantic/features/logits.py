"""Logit weights of features and neurons ([TM] "logit weights", paper.md §8.3).

The direct path from a feature to the next-token logits, with the final LayerNorm linearised:

    logits_i = W_U · L · π · W_out · d_i            (column vectors, as the paper writes it)

d_i the feature's decoder direction in neuron space `[d_mlp]` (a neuron: the unit vector e_i),
W_out the MLP's output weights, π = I − 11ᵀ/d_model LayerNorm's mean removal, L = diag(γ)/σ̄ its
scale with γ the LN gain and σ̄ the *typical* standard deviation of the residual stream at ln_f
(the paper says "an approximation of ... the scaling terms" without saying which; we take
1/σ̄ = mean over held-out tokens of 1/√(var + eps), the factor LN actually applied on average,
docs/decisions.md 2026-11-25). The LN bias and b_U add the same vector to every feature and drop out.
The softmax is shift-invariant, so each feature's weights are shifted to a median of zero over
the tokens shown (the paper's convention); tokens rarer than a threshold in the training split
are left out ([TM] footnote 15; threshold ours).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from monosemantic.activations.capture import capture
from monosemantic.data.tokens import TokenSplit
from monosemantic.transformer.hf import HFSubject
from monosemantic.transformer.model import Transformer
from monosemantic.transformer.subject import HookSite

log = logging.getLogger(__name__)


def logit_effects(
    directions: Tensor, W_out: Tensor, ln_gain: Tensor, inv_scale: float, W_U: Tensor, center: bool = True
) -> Tensor:
    """`directions [n, d_mlp]` → logit weights `[n, vocab]` (before the median shift).

    W_out `[d_mlp, d_model]`, ln_gain `[d_model]`, W_U `[d_model, vocab]` (the model's layouts).
    `center=False` for an RMSNorm, which scales without removing the mean.
    """
    r = directions @ W_out  # [n, d_model]: what the feature writes to the residual stream
    if center:
        r = r - r.mean(dim=-1, keepdim=True)  # π
    return (r * (ln_gain * inv_scale)) @ W_U  # L, then the unembedding


@dataclass(frozen=True)
class LogitPath:
    """The direct path from a direction at the hook to the logits: W_U · L · π · W_out (module docstring)."""

    W_out: Tensor
    """`[d, d_model]`: how the hooked activation is written to the residual stream (I for a residual hook)."""
    gain: Tensor
    """`[d_model]` the final norm's gain γ."""
    inv_scale: float
    """1/σ̄, the final norm's mean scale on held-out tokens."""
    W_U: Tensor
    """`[d_model, vocab]` the unembedding."""
    center: bool = True
    """LayerNorm removes the mean (π); RMSNorm does not."""

    def effects(self, directions: Tensor) -> Tensor:
        """`directions [n, d]` → logit weights `[n, vocab]` before the median shift."""
        return logit_effects(directions, self.W_out, self.gain, self.inv_scale, self.W_U, self.center)


@torch.no_grad()
def affine_map(module: nn.Module, d: int) -> tuple[Tensor, Tensor] | None:
    """`(W [d, out], b [out])` when `module` maps its input of width `d` affinely (nn.Linear, GPT-2's
    Conv1D, ...), read off by probing it with the identity and checked on random inputs; else None."""
    p = next(module.parameters(), None)
    if p is None:
        return None
    try:
        b = module(torch.zeros(1, d, dtype=p.dtype, device=p.device))[0]
        W = module(torch.eye(d, dtype=p.dtype, device=p.device)) - b
        x = torch.randn(8, d, generator=torch.Generator().manual_seed(0)).to(p)
        y = module(x)
    except Exception:  # not callable on a [n, d] tensor: not a plain linear map
        return None
    if not isinstance(y, Tensor) or y.shape != (8, W.shape[1]) or b.ndim != 1:
        return None
    if not torch.allclose(y, x @ W + b, rtol=1e-4, atol=1e-5 * float(y.abs().max().clamp_min(1))):
        return None
    return W.float().cpu(), b.float().cpu()


@torch.no_grad()
def probe_final_norm(
    model: nn.Module, unembed: nn.Module, tokens: Tensor, batch_size: int = 16
) -> tuple[Tensor, bool, float] | None:
    """The norm right before the unembedding of any model, as `(gain [d_model], center, inv_scale)`.

    Found generically: the last module whose class name contains "norm" and whose output is exactly
    what `unembed` reads. Its form y = γ ⊙ π(x)·s(x) + β (LayerNorm: π removes the mean; RMSNorm: no
    π; γ = weight, 1 + weight (Gemma) or 1) is *checked* on the held-out `tokens`: β = norm(0), the
    per-token scale s(x) fitted by least squares, and every token must fit to 1e-3. 1/σ̄ is the mean
    s(x), as `ln_inv_scale` for our model. None when no norm matches (the caller skips the weights).
    """
    seen: dict[str, tuple[nn.Module, Tensor, Tensor]] = {}  # "last" norm call and the one "found": (norm, in, out)

    def on_norm(m: nn.Module, args: tuple, out: object) -> None:
        if isinstance(out, Tensor) and args and isinstance(args[0], Tensor):
            seen["last"] = (m, args[0], out)

    def on_unembed(_m: nn.Module, args: tuple) -> None:
        last = seen.get("last")
        if "found" not in seen and last is not None and args and torch.equal(last[2], args[0]):
            seen["found"] = last

    norms = [m for m in model.modules() if "norm" in type(m).__name__.lower()]
    handles = [m.register_forward_hook(on_norm) for m in norms] + [unembed.register_forward_pre_hook(on_unembed)]
    try:
        model(tokens[:1])
    finally:
        for h in handles:
            h.remove()
    if "found" not in seen:
        return None
    norm, norm_input, _ = seen["found"]
    d = norm_input.shape[-1]
    p = next(norm.parameters(), None)
    dtype, device = (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))
    beta = norm(torch.zeros(1, d, dtype=dtype, device=device))[0].float()
    center = bool(torch.allclose(norm(torch.full((1, d), 3.0, dtype=dtype, device=device))[0].float(), beta, atol=1e-4))
    weight = getattr(norm, "weight", None)
    gains = [torch.ones(d)] if weight is None else [weight.float(), 1 + weight.float(), torch.ones(d)]
    for gain in gains:
        gain = gain.detach().to(beta.device)
        total, n, ok = 0.0, 0, True
        for lo in range(0, len(tokens), batch_size):
            x = capture(model, tokens[lo : lo + batch_size], norm, which="input").float().reshape(-1, d)
            y = norm(x.to(dtype)).float() - beta
            u = gain * (x - x.mean(dim=-1, keepdim=True) if center else x)
            s = (y * u).sum(-1) / (u * u).sum(-1).clamp_min(1e-30)  # [tokens]: the scale each token got
            resid = (y - s[:, None] * u).norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-30)
            if not bool((resid < 1e-3).all()):
                ok = False
                break
            total, n = total + float(s.sum()), n + s.numel()
        if ok:
            return gain.cpu(), center, total / n
    return None


def median_shift(weights: Tensor, include: Tensor) -> Tensor:
    """Subtract, per row of `weights [n, vocab]`, the median over the included tokens `include [vocab]`."""
    med = weights[:, include].median(dim=1, keepdim=True).values
    return weights - med


@torch.inference_mode()
def ln_inv_scale(model: Transformer, tokens: Tensor, batch_size: int = 16) -> float:
    """Mean over `tokens [n, T]` of 1/√(var + eps) of the residual stream entering `model.ln_f`."""
    total, n = 0.0, 0
    for lo in range(0, len(tokens), batch_size):
        x = capture(model, tokens[lo : lo + batch_size], model.ln_f, which="input").float()
        inv = torch.rsqrt(x.var(dim=-1, unbiased=False) + model.ln_f.eps)
        total += float(inv.sum())
        n += inv.numel()
    return total / n


def token_counts(split: TokenSplit, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """int64 [vocab]: how often each token occurs in a split, read shard by shard in chunks."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for shard in split.shards:
        for lo in range(0, len(shard), chunk):
            counts += np.bincount(np.asarray(shard[lo : lo + chunk]), minlength=vocab_size)[:vocab_size]
    return counts


def logit_records(
    weights: Tensor, include: Tensor, vocab: Sequence[str], n_top: int, n_bins: int
) -> list[dict[str, object]]:
    """Per row of median-shifted `weights [n, vocab]`: `{"top": [[token, w]...], "bottom": [...],
    "hist": {"edges": [...], "counts": [...]}}` over the included tokens (linear bins, min to max)."""
    w = weights[:, include]
    k = min(n_top, w.shape[1])
    top, bottom = w.topk(k, dim=1), w.topk(k, dim=1, largest=False)
    lo, hi = w.min(dim=1).values, w.max(dim=1).values
    width = ((hi - lo) / n_bins).clamp_min(1e-12)
    b = ((w - lo[:, None]) / width[:, None]).floor().clamp(0, n_bins - 1).long()
    rows = torch.arange(len(w))[:, None] * n_bins
    counts = torch.bincount((rows + b).reshape(-1), minlength=len(w) * n_bins).view(len(w), n_bins)
    edges = lo[:, None] + width[:, None] * torch.arange(n_bins + 1)[None, :]
    ids: list[int] = include.nonzero(as_tuple=True)[0].tolist()  # column of w -> token id
    tv, ti = top.values.double().round(decimals=4).tolist(), top.indices.tolist()
    bv, bi = bottom.values.double().round(decimals=4).tolist(), bottom.indices.tolist()
    edge_rows, count_rows = edges.double().round(decimals=4).tolist(), counts.tolist()
    return [
        {
            "top": [[vocab[ids[j]], v] for v, j in zip(tv[i], ti[i], strict=True)],
            "bottom": [[vocab[ids[j]], v] for v, j in zip(bv[i], bi[i], strict=True)],
            "hist": {"edges": edge_rows[i], "counts": count_rows[i]},
        }
        for i in range(len(w))
    ]


def _our_logit_path(model: Transformer, d: int, tokens: Tensor, vocab_size: int) -> LogitPath:
    """`logit_path` for our transformer: W_out for a hook inside the MLP, the identity for a residual hook."""
    W_out = model.block(0).mlp.W_out.detach().float().cpu()
    if d != W_out.shape[0]:  # a residual-stream hook: the direction is written as is
        W_out = torch.eye(W_out.shape[1])
    gain, W_U = model.ln_f.weight.detach().float().cpu(), model.W_U.detach().float().cpu()
    return LogitPath(W_out, gain, ln_inv_scale(model, tokens), W_U[:, :vocab_size])


def logit_path(model: nn.Module, site: HookSite, d: int, tokens: Tensor, vocab_size: int) -> LogitPath | None:
    """The direct path from a `d`-wide activation at `site` to the first `vocab_size` logits, or None
    (with a log line) where it is not generic; `tokens [n, T]` held-out contexts measure the norm's scale.

    Our transformer: the MLP's W_out for a hook inside the MLP, the identity for a residual hook, then
    ln_f. A Hugging Face model: the hooked activation must go straight into the residual stream (the
    input of a linear map whose output is d_model wide, e.g. GPT-2's `mlp.c_proj:input` or Llama's
    `mlp.down_proj:input`, or an output d_model wide); W_out is read off that map (`affine_map`), the
    final norm is found and checked by `probe_final_norm`, W_U is the output embedding. In a deeper
    model this is the *direct* path (the later layers are left out), as direct logit attribution.
    """
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    if isinstance(model, Transformer):
        return _our_logit_path(model, d, tokens, vocab_size)
    hf = model.hf if isinstance(model, HFSubject) else model
    get_output_embeddings = getattr(hf, "get_output_embeddings", None)  # a transformers PreTrainedModel's
    unembed = get_output_embeddings() if callable(get_output_embeddings) else None
    if unembed is None or not isinstance(getattr(unembed, "weight", None), Tensor):
        log.info("features: the model has no output embedding to read: logit weights skipped")
        return None
    W_U = unembed.weight.detach().float().cpu().T[:, :vocab_size]  # [d_model, vocab]
    d_model = W_U.shape[0]
    if site.which == "input":
        m = affine_map(site.module, d)
        W_out = m[0] if m is not None and m[0].shape[1] == d_model else None
    else:
        W_out = torch.eye(d) if d == d_model else None
    if W_out is None:
        log.info("features: %s is not written straight to the %d-wide residual stream: logit weights skipped",
                 site.spec, d_model)  # fmt: skip
        return None
    norm = probe_final_norm(model, unembed, tokens)
    if norm is None:
        log.info("features: no LayerNorm or RMSNorm found right before the unembedding: logit weights skipped")
        return None
    gain, center, inv_scale = norm
    return LogitPath(W_out, gain, inv_scale, W_U, center)
