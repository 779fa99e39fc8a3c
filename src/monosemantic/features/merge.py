"""Merge the feature-database records of several torchrun ranks (build.py shards the contexts).

Each rank streams a contiguous share of the held-out contexts, cut at batch boundaries so that
every batch is the one a single process would run (the same forward on the same contexts, so
the same activations bit for bit). Its records (records.py) are then merged:

- pass 1, on every rank (pass 2 needs the global max and smallest non-zero for its histogram
  edges and intervals): counts and sums by an all-reduce sum (`n_active` exact; `total` and
  `by_source` are float64 sums in another order, equal to about 1e-15 relative), `max` and
  `min_nonzero` by max and min (exact);
- the kept examples (top-k, interval and random samples) on rank 0 only: every rank's bottom-k
  state is gathered and merged in rank order (`BottomK.merge`), which is exactly the one-process
  state, ties included, because rank order is stream order and the sample keys are hashes of
  (seed, token, feature) rather than draws in stream order;
- pass 2's histogram and interval counts by an all-reduce sum (integers: exact).

In one process every function here is a no-op (or returns its input).
"""

from __future__ import annotations

from collections.abc import Sequence

from monosemantic import distributed
from monosemantic.features.records import BottomK, Samples, Stats


def merge_stats_(stats: Sequence[Stats]) -> None:
    """In place, on every rank: the pass-1 statistics of all ranks' contexts."""
    distributed.sum_(t for s in stats for t in (s.n_active, s.total, s.by_source))
    distributed.max_(s.max for s in stats)
    distributed.min_(s.min_nonzero for s in stats)


def merge_keeper(keep: BottomK) -> BottomK:
    """On rank 0: the keeper of all ranks' entries (rank 0's own object, merged in rank order);
    on the other ranks: their own keeper, unchanged (it is not used again)."""
    if not distributed.is_enabled():
        return keep
    gathered = [distributed.gather_to_main(t) for t in keep.state()]
    if not distributed.is_main():
        return keep
    merged = BottomK.from_state(gathered_rank(gathered, 0))
    for r in range(1, distributed.world_size()):
        merged.merge(BottomK.from_state(gathered_rank(gathered, r)))
    return merged


def gathered_rank(gathered: list[list | None], rank: int) -> list:
    """Rank `rank`'s tensors out of `[gather_to_main(t) for t in tensors]`."""
    return [g[rank] for g in gathered]  # type: ignore[index]  # main rank: gather_to_main returned every list


def merge_samples_(samples: Samples) -> None:
    """In place: pass 2's counts summed on every rank, the samples merged on rank 0."""
    distributed.sum_([samples.hist, samples.interval_count])
    samples.intervals = merge_keeper(samples.intervals)
    samples.random = merge_keeper(samples.random)
