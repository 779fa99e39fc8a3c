"""Evaluating an SAE on activations alone, with no model: reconstruction, sparsity and density.

    metrics = evaluate_on_activations(sae, acts)      # acts [N, d_in] (a tensor, or an iterable of batches)
    metrics["fvu"], metrics["l0"], metrics["dead_frac"]

The numbers of `sae eval` (paper.md §7) that need no forward pass of the subject: MSE, normalized
MSE, FVU, L0, L1 and the dead / dense / ultralow counts, all streamed over batches (`metrics.py`).
Loss recovered needs the model (`report.evaluate_sae`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from monosemantic.eval.metrics import FeatureStats, ReconstructionStats
from monosemantic.sae.model import SparseAutoencoder


@torch.no_grad()
def evaluate_on_activations(
    sae: SparseAutoencoder, activations: Tensor | Iterable[Tensor], batch_size: int = 4096
) -> dict[str, Any]:
    """Reconstruction and sparsity metrics of `sae` on raw activations `[N, d_in]` (or `[batch, d_in]` batches).

    Returns:
        `{"mse", "normalized_mse", "fvu", "l0", "l1", "n_dead", "dead_frac", "n_dense", "dense_frac",
        "n_ultralow", "ultralow_frac", "n_rows", "n_features"}` (definitions in `eval/metrics.py`).
    """
    batches = activations.split(batch_size) if isinstance(activations, Tensor) else activations
    recon, feats = ReconstructionStats(), FeatureStats(sae.cfg.n_features, device=sae.W_dec.device)
    for x in batches:
        x = x.to(sae.W_dec)
        x_hat, f = sae(x)
        recon.update(x, x_hat)
        feats.update(f)
    return {**recon.result(), **feats.summary(), "n_features": sae.cfg.n_features}
