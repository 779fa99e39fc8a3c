"""How the corpus mix spreads each content category over sources, documents and the held-out split.

    python benchmarks/corpus_mix.py --run /tmp/mixrun        # after `corpus build` and `tokenize`

Reads RUN/corpus, RUN/tokenizer and RUN/tokens (it builds nothing), re-tokenizes every document to
attribute each category's tokens to its source, and prints:

1. per category: train and held-out token shares (from RUN/tokens/config.json), how many documents
   carry it in each split, and the held-out share in the first 131,072 and 262,144 held-out tokens
   (the windows that the default and full presets' feature database reads);
2. the held-out share's range over 20 split seeds (`tokenize --seed`): how much it owes to luck;
3. per source: tokens, and the tokens of each category it contributes.

The mix's targets (data/mix.py): each category 0.1-0.5 % of training tokens, and between 0.05 %
and 1 % of the held-out tokens.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from monosemantic import paths
from monosemantic.data import categories
from monosemantic.data.corpus import iter_documents
from monosemantic.data.tokenizer import clean_text, load_tokenizer
from monosemantic.data.tokens import TokensConfig, TokenStore, is_val

PREFIXES = (131_072, 262_144)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    args = ap.parse_args()
    layout = paths.RunLayout(args.run)
    store = TokenStore(layout.tokens)
    tok = load_tokenizer(layout.tokenizer / paths.TOKENIZER_JSON)
    cfg = TokensConfig(**{k: v for k, v in store.config["config"].items() if k in TokensConfig.__dataclass_fields__})
    t0 = time.perf_counter()
    by_src: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(categories.N_CODES, dtype=np.int64))
    n_src: dict[str, int] = defaultdict(int)
    docs_with = {s: np.zeros(categories.N_CODES, dtype=np.int64) for s in ("train", "val")}
    doc_rows: list[np.ndarray] = []  # per document, in corpus order: [n_tokens + 1 (EOT), counts...]
    for i, (src, text) in enumerate(iter_documents(layout.corpus)):
        text = clean_text(text)
        enc = tok.encode(text, add_special_tokens=False)
        counts = categories.count_codes(categories.token_codes(categories.char_codes(text), enc.offsets))
        by_src[src] += counts
        n_src[src] += len(enc.ids) + 1
        split = "val" if is_val(i, cfg) else "train"
        docs_with[split] += counts > 0
        doc_rows.append(np.concatenate([[len(enc.ids) + 1], counts[1:]]))
    print(f"re-tokenized the corpus in {time.perf_counter() - t0:.1f} s\n")

    shares = store.category_shares or {}
    every = np.array(doc_rows)
    rows = every[[is_val(i, cfg) for i in range(len(every))]]
    ends = np.cumsum(rows[:, 0])
    print(f"{'category':<13}{'train %':>9}{'val %':>8}{'docs tr':>9}{'docs val':>9}", end="")
    print("".join(f"{f'val[:{n // 1024}k] %':>14}" for n in PREFIXES))
    for k, name in enumerate(categories.CATEGORIES):
        c = 1 + k
        line = f"{name:<13}{shares['train'][name] * 100:>9.3f}{shares['val'][name] * 100:>8.3f}"
        line += f"{docs_with['train'][c]:>9}{docs_with['val'][c]:>9}"
        for n in PREFIXES:  # whole documents up to the prefix: close enough for a share
            m = int(np.searchsorted(ends, n)) + 1
            line += f"{rows[:m, c].sum() / max(rows[:m, 0].sum(), 1) * 100:>14.3f}"
        print(line)
    seeds = range(20)
    val_shares = np.array([_val_share(every, TokensConfig(val_fraction=cfg.val_fraction, seed=s)) for s in seeds])
    print("\nheld-out share over split seeds 0-19, % (min / median / max):")
    for k, name in enumerate(categories.CATEGORIES):
        lo, mid, hi = np.percentile(val_shares[:, k], [0, 50, 100]) * 100
        print(f"  {name:<13}{lo:>7.3f}{mid:>8.3f}{hi:>8.3f}")
    n = store.train.n_tokens + store.val.n_tokens
    print(f"\ntokens: {store.train.n_tokens:,} train, {store.val.n_tokens:,} val, {n:,} in all\n")

    print(f"{'source':<24}{'tokens':>11}{'%':>7}" + "".join(f"{c[:7]:>9}" for c in categories.CATEGORIES))
    for src in sorted(by_src):
        counts = by_src[src]
        print(f"{src:<24}{n_src[src]:>11,}{n_src[src] / n * 100:>7.2f}" + "".join(f"{x:>9,}" for x in counts[1:]))


def _val_share(rows: np.ndarray, cfg: TokensConfig) -> np.ndarray:
    """Each category's share of the held-out tokens under `cfg`'s split."""
    val = rows[[is_val(i, cfg) for i in range(len(rows))]]
    return val[:, 1:].sum(0) / val[:, 0].sum()


if __name__ == "__main__":
    main()
