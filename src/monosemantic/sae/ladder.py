"""The SAE stage: train a ladder of dictionaries (sizes, one architecture) in one pass over a stream.

    saes = train_ladder(batches, d_in=512, n_rows=4_000_000, ladder=LadderConfig(), train=SAETrainConfig(),
                        out_root=Path("runs/demo/sae/A/blocks.0.mlp.hook_post"))

The dictionaries share one read of the activations (users of every peer tool ask for cheap
sweeps), which is also what the paper's feature-splitting analysis needs: the same data at
several sizes ([TM] "Feature Splitting": A/0 512, A/1 4,096, …). Each SAE lands in its own
folder `out_root/<arch>-<n_features>/` holding `sae.safetensors`, `cfg.json` (the model),
`training.json` (the recipe, the data, what happened) and `train_log.jsonl`.

The stream is any `Iterator[Tensor]` of `[batch, d_in]` (STYLE P6): this module never learns
where the activations came from; the caller (the CLI) opens the store. The recipe is fitted to
the run's length first (`TrainConfig.for_run`). With `auto_l1` each size trains a λ grid on
the stream minus a held-out share and keeps the λ that `sweep.pick` chooses (sweep.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from monosemantic import checkpoint, distributed, provenance
from monosemantic.errors import UserError
from monosemantic.io import stage_dir, write_json
from monosemantic.paths import SAE_CONFIG, TRAIN_LOG, TRAINING_JSON
from monosemantic.sae import sweep
from monosemantic.sae.checkpoint import SAECheckpointer
from monosemantic.sae.recipe import TRAIN_CONFIGS, TrainRecipe
from monosemantic.sae.registry import SAE_CLASSES
from monosemantic.sae.train import train_sae

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LadderConfig:
    """Which dictionaries to train in one pass: an architecture and a ladder of sizes."""

    arch: Literal["tm2023", "april2024", "topk", "batchtopk", "jumprelu"] = "tm2023"
    """tm2023 (the paper's recipe, default), april2024 (Anthropic's April 2024 update), topk (Gao et al.
    2024), batchtopk (Bussmann et al. 2024) or jumprelu (Gemma Scope)."""
    n_features: tuple[int, ...] = (512, 1024, 2048, 4096)
    """Dictionary sizes; all train on the same stream (1x to 8x the 512 neurons)."""
    l1_coeffs: tuple[float, ...] = ()
    """A λ sweep: values, each trained at every size (empty: the recipe's λ; jumprelu: its L0 λ)."""
    auto_l1: bool = False
    """Choose λ per size: train the recipe's λ × 1/4 ... 8 (or --l1-coeffs) in one pass and keep the largest λ
    whose held-out FVU is within auto_l1_margin of the smallest λ's (docs/decisions.md); saved as <arch>-<n>."""
    auto_l1_margin: float = 0.05
    """How much held-out FVU --auto-l1 gives up for sparsity, against the smallest λ's."""
    k: int = 32
    """Active features per row (topk), or on average over a batch (batchtopk)."""
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
        if not 0 <= self.auto_l1_margin < 1:
            raise ValueError(f"auto_l1_margin must be in [0, 1), got {self.auto_l1_margin!r}")

    def members(self, l1s: tuple[float, ...] | None = None) -> list[tuple[int, float | None]]:
        """(n_features, λ or None for the recipe's) of every SAE trained, sizes outermost (`l1s`: the sweep)."""
        sweep: tuple[float | None, ...] = l1s or self.l1_coeffs or (None,)
        return [(n, l1) for n in self.n_features for l1 in sweep]

    def name(self, n_features: int, l1: float | None = None) -> str:
        """The SAE's folder name; an auto-λ ladder saves only the chosen λ, as `<arch>-<n>`."""
        shown = l1 is not None and not self.auto_l1
        return f"{self.arch}-{n_features}" + (f"-l1_{l1:g}" if shown else "")


def steps_for(train: TrainRecipe, n_rows: int) -> TrainRecipe:
    """Cap `n_steps` at one pass over `n_rows` inputs (the paper never repeats data, paper.md §2),
    then fit the recipe's schedule to that length (`TrainConfig.for_run`, logged)."""
    one_pass = n_rows // train.batch_size
    if one_pass < 1:
        raise UserError(f"{n_rows} activation rows are fewer than one batch of {train.batch_size}")
    if train.n_steps > one_pass:
        log.info("n_steps %d > one pass over %d rows; training %d steps", train.n_steps, n_rows, one_pass)
    fitted, changes = train.for_run(min(train.n_steps, one_pass))
    if changes:
        shown = ", ".join(f"{k} {old:g} -> {new:g}" for k, (old, new) in changes.items())
        log.info("%s fitted to %d steps (--no-fit-to-run: as given): %s", train.architecture, fitted.n_steps, shown)
    return fitted


class NamedLogger(Protocol):
    """Receives every training log row with the name of its SAE (an experiment tracker, `tracking.py`)."""

    def log_named(self, name: str, row: dict[str, float]) -> None: ...


class _FiniteGuard:
    """A training logger that stops the run with a one-line error once a logged loss is NaN or inf.

    Inputs are checked as they are read (activations/store.py), so a non-finite loss means the
    optimisation diverged (too high a learning rate, say); nothing is written (`stage_dir`).
    """

    def __init__(self, names: list[str], out_root: Path, then: NamedLogger | None = None):
        self.names, self.out_root, self.i, self.then = names, out_root, 0, then

    def log(self, row: dict[str, float]) -> None:
        name = self.names[self.i % len(self.names)]  # one row per SAE, in order, every log_every steps
        self.i += 1
        if self.then is not None:
            self.then.log_named(name, row)
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
    logger: NamedLogger | None = None,
    inputs: Sequence[Path] = (),
) -> dict[str, Path]:
    """Train every size of `ladder` not yet on disk under `out_root`; returns name -> folder.

    `train` is the arch's train config (`TRAIN_CONFIGS[ladder.arch]`); its n_steps is
    capped at one pass over `n_rows` and it is fitted to that length (`steps_for`). `source`
    (where the activations came from) is recorded. `logger` gets every training log row too
    (`--log`: `tracking.py`), with the SAE's folder name.

    Checkpoints (sae/checkpoint.py): with `checkpoint_dir`, the state is saved there every
    `checkpoint_every` steps, a checkpoint found there is resumed (`resume` makes one required),
    `force` discards it, and it is deleted once the SAEs are written. Resuming needs `batches` as
    a function of the number of rows to skip (`lambda skip: store.batches(bs, seed, skip_rows=skip)`).
    In a data-parallel run only rank 0 writes; the others wait for it.

    `inputs` (the activations: a harvested folder or an array file) are recorded in each SAE's
    `provenance.json`; an SAE, or a checkpoint, made from other activations is trained again.
    """
    sae_class, config_class = SAE_CLASSES[ladder.arch], TRAIN_CONFIGS[ladder.arch]
    if not isinstance(train, config_class):
        raise TypeError(f"{ladder.arch} trains with {config_class.__name__}, got {type(train).__name__}")
    field = getattr(train, "sparsity_field", "l1_coeff")  # what a λ sweep sets
    if (ladder.l1_coeffs or ladder.auto_l1) and not hasattr(train, field):
        flag = "--auto-l1" if ladder.auto_l1 else "--l1-coeffs"
        raise UserError(f"{flag}: --arch {ladder.arch} has no sparsity coefficient λ (its sparsity is --k)")
    held_out: list[Tensor] = []
    if ladder.auto_l1:  # the first batches of the stream judge the candidates and are not trained on
        n_held = max(1, min(sweep.HELD_OUT_ROWS, n_rows // 20) // train.batch_size)
        first = batches(0) if callable(batches) else batches
        held_out = list(islice(first, n_held))
        if callable(batches):
            _close(first)
        skipped = sum(len(x) for x in held_out)
        n_rows -= skipped
        batches = (lambda skip, f=batches: f(skip + skipped)) if callable(batches) else batches
    train = steps_for(train, n_rows)
    l1s = (ladder.l1_coeffs or sweep.candidates(getattr(train, field))) if ladder.auto_l1 else ladder.l1_coeffs
    members = ladder.members(l1s)
    folders = {ladder.name(*m): out_root / ladder.name(*m) for m in members}
    ins = {name: provenance.inputs(folder, inputs) for name, folder in folders.items()}
    todo = [
        m for m in members if not provenance.reuse(folders[ladder.name(*m)], ins[ladder.name(*m)], force, SAE_CONFIG)
    ]
    for name in dict.fromkeys(ladder.name(*m) for m in members if m not in todo):
        log.info("%s exists: skipping (use --force to retrain)", folders[name])
    if not todo:
        if checkpoint_dir is not None and distributed.is_main():  # a kill after the last SAE was written left it
            SAECheckpointer(checkpoint_dir, 0, {}).discard()
        return folders
    names = [ladder.name(n, l1) if not ladder.auto_l1 else f"{ladder.name(n)}-l1_{l1:g}" for n, l1 in todo]
    ckpt = _checkpointer(checkpoint_dir, checkpoint_every, names, ladder, train, source, force, resume, inputs)
    start = ckpt.step() if ckpt else 0
    if start:
        if not callable(batches):
            raise UserError(f"{checkpoint_dir}: resuming needs a stream that can skip rows")
        log.info("resuming from step %d (%s)", start, checkpoint_dir)
    stream = batches(start * train.batch_size) if callable(batches) else batches

    saes, cfgs = [], []
    for n, l1 in todo:
        cfgs.append(train if l1 is None else dataclasses.replace(train, **{field: l1}))
        shape: dict[str, Any] = {"d_in": d_in, "n_features": n}
        if "k" in {f.name for f in dataclasses.fields(sae_class.config_class)}:
            shape["k"] = ladder.k  # topk, batchtopk
        gen = torch.Generator().manual_seed(ladder.init_seed + n)
        saes.append(sae_class(sae_class.config_class(**shape), generator=gen).to(device))
    log.info("training %s on %d rows (%d steps of %d)", ", ".join(names), n_rows, train.n_steps, train.batch_size)
    try:
        results = train_sae(saes, stream, cfgs, logger=_FiniteGuard(names, out_root, logger), checkpoint=ckpt)
    finally:  # a generator stream may hold files or a reader thread (activations/prefetch.py): release them now
        _close(stream)
    for name, sae in zip(names, saes, strict=True):  # never save a diverged SAE
        bad = [k for k, v in sae.named_parameters() if not torch.isfinite(v).all()]
        if bad:
            raise UserError(f"{out_root / name}: training diverged (NaN/inf in {', '.join(bad)}); lower --lr")
    if not distributed.is_main():
        distributed.barrier()  # rank 0 writes the SAEs
        return folders

    runs = list(zip(todo, saes, cfgs, results, strict=True))
    auto = _auto_choices(runs, held_out, ladder.auto_l1_margin) if ladder.auto_l1 else {}
    for (n, l1), sae, cfg, result in runs:
        if ladder.auto_l1 and auto[n]["chosen"] != l1:
            continue
        final = folders[ladder.name(n, l1)]
        with stage_dir(final, force=force or final.exists()) as tmp:  # an existing one: made from other activations
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
                **({"auto_l1": auto[n]} if ladder.auto_l1 else {}),
            }
            write_json(tmp / TRAINING_JSON, training)
            provenance.record(tmp, ins[ladder.name(n, l1)])
    if ckpt:
        ckpt.discard()
    distributed.barrier()
    return {ladder.name(*m): folders[ladder.name(*m)] for m in members}


def _auto_choices(
    runs: list[tuple[tuple[int, float | None], Any, Any, Any]], held_out: list[Tensor], margin: float
) -> dict[int, dict[str, Any]]:
    """Per size: every candidate's held-out FVU and L0, and the λ `sweep.pick` chooses (what training.json records)."""
    out: dict[int, dict[str, Any]] = {}
    for n in dict.fromkeys(m[0] for m, *_ in runs):
        scored = [(l1, sweep.held_out_score(sae, held_out)) for (size, l1), sae, _, _ in runs if size == n]
        l1s = [float(l1) for l1, _ in scored if l1 is not None]
        chosen = sweep.pick(l1s, [sc["fvu"] for _, sc in scored], margin)
        rule = f"the largest λ whose held-out FVU <= the smallest λ's + {margin:g}"
        candidates = [{"l1": l1, **sc} for l1, sc in scored]
        rows = sum(len(x) for x in held_out)
        out[n] = {"rule": rule, "held_out_rows": rows, "chosen": chosen, "candidates": candidates}
        shown = ", ".join(f"{c['l1']:g}: FVU {c['fvu']:.3f} L0 {c['l0']:.1f}" for c in candidates)
        log.info("auto λ for %d features: %g (%s)", n, chosen, shown)
    return out


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _checkpointer(
    folder: Path | None,
    every: int,
    names: list[str],
    ladder: LadderConfig,
    train: TrainRecipe,
    source: dict[str, Any],
    force: bool,
    resume: bool,
    inputs: Sequence[Path] = (),
) -> SAECheckpointer | None:
    if folder is None:
        if resume:
            raise UserError("--resume: this run keeps no checkpoints")
        return None
    expected = {
        "names": names,
        "ladder": dataclasses.asdict(ladder),
        "train": {k: v for k, v in dataclasses.asdict(train).items() if k != "progress"},
        "source": source,
    }
    expected["inputs"] = provenance.inputs(folder, inputs).stamps  # the activations' content hash
    ckpt = SAECheckpointer(folder, every, expected)
    stale = ckpt.step() > 0 and checkpoint.read_meta(folder).get("inputs") != expected["inputs"]
    if stale:
        log.warning("%s: made from other activations than now: discarded", folder)
    if force or stale:
        ckpt.discard()
        distributed.barrier()
    if resume and not ckpt.step():
        raise UserError(f"--resume: no checkpoint in {folder}")
    return ckpt
