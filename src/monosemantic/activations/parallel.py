"""Harvest on several processes (torchrun): each rank's folder beside the store, and rank 0's merge.

    torchrun --standalone --nproc-per-node 4 -m monosemantic harvest --run runs/demo --device cuda

The seeded context order of a one-process harvest is cut into `world_size` contiguous slices
(`distributed.shard_range`), so the ranks' contexts are disjoint and together are exactly the
contexts one process would use. Each rank harvests its slice with `harvest(..., share=(rank,
world))` into a hidden folder of its own beside the store (`rank_folder`); then rank 0 moves every
rank's shards into one store folder, numbered rank by rank, and writes one `config.json`
describing them all (`merge`; the folder appears whole, by `io.stage_dir`, as in one process).
A rank folder is named and held as a temporary (writers.py) until the merge is done, so those a
killed harvest left are removed by the next command that writes the run, as every temporary.
`harvest.harvest_sharded` runs these steps; this module knows nothing of harvesting itself, so
the import goes one way, harvest.py → parallel.py. Positions within a context and
the shuffles within a shard come from a generator seeded by (seed, rank), so the rows differ from
a one-process harvest of the same seed (another sample of the same distribution) but are the same
for every run with the same seed and number of processes. The reader shuffles across shards, so
a batch still mixes contexts of every rank.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from monosemantic import paths, provenance
from monosemantic.activations.store import ACTS_FILE, KIND, ROWS_FILE
from monosemantic.io import stage_dir, write_config


def rank_folder(out: Path, rank: int) -> Path:
    """The hidden folder beside the store `out` where `rank` writes its share: `.<store>.rank0001.tmp`,
    a temporary's name (`writers.TEMP_NAME`), so that a sweep removes it once no live rank holds it."""
    return out.parent / f".{out.name}.rank{rank:04d}.tmp"


def merge(
    out: Path, bodies: list[dict[str, Any]], force: bool, inputs: provenance.Inputs | None = None
) -> dict[str, Any]:
    """Rank 0: move every rank's shards into the store `out` and write its config.json; returns its body.

    `bodies` are the ranks' config bodies, in rank order; their folders are removed afterwards."""
    shards: list[dict[str, Any]] = []
    seconds = max(b["seconds"] for b in bodies)
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
        if inputs is not None:
            provenance.record(tmp, inputs)
    for rank in range(len(bodies)):
        shutil.rmtree(rank_folder(out, rank), ignore_errors=True)
    return merged
