"""Universality of one SAE of model A against one SAE of model B, from their folders: for sweeps.

    python benchmarks/universality_pair.py --run RUN --a OUT/A/tm2023-4096 --b OUT/B/tm2023-4096 \\
        [--held-out HELD_OUT.npy] [--n-tokens 131072] [--out universality_pair.json]

`monosemantic features universality` matches the dictionaries a run's feature database lists; a
sweep of SAE settings trains its dictionaries elsewhere (`sae train --activations ... --out OUT`).
This computes the same thing for one pair of SAE folders: both models (RUN/transformer/A and B, or
`--models`) read the same held-out tokens (`features.stream.held_out_contexts`), each A feature's
best Pearson r over the B features is taken (`analyses.universality.best_matches`, `live_best`), and
the median over A's live features is printed with the neurons' median and the medians per band of
density, as the command prints them. With `--held-out` (a [rows, d_in] .npy of A's activations that
neither SAE trained on) it also gives A's dictionary's FVU and L0 there. Writes JSON. Results:
docs/results.md ("Sparser dictionaries are more universal, and deader").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from monosemantic.analyses.bands import density_bands, distribution
from monosemantic.analyses.correlate import PearsonAccumulator
from monosemantic.analyses.universality import UniversalityConfig, best_matches, live_best
from monosemantic.data.tokens import TokenStore
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.io import write_json
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.transformer.model import load_transformer

HOOK = "blocks.0.mlp.hook_post"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with tokens/ and transformer/")
    p.add_argument("--a", type=Path, required=True, help="SAE folder trained on model A's activations")
    p.add_argument("--b", type=Path, required=True, help="SAE folder trained on model B's activations")
    p.add_argument("--models", nargs=2, default=["A", "B"], help="the two models under RUN/transformer")
    p.add_argument("--held-out", type=Path, help="[rows, d_in] .npy of A's activations for FVU and L0")
    p.add_argument("--n-tokens", type=int, default=131_072)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/universality_pair.json"))
    args = p.parse_args()
    torch.set_grad_enabled(False)
    cfg = UniversalityConfig(n_tokens=args.n_tokens)
    models = {m: load_transformer(args.run / "transformer" / m).eval() for m in args.models}
    saes = {m: {"sae": SparseAutoencoder.load(d).eval()} for m, d in zip(args.models, (args.a, args.b), strict=True)}
    n_a, n_b = (saes[m]["sae"].cfg.n_features for m in args.models)
    d_mlp = models[args.models[0]].cfg.d_mlp
    ctx = held_out_contexts(TokenStore(args.run / "tokens"), models[args.models[0]].cfg.ctx_len, args.n_tokens)
    features, neurons = PearsonAccumulator(n_a, n_b), PearsonAccumulator(d_mlp, d_mlp)
    active = np.zeros(n_a, dtype=np.int64)
    for lo, hi in ctx.batches(cfg.batch_size):
        tokens = torch.from_numpy(ctx.tokens[lo:hi])
        out = {}
        for m, model in models.items():
            acts, feats = dictionary_activations(model, model.hook_point(HOOK), saes[m], tokens)
            out[m] = (feats["sae"].reshape(-1, n_a if m == args.models[0] else n_b), acts.reshape(-1, d_mlp))
        a, b = (out[m] for m in args.models)
        features.update(a[0], b[0])
        neurons.update(a[1], b[1])
        active += (a[0] > 0).sum(0).numpy()
    best = live_best(best_matches(features.corr())[1][:, 0], active)
    best_neurons = best_matches(neurons.corr())[1][:, 0]
    bands = density_bands(best, active / max(ctx.n_tokens, 1), list(cfg.density_edges), cfg.n_bins)
    result = {"a": str(args.a), "b": str(args.b), "n_tokens": ctx.n_tokens, "n_live": int((active > 0).sum()),
              "dead": float((active == 0).mean()), "features": distribution(best, cfg.n_bins),
              "neurons": distribution(best_neurons, cfg.n_bins), "by_density": bands}  # fmt: skip
    if args.held_out is not None:
        x = torch.from_numpy(np.load(args.held_out)).float()
        x_hat, f = saes[args.models[0]]["sae"](x)
        result["held_out"] = {"rows": len(x), "fvu": float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()),
                              "l0": float((f > 0).sum(1).float().mean())}  # fmt: skip
    print(f"{args.a} against {args.b}, {ctx.n_tokens:,} held-out tokens")
    if "held_out" in result:
        print(f"  A's SAE on {result['held_out']['rows']:,} held-out rows: FVU {result['held_out']['fvu']:.4f}, "
              f"L0 {result['held_out']['l0']:.2f}")  # fmt: skip
    print(f"  live {result['n_live']:,} of {n_a:,} (dead {result['dead']:.1%}); median best-match r "
          f"{result['features']['median']:.3f}; neurons {result['neurons']['median']:.3f}")  # fmt: skip
    print("  " + "; ".join(f"{b['label']}: {b['median'] or float('nan'):.2f} ({b['n_alive']})" for b in bands))
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
