"""The SAE stage: train a ladder of dictionaries (sizes, one architecture) in one pass over a stream.

    saes = train_ladder(batches, d_in=512, n_rows=4_000_000, ladder=LadderConfig(), train=SAETrainConfig(),
                        out_root=Path("runs/demo/sae/A/blocks.0.mlp.hook_post"))

The dictionaries share one read of the activations (users of every peer tool ask for cheap
sweeps), which is also what the paper's feature-splitting analysis needs: the same data at
several sizes ([TM] "Feature Splitting": A/0 512, A/1 4,096, …). Each SAE lands in its own
folder `out_root/<arch>-<n_features>/` holding `sae.safetensors`, `cfg.json` (the model),
`training.json` (the recipe, the data, what happened) and `train_log.jsonl`.

The stream is any `Iterator[Tensor]` of `[batch, d_in]` (STYLE P6): this module never learns
where the activations came from; the caller (the CLI) opens the store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from monosemantic import distributed
from monosemantic.errors import UserError
from monosemantic.io import is_complete, stage_dir, write_json
from monosemantic.paths import SAE_CONFIG, TRAIN_LOG, TRAINING_JSON
from monosemantic.sae.checkpoint import SAECheckpointer
from monosemantic.sae.recipe import TRAIN_CONFIGS, TrainRecipe
from monosemantic.sae.registry import SAE_CLASSES
from monosemantic.sae.train import train_sae

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LadderConfig:
    """Which dictionaries to train in one pass: an architecture and a ladder of sizes."""

    arch: Literal["tm2023", "april2024", "topk"] = "tm2023"
    """tm2023 (the paper's recipe, default), april2024 (Anthropic's April 2024 update) or topk."""
    n_features: tuple[int, ...] = (512, 1024, 2048, 4096)
    """Dictionary sizes; all train on the same stream (1x to 8x the 512 neurons)."""
    l1_coeffs: tuple[float, ...] = ()
    """An L1 sweep: λ values, each trained at every size (empty: the recipe's l1_coeff)."""
    k: int = 32
    """Active features per row (topk only)."""
    init_seed: int = 0
    """Seed of the weight initialisation (the size is added, so each size differs)."""

    def __post_init__(self) -> None:
        if self.arch not in SAE_CLASSES:
            raise ValueError(f"arch must be one of {', '.join(SAE_CLASSES)}, got {self.arch}")
        sizes, l1s = self.n_features, self.l1_coeffs
        if not isinstance(sizes, tuple) or not sizes or any(type(n) is not int or n <= 0 for n in sizes):
            raise ValueError(f"n_features must be a tuple of positive integers, got {sizes!r}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"n_features must be distinct, got {sizes!r}")
        if not isinstance(l1s, tuple) or any(not isinstance(x, int | float) or not x >= 0 for x in l1s):
            raise ValueError(f"l1_coeffs must be a tuple of numbers >= 0, got {l1s!r}")
        if len(set(l1s)) != len(l1s):
            raise ValueError(f"l1_coeffs must be distinct, got {l1s!r}")

    def members(self) -> list[tuple[int, float | None]]:
        """(n_features, λ or None for the recipe's) of every SAE, sizes outermost."""
        sweep: tuple[float | None, ...] = self.l1_coeffs or (None,)
        return [(n, l1) for n in self.n_features for l1 in sweep]

    def name(self, n_features: int, l1: float | None = None) -> str:
        return f"{self.arch}-{n_features}" + (f"-l1_{l1:g}" if l1 is not None else "")


def steps_for(train: TrainRecipe, n_rows: int) -> TrainRecipe:
    """Cap `n_steps` at one pass over `n_rows` inputs: the paper never repeats data (paper.md §2)."""
    one_pass = n_rows // train.batch_size
    if one_pass < 1:
        raise UserError(f"{n_rows} activation rows are fewer than one batch of {train.batch_size}")
    if train.n_steps > one_pass:
        log.info("n_steps %d > one pass over %d rows; training %d steps", train.n_steps, n_rows, one_pass)
        return dataclasses.replace(train, n_steps=one_pass)
    return train


class _FiniteGuard:
    """A training logger that stops the run with a one-line error once a logged loss is NaN or inf.

    Inputs are checked as they are read (activations/store.py), so a non-finite loss means the
    optimisation diverged (too high a learning rate, say); nothing is written (`stage_dir`).
    """

    def __init__(self, names: list[str], out_root: Path):
        self.names, self.out_root, self.i = names, out_root, 0

    def log(self, row: dict[str, float]) -> None:
        name = self.names[self.i % len(self.names)]  # one row per SAE, in order, every log_every steps
        self.i += 1
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise UserError(
                f"{self.out_root / name}: training diverged at step {row.get('step', '?')} "
                f"({', '.join(bad)} not finite); lower --lr or check the activations"
            )


def train_ladder(
    batches: Iterator[Tensor] | Callable[[int], Iterator[Tensor]],
    d_in: int,
    n_rows: int,
    ladder: LadderConfig,
    train: TrainRecipe,
    out_root: Path,
    source: dict[str, Any],
    force: bool = False,
    device: str | torch.device = "cpu",
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> dict[str, Path]:
    """Train every size of `ladder` not yet on disk under `out_root`; returns name -> folder.

    `train` is the arch's train config (`TRAIN_CONFIGS[ladder.arch]`); its n_steps is
    capped at one pass over `n_rows`. `source` (where the activations came from) is recorded.

    Checkpoints (sae/checkpoint.py): with `checkpoint_dir`, the state is saved there every
    `checkpoint_every` steps, a checkpoint found there is resumed (`resume` makes one required),
    `force` discards it, and it is deleted once the SAEs are written. Resuming needs `batches` as
    a function of the number of rows to skip (`lambda skip: store.batches(bs, seed, skip_rows=skip)`).
    In a data-parallel run only rank 0 writes; the others wait for it.
    """
    sae_class, config_class = SAE_CLASSES[ladder.arch], TRAIN_CONFIGS[ladder.arch]
    if not isinstance(train, config_class):
        raise TypeError(f"{ladder.arch} trains with {config_class.__name__}, got {type(train).__name__}")
    train = steps_for(train, n_rows)
    if ladder.l1_coeffs and not hasattr(train, "l1_coeff"):
        raise UserError(f"--l1-coeffs: --arch {ladder.arch} has no L1 coefficient")
    folders = {ladder.name(*m): out_root / ladder.name(*m) for m in ladder.members()}
    todo = [m for m in ladder.members() if force or not is_complete(folders[ladder.name(*m)], SAE_CONFIG)]
    for m in ladder.members():
        if m not in todo:
            log.info("%s exists: skipping (use --force to retrain)", folders[ladder.name(*m)])
    if not todo:
        return folders
    ckpt = _checkpointer(checkpoint_dir, checkpoint_every, todo, ladder, train, source, force, resume)
    start = ckpt.step() if ckpt else 0
    if start:
        if not callable(batches):
            raise UserError(f"{checkpoint_dir}: resuming needs a stream that can skip rows")
        log.info("resuming from step %d (%s)", start, checkpoint_dir)
    stream = batches(start * train.batch_size) if callable(batches) else batches

    saes, cfgs = [], []
    for n, l1 in todo:
        cfgs.append(train if l1 is None else dataclasses.replace(train, l1_coeff=l1))
        shape: dict[str, Any] = {"d_in": d_in, "n_features": n}
        if ladder.arch == "topk":
            shape["k"] = ladder.k
        gen = torch.Generator().manual_seed(ladder.init_seed + n)
        saes.append(sae_class(sae_class.config_class(**shape), generator=gen).to(device))
    names = [ladder.name(*m) for m in todo]
    log.info("training %s on %d rows (%d steps of %d)", ", ".join(names), n_rows, train.n_steps, train.batch_size)
    try:
        results = train_sae(saes, stream, cfgs, logger=_FiniteGuard(names, out_root), checkpoint=ckpt)
    finally:  # a generator stream may hold files or a reader thread (activations/prefetch.py): release them now
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    for name, sae in zip(names, saes, strict=True):  # never save a diverged SAE
        bad = [k for k, v in sae.named_parameters() if not torch.isfinite(v).all()]
        if bad:
            raise UserError(f"{out_root / name}: training diverged (NaN/inf in {', '.join(bad)}); lower --lr")
    if not distributed.is_main():
        distributed.barrier()  # rank 0 writes the SAEs
        return folders

    for name, sae, cfg, result in zip(names, saes, cfgs, results, strict=True):
        with stage_dir(folders[name], force=force) as tmp:
            sae.save(tmp)
            (tmp / TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in result.history))
            training = {
                "arch": ladder.arch,
                "train": dataclasses.asdict(cfg),
                "source": source,
                "n_steps": result.n_steps,
                "n_activations": result.n_activations,
                "resampled": result.resampled,
                "input_scale": result.input_scale,
                "final": result.history[-1] if result.history else {},
            }
            write_json(tmp / TRAINING_JSON, training)
    if ckpt:
        ckpt.discard()
    distributed.barrier()
    return folders


def _checkpointer(
    folder: Path | None,
    every: int,
    todo: list[tuple[int, float | None]],
    ladder: LadderConfig,
    train: TrainRecipe,
    source: dict[str, Any],
    force: bool,
    resume: bool,
) -> SAECheckpointer | None:
    if folder is None:
        if resume:
            raise UserError("--resume: this run keeps no checkpoints")
        return None
    expected = {
        "names": [ladder.name(*m) for m in todo],
        "ladder": dataclasses.asdict(ladder),
        "train": {k: v for k, v in dataclasses.asdict(train).items() if k != "progress"},
        "source": source,
    }
    ckpt = SAECheckpointer(folder, every, expected)
    if force:
        ckpt.discard()
        distributed.barrier()
    if resume and not ckpt.step():
        raise UserError(f"--resume: no checkpoint in {folder}")
    return ckpt
