"""Data-parallel training on torch.distributed: a handful of helpers that do nothing in one process.

    torchrun --nproc-per-node 4 -m monosemantic sae train --run-dir runs/demo  # 4 GPUs, one machine

Launched by `torchrun`, every process runs the same command; `init_from_env` (called by the CLI)
reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT and joins the group.
Backend: gloo for CPU tensors, nccl for CUDA tensors (`cpu:gloo,cuda:nccl` when CUDA is present,
so a `--device cpu` run on a GPU machine still works). Without torchrun every helper is a no-op and
the code path is the single-process one.

How the stages split the work (README "Scale: GPUs and several machines"):

- LM and SAE training are data parallel with the *same global batch* as one process: every rank
  draws the whole global batch (the draw is a pure function of seed and step, or of the store's
  read order), computes on its own contiguous slice of rows (`shard`), and the gradients are
  summed across ranks after each rank has weighted its own by its share of the rows
  (`average_grads_`). For a loss that is a mean over the batch of per-row terms (the 2023 and
  April recipes, the LM's cross-entropy) this is the one-process gradient up to float rounding.
  The weights start equal (same seed) and stay equal (same summed gradient, same Adam step).
  Reading the whole batch on every rank costs I/O, not compute, and keeps the data-dependent init
  (geometric median) and dead-feature resampling identical on all ranks without shipping 100
  batches over the network; the dead-feature counters are merged with a max all-reduce
  (`max_`), and the resampled weights are broadcast from rank 0 (`broadcast_`) as a guard.
- Harvest and the feature database split *contexts*: `shard_range(n)` gives each rank a disjoint,
  contiguous range of the n contexts (harvest: activations/parallel.py; the feature database:
  interp/build.py, whose per-rank records are merged on rank 0 by interp/merge.py with `sum_`,
  `max_`, `min_` and `gather_to_main`).
- Only rank 0 writes artifacts and checkpoints and shows progress (`is_main`); the other ranks'
  log level is raised to WARNING by `init_from_env`. Multi-node runs need the run directory on a
  filesystem that every node sees (checkpoints are written by rank 0 and read by all on resume).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_enabled() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes artifacts and shows progress."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun describes in the environment; False (nothing done) outside torchrun.

    `backend` defaults to `cpu:gloo,cuda:nccl` when CUDA is available, else `gloo`.
    """
    if not launched_by_torchrun() or is_enabled():
        return is_enabled()
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend)
    if not is_main():  # one voice: only rank 0 logs progress (warnings and errors still show)
        logging.getLogger("monosemantic").setLevel(logging.WARNING)
    log.info("distributed: %d processes, backend %s", world_size(), backend)
    return True


def shutdown(clean: bool = True) -> None:
    """Leave the process group at the end of a command.

    After a clean run every rank waits for the others first, so no rank tears its connections down
    while a peer is still finishing (gloo's exit was seen to abort one rank in 1 of many CI runs; the CLI
    then also skips the interpreter's teardown, `cli.main`).
    After a failure nothing is waited for or destroyed: the other ranks may be inside a collective,
    where a destroy would hang, and torchrun stops them anyway.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then on the other ranks once rank 0 is done.

    For the stages that are not split (corpus, tokenizer, evaluation): rank 0 builds the folder,
    and the other ranks' call finds it complete and reads it. If rank 0 fails, torchrun stops the
    others.
    """
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """This rank's contiguous slice `[lo, hi)` of n items (rows of a batch, contexts to harvest or score).

    The slices of ranks 0..world-1 are disjoint, cover range(n) in order, and differ in size by at most one.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return n * r // w, n * (r + 1) // w


def shard(x: Tensor) -> Tensor:
    """This rank's rows of a global batch `[batch, ...]` (all of them in one process)."""
    lo, hi = shard_range(x.shape[0])
    return x[lo:hi]


@torch.no_grad()
def average_grads_(params: Iterable[Tensor], weight: float) -> None:
    """Gradients of the global batch from each rank's gradient of its slice, in place.

    `weight` is this rank's share of the global batch's rows (len(slice) / len(batch)): for a loss
    that is a mean over rows, Σ_ranks weight · grad(slice) = grad(global batch). One all-reduce
    per parameter; parameters without a gradient are skipped on every rank alike.
    """
    if not is_enabled():
        return
    for p in params:
        if p.grad is not None:
            p.grad.mul_(weight)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


@torch.no_grad()
def max_(tensors: Iterable[Tensor]) -> None:
    """Element-wise max across ranks, in place (the dead-feature counters: last step each feature fired)."""
    if is_enabled():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)


@torch.no_grad()
def min_(tensors: Iterable[Tensor]) -> None:
    """Element-wise min across ranks, in place."""
    if is_enabled():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)


@torch.no_grad()
def sum_(tensors: Iterable[Tensor]) -> None:
    """Element-wise sum across ranks, in place (counts and sums of disjoint shares of the data)."""
    if is_enabled():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def gather_to_main(t: Tensor) -> list[Tensor] | None:
    """Every rank's `t` (same shape and dtype on every rank), in rank order, on rank 0; None elsewhere.

    In one process: `[t]`."""
    if not is_enabled():
        return [t]
    out = [torch.empty_like(t) for _ in range(world_size())] if is_main() else None
    dist.gather(t.contiguous(), out, dst=0)
    return out


def broadcast_object(obj: T) -> T:
    """Rank 0's value of a picklable `obj` on every rank (e.g. a decision that must be the same everywhere)."""
    if not is_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def mean_(tensors: Iterable[Tensor]) -> None:
    """Mean across ranks, in place (logged running sums, so a log row describes the global batch)."""
    if is_enabled():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(world_size())


@torch.no_grad()
def broadcast_(tensors: Iterable[Tensor], src: int = 0) -> None:
    """Overwrite every rank's tensors with rank `src`'s, in place."""
    if is_enabled():
        for t in tensors:
            dist.broadcast(t, src=src)
