"""Choosing λ automatically: a sweep in one pass, judged on held-out activations (`--auto-l1`).

    l1s = candidates(0.008)                              # the recipe's λ × (1/4, 1/2, 1, 2, 4, 8)
    scores = [held_out_score(sae, held_out) for sae in saes]
    chosen = pick(l1s, [s["fvu"] for s in scores], margin=0.05)

The rule (docs/decisions.md, "Choosing λ by held-out FVU"): among the candidates, the largest λ
(the sparsest dictionary) whose held-out fraction of variance unexplained is at most the
smallest λ's plus `margin`. Larger λ trades reconstruction for sparsity; the smallest λ of the
grid stands for "as little penalty as we consider", and the margin says how much reconstruction
we give up for sparsity. FVU rather than loss recovered because the SAE stage has no model to
splice into (`sae eval` measures loss recovered afterwards). Pure functions, no training here:
`ladder.train_ladder` trains the candidates in one pass over the stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from monosemantic.sae.model import SparseAutoencoder

FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The candidates, as multiples of the recipe's λ."""
HELD_OUT_ROWS = 65_536
"""Rows held out of training to judge the candidates (at most 5 % of the data)."""


def candidates(l1: float) -> tuple[float, ...]:
    """λ × each of `FACTORS`, rounded to 3 significant digits (they name the sweep's folders)."""
    return tuple(float(f"{l1 * f:.3g}") for f in FACTORS)


@torch.no_grad()
def held_out_score(sae: SparseAutoencoder, batches: Sequence[Tensor]) -> dict[str, float]:
    """FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² and L0 over held-out batches `[batch, d_in]` (raw activations)."""
    X = torch.cat(list(batches)).to(sae.W_dec)  # (N, d_in)
    sse = l0 = 0.0
    for x in X.split(4096):
        x_hat, f = sae(x)
        sse += float((x - x_hat).pow(2).sum())
        l0 += float((f > 0).sum())
    total = float((X - X.mean(dim=0)).pow(2).sum())
    return {"fvu": sse / total if total > 0 else float("nan"), "l0": l0 / len(X)}


def pick(l1s: Sequence[float], fvus: Sequence[float], margin: float) -> float:
    """The largest λ whose FVU ≤ the smallest λ's FVU + `margin` (module docstring)."""
    if not l1s or len(l1s) != len(fvus):
        raise ValueError("pick: one FVU per λ, at least one")
    order = sorted(range(len(l1s)), key=lambda i: l1s[i])
    limit = fvus[order[0]] + margin
    ok = [l1s[i] for i in order if fvus[i] <= limit]
    return ok[-1] if ok else l1s[order[0]]
