"""Logit weights of features and neurons ([TM] "logit weights", reference §8.3).

The direct path from a feature to the next-token logits, with the final LayerNorm linearised:

    logits_i = W_U · L · π · W_out · d_i            (column vectors, as the paper writes it)

d_i the feature's decoder direction in neuron space `[d_mlp]` (a neuron: the unit vector e_i),
W_out the MLP's output weights, π = I − 11ᵀ/d_model LayerNorm's mean removal, L = diag(γ)/σ̄ its
scale with γ the LN gain and σ̄ the *typical* standard deviation of the residual stream at ln_f
(the paper says "an approximation of ... the scaling terms" without saying which; we take
1/σ̄ = mean over held-out tokens of 1/√(var + eps), the factor LN actually applied on average,
docs/LOG.md 2026-11-25). The LN bias and b_U add the same vector to every feature and drop out.
The softmax is shift-invariant, so each feature's weights are shifted to a median of zero over
the tokens shown (the paper's convention); tokens rarer than a threshold in the training split
are left out ([TM] footnote 15; threshold ours).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from monosemantic.activations.capture import capture
from monosemantic.data.tokens import TokenSplit


def logit_effects(directions: Tensor, W_out: Tensor, ln_gain: Tensor, inv_scale: float, W_U: Tensor) -> Tensor:
    """`directions [n, d_mlp]` → logit weights `[n, vocab]` (before the median shift).

    W_out `[d_mlp, d_model]`, ln_gain `[d_model]`, W_U `[d_model, vocab]` (the model's layouts).
    """
    r = directions @ W_out  # [n, d_model]: what the feature writes to the residual stream
    r = r - r.mean(dim=-1, keepdim=True)  # π
    return (r * (ln_gain * inv_scale)) @ W_U  # L, then the unembedding


def median_shift(weights: Tensor, include: Tensor) -> Tensor:
    """Subtract, per row of `weights [n, vocab]`, the median over the included tokens `include [vocab]`."""
    med = weights[:, include].median(dim=1, keepdim=True).values
    return weights - med


@torch.inference_mode()
def ln_inv_scale(model: nn.Module, tokens: Tensor, batch_size: int = 16) -> float:
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
    ids = include.nonzero(as_tuple=True)[0]
    k = min(n_top, w.shape[1])
    top, bottom = w.topk(k, dim=1), w.topk(k, dim=1, largest=False)
    lo, hi = w.min(dim=1).values, w.max(dim=1).values
    width = ((hi - lo) / n_bins).clamp_min(1e-12)
    b = ((w - lo[:, None]) / width[:, None]).floor().clamp(0, n_bins - 1).long()
    rows = torch.arange(len(w))[:, None] * n_bins
    counts = torch.bincount((rows + b).reshape(-1), minlength=len(w) * n_bins).view(len(w), n_bins)
    edges = lo[:, None] + width[:, None] * torch.arange(n_bins + 1)[None, :]
    ids = ids.tolist()
    tv, ti = top.values.double().round(decimals=4).tolist(), top.indices.tolist()
    bv, bi = bottom.values.double().round(decimals=4).tolist(), bottom.indices.tolist()
    edges, counts = edges.double().round(decimals=4).tolist(), counts.tolist()
    return [
        {
            "top": [[vocab[ids[j]], v] for v, j in zip(tv[i], ti[i], strict=True)],
            "bottom": [[vocab[ids[j]], v] for v, j in zip(bv[i], bi[i], strict=True)],
            "hist": {"edges": edges[i], "counts": counts[i]},
        }
        for i in range(len(w))
    ]
