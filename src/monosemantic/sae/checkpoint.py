"""Crash-safe checkpoints of SAE training: everything `train_sae` needs to continue bit for bit.

    ckpt = SAECheckpointer(folder, every=500, expected={"names": [...], "train": [...]})
    start = ckpt.step()                                   # 0 without a checkpoint
    train_sae(saes, store.batches(bs, seed, skip_rows=start * bs), cfgs, checkpoint=ckpt)

State saved for every SAE trained in the pass (`_Run` in train.py): its weights, its Adam state,
the dead-feature counter (`last_fired`), the input scale, the resampling generator and the
resamples done so far, the running log sums and the log history; for the process: the global
RNG states and the step. The step is the data position: `train_sae` reads its stream front to
back and puts every batch it peeks at (the data-dependent init, resampling) back in front, so
after step s it has trained on exactly the stream's first s batches, and a resumed run starts
the stream s batches in (`ActivationSource.batches(skip_rows=s * batch_size)`). A checkpoint is
saved after the step's resampling and logging, so it never falls inside either.

The files and their write order are `monosemantic.checkpoint`'s (sha256-verified, atomic); only
rank 0 writes them in a data-parallel run, and every rank reads them on resume.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monosemantic import checkpoint, distributed
from monosemantic.errors import UserError
from monosemantic.sae.resample import Kept
from monosemantic.sae.train import _Run


@dataclass(frozen=True)
class CheckpointConfig:
    """How often SAE training saves a crash-safe checkpoint."""

    checkpoint_every: int = 1000
    """Save the whole training state every this many steps (0: never). A save costs about one step per
    100k features of 512 inputs on a CPU; a resumed run continues bit for bit."""

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an int >= 0, got {self.checkpoint_every}")


class SAECheckpointer:
    """`train_sae`'s checkpoint hook: restores the state at the start, saves it every `every` steps.

    `expected` (JSON-able: the SAE names, configs, data source) is stored in the checkpoint and must
    match on resume, so a checkpoint is never applied to a different run.
    """

    def __init__(self, folder: Path, every: int, expected: dict[str, Any]):
        self.folder, self.every, self.expected = Path(folder), every, expected

    def step(self) -> int:
        """The step the checkpoint in `folder` holds (from its JSON alone), 0 when there is none."""
        return checkpoint.read_meta(self.folder)["step"] if checkpoint.exists(self.folder) else 0

    def discard(self) -> None:
        if distributed.is_main():
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.folder.parent.is_dir() and not any(self.folder.parent.iterdir()):
                self.folder.parent.rmdir()  # RUN/checkpoints/ goes when its last checkpoint does

    def restore(self, runs: Sequence[_Run]) -> int:
        if not checkpoint.exists(self.folder):
            return 0
        tensors, meta = checkpoint.read(self.folder, self.expected)
        if len(meta["runs"]) != len(runs):
            raise UserError(f"{self.folder}: checkpoint holds {len(meta['runs'])} SAEs, this run trains {len(runs)}")
        for i, (r, m) in enumerate(zip(runs, meta["runs"], strict=True)):
            p = f"sae{i}"
            device = r.sae.W_dec.device
            r.sae.load_state_dict({k[len(p) + 7 :]: v for k, v in tensors.items() if k.startswith(f"{p}.model.")})
            checkpoint.load_optimizer(r.opt, tensors, f"{p}.optim", m["param_groups"])
            r.last_fired.copy_(tensors[f"{p}.last_fired"])
            r.scale = m["scale"]
            if f"{p}.generator" in tensors:
                r.generator = torch.Generator(device)
                r.generator.set_state(tensors[f"{p}.generator"])
            r.sums = {k: tensors[f"{p}.sums.{k}"].to(device) for k in m["sums"]}
            r.n_summed, r.n_activations = m["n_summed"], m["n_activations"]
            r.history = m["history"]
            r.resampled = [tuple(x) for x in m["resampled"]]
            if r.kept is not None and "kept" in m:
                _restore_kept(r.kept, tensors, p, m["kept"], device)
        checkpoint.set_rng_state(tensors, meta["rng"])
        return meta["step"]

    def after_step(self, runs: Sequence[_Run], step: int) -> None:
        if self.every and step % self.every == 0 and distributed.is_main():
            self.save(runs, step)

    def save(self, runs: Sequence[_Run], step: int) -> None:
        tensors, rng_json = checkpoint.rng_state()
        metas = []
        longest = max((r.kept.batches for r in runs if r.kept is not None), key=len, default=())
        tensors.update({f"kept.batch.{j}": batch for j, (batch, _) in enumerate(longest)})  # the stream's: shared
        for i, r in enumerate(runs):
            p = f"sae{i}"
            tensors.update({f"{p}.model.{k}": v for k, v in r.sae.state_dict().items()})
            optim, groups = checkpoint.optimizer_tensors(r.opt, f"{p}.optim")
            tensors.update(optim)
            tensors[f"{p}.last_fired"] = r.last_fired
            if r.generator is not None:
                tensors[f"{p}.generator"] = r.generator.get_state()
            tensors.update({f"{p}.sums.{k}": v for k, v in r.sums.items()})
            metas.append(
                {
                    "param_groups": groups,
                    "scale": r.scale,
                    "sums": list(r.sums),
                    "n_summed": r.n_summed,
                    "n_activations": r.n_activations,
                    "history": r.history,
                    "resampled": r.resampled,
                    **({"kept": _kept_tensors(r.kept, p, tensors)} if r.kept is not None else {}),
                }
            )
        checkpoint.write(self.folder, step, tensors, {**self.expected, "runs": metas, "rng": rng_json})


def _kept_tensors(kept: Kept, prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """Add one run's kept losses, added rows and pending seeds to `tensors`; its counts, for the JSON. The
    kept batches themselves are the stream's last ones, saved once for all runs (`kept.batch.j`)."""
    for j, ((_, added), loss) in enumerate(zip(kept.batches, kept.losses, strict=True)):
        tensors[f"{prefix}.kept.added.{j}"], tensors[f"{prefix}.kept.loss.{j}"] = added, loss
    tensors.update({f"{prefix}.kept.pending.{j}": rows for j, rows in enumerate(kept.pending)})
    return {"batches": len(kept.batches), "pending": len(kept.pending)}


def _restore_kept(
    kept: Kept, tensors: dict[str, torch.Tensor], prefix: str, counts: dict[str, int], device: torch.device
) -> None:
    n_shared = sum(1 for k in tensors if k.startswith("kept.batch."))
    shared = [tensors[f"kept.batch.{j}"] for j in range(n_shared - counts["batches"], n_shared)]
    kept.batches.clear()
    kept.losses.clear()
    for j, batch in enumerate(shared):
        kept.keep(
            batch.to(device),
            tensors[f"{prefix}.kept.added.{j}"].to(device),
            tensors[f"{prefix}.kept.loss.{j}"].to(device),
        )
    kept.pending = [tensors[f"{prefix}.kept.pending.{j}"].to(device) for j in range(counts["pending"])]
