"""Experiment tracking of SAE training: Weights & Biases or TensorBoard, off by default (`sae train --log`).

    tracker = open_tracker("tensorboard", out_root, config={"arch": "topk", ...})
    train_ladder(..., logger=tracker)        # every training log row, under its SAE's name
    tracker.close()

Each tracker takes the rows the trainer's `Logger` protocol delivers every `log_every` steps
(step, loss, mse, the recipe's penalty, l0, dead_fraction; `sae/train.py`) and writes each number
as a series `<sae name>/<key>` at that step. `log(row)` is the plain `Logger` protocol, for
`train_sae` called directly (the series are then `sae<i>/<key>`).

Both back ends are optional extras (`pip install 'monosemantic[wandb]'`, `[tensorboard]`) imported
only when asked for; a missing one is a one-line error naming the extra.
- tensorboard: event files in `<out_root>/tensorboard/` (read with `tensorboard --logdir ...`),
  through `torch.utils.tensorboard`;
- wandb: a run in project `monosemantic` (`WANDB_PROJECT` overrides), its files in
  `<out_root>/wandb/`; `WANDB_MODE=offline` keeps it on disk (`wandb sync` uploads it later).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Protocol

from monosemantic.errors import UserError

Backend = Literal["wandb", "tensorboard"]
BACKENDS: tuple[str, ...] = ("wandb", "tensorboard")


class Tracker(Protocol):
    """What `open_tracker` returns: the trainer's `Logger`, the ladder's named rows, and `close`."""

    def log(self, row: dict[str, float]) -> None: ...
    def log_named(self, name: str, row: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def _series(name: str, row: dict[str, float]) -> tuple[int, dict[str, float]]:
    """(step, {"<name>/<key>": value}) of one log row; `step` and `sae` (the index) are not series."""
    return int(row["step"]), {f"{name}/{k}": float(v) for k, v in row.items() if k not in ("step", "sae")}


class TensorBoardTracker:
    """Scalars into TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: Path, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "--log tensorboard needs the tensorboard package: pip install 'monosemantic[tensorboard]'"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("config", json.dumps(config, default=str))

    def log_named(self, name: str, row: dict[str, float]) -> None:
        step, values = _series(name, row)
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log(self, row: dict[str, float]) -> None:
        self.log_named(f"sae{int(row.get('sae', 0))}", row)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One Weights & Biases run; its local files under `directory`."""

    def __init__(self, directory: Path, config: dict[str, Any], name: str | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("--log wandb needs the wandb package: pip install 'monosemantic[wandb]'") from None
        Path(directory).mkdir(parents=True, exist_ok=True)
        project = os.environ.get("WANDB_PROJECT", "monosemantic")
        self.run = wandb.init(project=project, dir=str(directory), config=config, name=name)

    def log_named(self, name: str, row: dict[str, float]) -> None:
        step, values = _series(name, row)
        self.run.log(values, step=step)

    def log(self, row: dict[str, float]) -> None:
        self.log_named(f"sae{int(row.get('sae', 0))}", row)

    def close(self) -> None:
        self.run.finish()


def open_tracker(backend: str, out_root: Path, config: dict[str, Any], name: str | None = None) -> Tracker:
    """A tracker writing next to the SAEs in `out_root` (module docstring); `config` is recorded with the run."""
    if backend == "tensorboard":
        return TensorBoardTracker(Path(out_root) / "tensorboard", config)
    if backend == "wandb":
        return WandbTracker(Path(out_root), config, name)
    raise UserError(f"--log: {backend!r} is not one of {', '.join(BACKENDS)}")
