"""The paper's control model: a copy of a trained transformer with each weight matrix shuffled.

paper.md §8.9 ("Model or data?", paper.md §8.8–8.9) trains dictionaries on "a transformer whose weight
matrices had their entries randomly shuffled": the statistics of every matrix are kept (each keeps
its exact multiset of entries) but all learned structure is destroyed, so features that survive
reflect token statistics rather than computation. Matrices = parameters with two or more
dimensions (embeddings, attention, MLP, unembedding); biases and LayerNorm gains are vectors and
stay as they are.

    monosemantic lm shuffle --run runs/default            # writes transformer/A-shuffled
    monosemantic harvest --run runs/default --model A-shuffled
    monosemantic sae train --run runs/default --model A-shuffled
"""

from __future__ import annotations

import logging

import torch

from monosemantic import paths, provenance
from monosemantic.errors import UserError
from monosemantic.io import is_complete, read_config, save_tensors, stage_dir, write_config, write_json

log = logging.getLogger(__name__)

KIND = "monosemantic.transformer"


def shuffle_matrices(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A new state dict: every tensor with >= 2 dimensions has its entries randomly permuted.

    One generator seeded with `seed` draws the permutations in sorted-name order (reproducible).
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(state):
        t = state[name]
        if t.dim() >= 2:
            flat = t.reshape(-1)
            t = flat[torch.randperm(flat.numel(), generator=g)].reshape(t.shape)
        out[name] = t.clone()
    return out


def write_shuffled(
    layout: paths.RunLayout, model: str = "A", out_model: str | None = None, seed: int = 0, force: bool = False
) -> dict:
    """Write `transformer/<out_model>` (default `<model>-shuffled`), a shuffled copy of `model`."""
    from monosemantic.io import load_tensors

    src = layout.transformer(model)
    if not is_complete(src):
        raise UserError(f"{src}: no model {model}; run `monosemantic lm train --run {layout.root} --model {model}`")
    out_model = out_model or f"{model}-shuffled"
    out = layout.transformer(out_model)
    ins = provenance.inputs(out, [src], root=layout.root)
    if provenance.reuse(out, ins, force):
        log.info("%s exists: skipping (use --force to redo)", out)
        return read_config(out / paths.CONFIG, KIND)
    force = force or out.exists()
    cfg = read_config(src / paths.CONFIG, KIND)
    state = shuffle_matrices(load_tensors(src / paths.MODEL_WEIGHTS), seed)
    body = {"model": cfg["model"], "train": cfg.get("train"), "name": out_model,
            "shuffled_from": model, "shuffle_seed": seed}  # fmt: skip
    with stage_dir(out, force=force) as tmp:
        save_tensors(tmp / paths.MODEL_WEIGHTS, state)
        write_json(tmp / paths.METRICS, {"shuffled_from": model, "shuffle_seed": seed})
        write_config(tmp / paths.CONFIG, KIND, body)
        provenance.record(tmp, ins)
    return body
