"""Every recipe's defaults, as a new user gets them, on one pass of planted sparse data.

    python benchmarks/recipe_defaults.py                              # 4M rows, 256-d, 2,048 directions, 4,096 features
    python benchmarks/recipe_defaults.py --rows 1000000 --archs topk jumprelu
    python benchmarks/recipe_defaults.py --extra=--auto-l1           # the same with a CLI flag added

Each architecture's settings come from the CLI exactly as `monosemantic sae train --activations
acts.npy --out DIR --n-features 4096 --arch ARCH [--k 8]` resolves them (the default preset, its
recipe settings applied to tm2023 only, each recipe fitted to the run's length), and `train_ladder`
trains on a stream of planted sparse features (`sae/synthetic.py`: each of `--dirs` random unit
directions active with probability `--density`, coefficient U(0.5, 1.5)) instead of a file, so
the 4 GB array never touches the disk. Every architecture sees the same stream (same seed).

Reported per architecture: mean over the planted directions of the best cosine with a decoder
row (1 = all found), the share found at cosine ≥ 0.9, held-out L0 and FVU (65,536 fresh rows),
dead features (never active on those rows), the settings used after fitting, and wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import tempfile
import time
from pathlib import Path

import torch

from monosemantic.errors import UserError
from monosemantic.io import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--dirs", type=int, default=2048)
    p.add_argument("--density", type=float, default=0.004, help="per direction; 0.004 · 2,048 ≈ 8 active per row")
    p.add_argument("--features", type=int, default=4096)
    p.add_argument("--archs", nargs="+", default=["tm2023", "april2024", "topk", "batchtopk", "jumprelu"])
    p.add_argument("--k", type=int, default=8, help="--k for topk and batchtopk")
    p.add_argument("--extra", default="", help="more `sae train` flags, e.g. '--auto-l1'")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe_defaults.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    from monosemantic.sae.synthetic import PlantedSampler, mean_max_cosine, planted_features

    directions, _ = planted_features(args.dirs, args.d, args.density, seed=0)
    held_out = PlantedSampler(directions, args.density, seed=99)(65_536)  # fresh rows of the same directions
    rows = []
    for arch in args.archs:
        _, sampler = planted_features(args.dirs, args.d, args.density, seed=0)  # the same stream for each
        t0 = time.perf_counter()
        try:
            sae, train, training = _train(arch, sampler, args)
        except UserError as e:  # a recipe that refuses this run (jumprelu on a short one) says why; that is its row
            print(f"{arch:10s} refused: {e}", flush=True)
            rows.append({"arch": arch, "refused": str(e)})
            continue
        wall = time.perf_counter() - t0
        with torch.no_grad():
            x_hat, f = sae(held_out)
            fvu = float((held_out - x_hat).pow(2).sum() / (held_out - held_out.mean(0)).pow(2).sum())
            l0 = float((f > 0).sum(-1).float().mean())
            dead = float((f > 0).sum(0).eq(0).float().mean())
            cos = (directions @ (sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)).T).max(dim=1).values
        row = {
            "arch": arch,
            "mean_max_cosine": mean_max_cosine(sae.W_dec.detach(), directions),
            "found_0.9": float((cos >= 0.9).float().mean()),
            "l0": l0,
            "fvu": fvu,
            "dead": dead,
            "wall_s": wall,
            "train": train,
            **({"auto_l1": training["auto_l1"]} if "auto_l1" in training else {}),
        }
        rows.append(row)
        print(
            f"{arch:10s} cos {row['mean_max_cosine']:.3f}  found {row['found_0.9']:.2f}  L0 {l0:7.1f}  FVU {fvu:.3f}  "
            f"dead {100 * dead:5.1f} %  lr {train['lr']:.2g}  {wall:.0f} s",
            flush=True,
        )
    trained = [r for r in rows if "refused" not in r]
    print("\n| arch | mean max cosine | found (cos ≥ 0.9) | L0 | FVU | dead | lr used | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in trained:
        print(
            f"| {r['arch']} | {r['mean_max_cosine']:.3f} | {r['found_0.9']:.2f} | {r['l0']:.1f} | {r['fvu']:.3f} | "
            f"{100 * r['dead']:.1f} % | {r['train']['lr']:.2g} | {r['wall_s']:.0f} |"
        )
    settings = {k: str(v) for k, v in vars(args).items()}
    write_json(args.out, {"args": settings, "load": os.getloadavg(), "rows": rows})


def _train(arch: str, sampler, args):  # type: ignore[no-untyped-def]
    from monosemantic.cli import _parser
    from monosemantic.cli.common import run_config
    from monosemantic.sae.ladder import train_ladder
    from monosemantic.sae.model import SparseAutoencoder

    argv = ["sae", "train", "--activations", "x.npy", "--out", "o", "--n-features", str(args.features)]
    argv += ["--arch", arch, *(["--k", str(args.k)] if arch in ("topk", "batchtopk") else []), *shlex.split(args.extra)]
    cfg = run_config(_parser().parse_args(argv), ("sae",))
    bs = cfg.sae.batch_size
    stream = sampler.batches(bs, args.rows // bs)
    with tempfile.TemporaryDirectory() as tmp:
        folders = train_ladder(stream, args.d, args.rows, cfg.ladder, cfg.sae, Path(tmp), {"planted": True})
        (folder,) = folders.values()
        training = json.loads((folder / "training.json").read_text())
        return SparseAutoencoder.load(folder), training["train"], training


if __name__ == "__main__":
    main()
