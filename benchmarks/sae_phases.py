"""Where a whole `monosemantic sae train` run spends its time: a phase profile from process start to saved weights.

    python benchmarks/sae_phases.py --activations runs/default/activations/A/blocks.0.mlp.hook_post
    python benchmarks/sae_phases.py --activations STORE -- --n-features 4096 --n-steps 300

Runs the CLI's `sae train --activations STORE --out TMP --preset default` in this process (flags
after `--` are passed on) with timers wrapped around the trainer's phases, and prints one table:

- `start-up`: imports, argument parsing, opening the store, building the SAEs (everything before
  the first batch is asked for);
- `init`: the data-dependent init (input scale, b_dec at the geometric median, paper.md §3.3),
  without the reading of its inputs;
- `dense step`, `sparse step`: the gradient computation of each step, by the path the `Stepper`
  took (sparse_step.py), summed over every SAE of the ladder;
- `optimizer`: Adam, clipping and the unit-norm constraint; `tracking`: the dead-feature counters;
- `resample scoring` / `resample draw`: the per-input loss over the peeked inputs and the draw and
  write of the new directions (paper.md §4);
- `reading batches`: time spent waiting on the activation stream;
- `checkpoint`, `saving`: the periodic checkpoint and the final write of the SAEs;
- `other`: the rest of the wall time (logging, the loop itself, the guard).

The timers are exclusive: a phase nested in another (batches read inside the resampling peek) is
counted once, in the inner phase. The JSON (`--out`) has the table and the per-SAE step counts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

T0 = time.perf_counter()  # process start, as near as a script gets (before torch is imported)

PHASES = [
    "start-up",
    "init",
    "dense step",
    "sparse step",
    "optimizer",
    "tracking",
    "resample scoring",
    "resample draw",
    "reading batches",
    "checkpoint",
    "saving",
    "other",
]


class Timers:
    """Exclusive wall time per phase: entering a phase pauses the one it is nested in."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.stack: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        now = time.perf_counter()
        if self.stack:
            outer, since = self.stack[-1]
            self.total[outer] += now - since
        self.stack.append((name, now))
        try:
            yield
        finally:
            end = time.perf_counter()
            _, since = self.stack.pop()
            self.total[name] += end - since
            self.count[name] += 1
            if self.stack:
                self.stack[-1] = (self.stack[-1][0], end)

    def wrap(self, name: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            with self.phase(name(*a, **kw) if callable(name) else name):
                return fn(*a, **kw)

        return timed


def instrument(timers: Timers) -> dict[str, float]:
    """Wrap the trainer's phases; returns a dict the first-batch time is written into."""
    from monosemantic.sae import checkpoint, ladder, resample, sparse_step, train

    marks: dict[str, float] = {}

    def timed_stream(stream: Iterator[Any]) -> Iterator[Any]:
        while True:
            if "first batch" not in marks:
                marks["first batch"] = time.perf_counter()
            with timers.phase("reading batches"):
                x = next(stream, None)
            if x is None:
                return
            yield x

    original_train_sae = train.train_sae

    def train_sae(saes: Any, batches: Any, *a: Any, **kw: Any) -> Any:
        return original_train_sae(saes, timed_stream(iter(batches)), *a, **kw)

    ladder.train_sae = train_sae  # the name train_ladder calls
    train.init_from_data = timers.wrap("init", train.init_from_data)
    stepper = sparse_step.Stepper
    stepper.gradients = timers.wrap(
        lambda self, *a, **kw: "sparse step" if self.sparse else "dense step", stepper.gradients
    )
    train.optimizer_step_ = timers.wrap("optimizer", train.optimizer_step_)
    train._Run.track = timers.wrap("tracking", train._Run.track)
    train.resample_losses = timers.wrap("resample scoring", train.resample_losses)
    train.resample_dead_ = timers.wrap("resample draw", train.resample_dead_)
    checkpoint.SAECheckpointer.after_step = timers.wrap("checkpoint", checkpoint.SAECheckpointer.after_step)
    from monosemantic.sae import model

    model.SparseAutoencoder.save = timers.wrap("saving", model.SparseAutoencoder.save)
    del resample  # imported so the table names stay in one place
    return marks


def score_saes(folder: Path, held_out: Path) -> dict[str, dict[str, float]]:
    """Held-out FVU and L0 (`sae_process.score`) and the last logged dead fraction of each SAE in `folder`."""
    import json

    from sae_process import score  # noqa: PLC0415 (benchmarks/ is on sys.path)
    from safetensors.torch import load_file

    out = {}
    for sae in sorted(folder.glob("tm2023-*"), key=lambda f: int(f.name.split("-")[1])):
        final = json.loads((sae / "training.json").read_text())["final"]
        out[sae.name] = {
            **score(load_file(sae / "sae.safetensors"), held_out, 1.0),
            "dead_fraction": final["dead_fraction"],
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", type=Path, required=True, help="a harvested store (activations/MODEL/HOOK)")
    p.add_argument("--preset", default="default")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sae_phases.json"))
    p.add_argument("--held-out", type=Path, help="a .npy of rows not trained on: score each SAE's FVU and L0 on it")
    p.add_argument("rest", nargs="*", help="flags for `sae train`, after --")
    args = p.parse_args()

    timers = Timers()
    marks = instrument(timers)
    from monosemantic.cli import main as cli_main
    from monosemantic.io import write_json

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["sae", "train", "--activations", str(args.activations), "--out", tmp, "--preset", args.preset]
        code = cli_main([*argv, "--no-progress", "--force", *args.rest])
        wall = time.perf_counter() - T0
        if code:
            sys.exit(code)
        scores = score_saes(Path(tmp), args.held_out) if args.held_out else {}
    start_up = marks.get("first batch", T0) - T0
    timed = sum(timers.total.values())
    rows = {"start-up": start_up, **timers.total}
    rows["other"] = max(wall - start_up - timed, 0.0)
    print(f"{'phase':<18} {'seconds':>8} {'share':>7} {'calls':>7}")
    for name in PHASES:
        s = rows.get(name, 0.0)
        print(f"{name:<18} {s:8.1f} {s / wall:7.1%} {timers.count.get(name, 0):7d}")
    print(f"{'whole process':<18} {wall:8.1f}")
    for name, sc in scores.items():
        print(f"{name}: held-out FVU {sc['fvu']:.4f}, L0 {sc['l0']:.2f}, dead at the end {sc['dead_fraction']:.3f}")
    out = {"argv": sys.argv[1:], "wall_s": wall, "phases_s": rows, "calls": dict(timers.count), "scores": scores}
    write_json(args.out, out)
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
