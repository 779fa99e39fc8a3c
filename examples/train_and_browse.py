"""From a tensor of activations to a feature browser, in Python alone (no run folder, no CLI).

    python examples/train_and_browse.py            # 1M activations, a 512-feature BatchTopK SAE: minutes on a laptop
    python examples/train_and_browse.py --small    # the same in seconds (what CI runs)
    python examples/train_and_browse.py --serve    # and keep the browser open until Ctrl-C

Written as notebook cells (`# %%`): each step is one call of the public API (docs/api.md). The
"model" here is a toy: every token of a 96-word vocabulary writes a sparse mix of a few of 128
hidden directions into a 64-dimensional activation, plus noise, so the features the SAE should
find are known. Replace `token_ids` and `acts` with your own model's (token ids `[n_ctx, ctx_len]`,
activations `[n_ctx, ctx_len, d]`) and the rest runs unchanged.
"""

# %% imports and settings
from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

import monosemantic.browser
import monosemantic.eval
import monosemantic.features
import monosemantic.sae as sae_lib

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--small", action="store_true", help="a few seconds' worth: fewer activations, a smaller SAE")
p.add_argument("--serve", action="store_true", help="keep the browser running until Ctrl-C")
p.add_argument("--out", type=Path, default=None, help="folder for the SAE and the database (default: a temporary one)")
args = p.parse_args()
torch.manual_seed(0)
D, N_DIRS, VOCAB, CTX = 64, 128, 96, 64
N_CTX = 512 if args.small else 16_384  # contexts of 64 tokens: 32k or 1M activations
N_FEATURES = 256 if args.small else 512
BATCH = 256 if args.small else 1024
out = args.out or Path(tempfile.mkdtemp(prefix="monosemantic-example-"))
out.mkdir(parents=True, exist_ok=True)

# %% a toy model's activations: each word writes a sparse mix of hidden directions
words = [f" w{i}" for i in range(VOCAB)]  # the "tokenizer": token id -> text
directions = torch.nn.functional.normalize(torch.randn(N_DIRS, D), dim=1)  # [128, 64], the ground truth
mix = (torch.rand(VOCAB, N_DIRS) < 3 / N_DIRS) * torch.rand(VOCAB, N_DIRS)  # ~3 directions per word
token_ids = torch.randint(0, VOCAB, (N_CTX, CTX))  # [n_ctx, ctx_len]
acts = torch.relu(mix[token_ids] @ directions + 0.02 * torch.randn(N_CTX, CTX, D))  # [n_ctx, ctx_len, d]
print(f"activations: {tuple(acts.shape)}")

# %% train an SAE on the tensor: BatchTopK, its published recipe fitted to this run's length
flat = acts.reshape(-1, D)
held_out, train_rows = flat[:4096], flat[4096:]
sae = sae_lib.BatchTopKSAE(sae_lib.TopKSAEConfig(d_in=D, n_features=N_FEATURES, k=4))
cfg, fitted = sae_lib.BatchTopKTrainConfig(batch_size=BATCH, log_every=50).for_run(len(train_rows) // BATCH)
print(f"recipe fitted to {cfg.n_steps} steps: {fitted}")
t0 = time.perf_counter()
(result,) = sae_lib.train_sae([sae], iter(train_rows[torch.randperm(len(train_rows))].split(BATCH)), cfg)
print(f"trained in {time.perf_counter() - t0:.0f} s: {result.n_steps} steps, last log {result.history[-1]}")
sae.save(out / "batchtopk")  # a folder `SparseAutoencoder.load` (and `sae export`) reads

# %% evaluate it on held-out activations (no model needed for these numbers)
metrics = monosemantic.eval.evaluate_on_activations(sae, held_out)
print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))

# %% the feature database: top examples, intervals, histograms for every feature, from the arrays
db = monosemantic.features.build_from_arrays(
    token_ids, acts, {"batchtopk": sae}, tokenizer=words, out=out / "features.sqlite", force=True
)
print(f"feature database: {db}")

# %% the browser over it, on a free port; fetch a page to show it answers, then stop it
server = monosemantic.browser.start(db)
for path in ("", "dict/2", "dict/2/feature/0"):  # the overview, the SAE's feature list, one feature (dict 1: neurons)
    with urllib.request.urlopen(server.url + path, timeout=30) as page:
        html = page.read()
    with urllib.request.urlopen(server.url + "api/" + path, timeout=30) as page:
        twin = json.load(page)
    print(f"{server.url}{path}: {len(html):,} bytes of HTML; its JSON twin has {', '.join(sorted(twin)[:6])}, ...")
if args.serve:
    print("serving until Ctrl-C")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
server.stop()
print("browser stopped")
