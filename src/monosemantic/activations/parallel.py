"""Harvest on several processes (torchrun): each rank runs its share of the contexts, rank 0 merges.

    torchrun --standalone --nproc-per-node 4 -m monosemantic harvest --run runs/demo --device cuda

The seeded context order of a one-process harvest is cut into `world_size` contiguous slices
(`distributed.shard_range`), so the ranks' contexts are disjoint and together are exactly the
contexts one process would use. Each rank harvests its slice with `harvest(..., share=(rank,
world))` into a hidden folder of its own beside the store; then rank 0 moves every rank's shards
into one store folder, numbered rank by rank, and writes one `config.json` describing them all
(the folder appears whole, by `io.stage_dir`, as in one process). Positions within a context and
the shuffles within a shard come from a generator seeded by (seed, rank), so the rows differ from
a one-process harvest of the same seed (another sample of the same distribution) but are the same
for every run with the same seed and number of processes. The reader shuffles across shards, so
a batch still mixes contexts of every rank.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch.distributed as dist
from torch import nn

from monosemantic import distributed, paths
from monosemantic.activations.harvest import HarvestConfig, harvest, positions_per_context
from monosemantic.activations.store import ACTS_FILE, KIND, ROWS_FILE
from monosemantic.data.tokens import TokenSplit
from monosemantic.errors import UserError
from monosemantic.io import read_config, stage_dir, write_config


def rank_folder(out: Path, rank: int) -> Path:
    return out.parent / f".{out.name}.rank{rank}"


def harvest_sharded(
    model: nn.Module,
    split: TokenSplit,
    module: nn.Module,
    ctx_len: int,
    cfg: HarvestConfig,
    out: Path,
    progress: bool = True,
    force: bool = False,
    extra: Mapping[str, Any] | None = None,
    which: Literal["output", "input"] = "output",
) -> dict[str, Any]:
    """`harvest` split across the ranks of the process group; every rank returns the merged config body."""
    rank, world = distributed.rank(), distributed.world_size()
    n_ctx = math.ceil(cfg.n_tokens / positions_per_context(cfg, ctx_len))
    if n_ctx < world:
        raise UserError(f"{out}: {n_ctx} contexts cannot be shared by {world} processes; harvest more rows")
    mine = rank_folder(out, rank)
    body = harvest(model, split, module, ctx_len, cfg, mine, progress and rank == 0, True, extra, which, (rank, world))
    bodies: list[Any] = [None] * world
    dist.all_gather_object(bodies, body)
    if rank == 0:
        _merge(out, bodies, force)
    distributed.barrier()  # the store is complete
    return read_config(out / paths.CONFIG, KIND)


def _merge(out: Path, bodies: list[dict[str, Any]], force: bool) -> dict[str, Any]:
    shards, seconds = [], max(b["seconds"] for b in bodies)
    with stage_dir(out, force) as tmp:
        for rank, body in enumerate(bodies):
            src = rank_folder(out, rank)
            for shard in body["shards"]:
                i = len(shards)
                names = {"acts": ACTS_FILE.format(i), "rows": ROWS_FILE.format(i)}
                for key, name in names.items():
                    os.replace(src / shard[key], tmp / name)
                shards.append({**names, "n_rows": shard["n_rows"]})
        n_contexts, n_rows = sum(b["n_contexts"] for b in bodies), sum(b["n_rows"] for b in bodies)
        merged = {
            **bodies[0],
            "n_rows": n_rows,
            "shards": shards,
            "n_contexts": n_contexts,
            "tokens_per_s": n_contexts * bodies[0]["ctx_len"] / max(seconds, 1e-9),
            "rows_per_s": n_rows / max(seconds, 1e-9),
            "seconds": seconds,
            "n_processes": len(bodies),
        }
        write_config(tmp / paths.CONFIG, KIND, merged)
    for rank in range(len(bodies)):
        shutil.rmtree(rank_folder(out, rank), ignore_errors=True)
    return merged
