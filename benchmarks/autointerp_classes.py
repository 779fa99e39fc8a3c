"""Automated interpretability when an explanation may name only *classes* of tokens, never single tokens.

    cp -r runs/default RUN                       # autointerp writes its explanations into RUN's database
    python benchmarks/autointerp_classes.py --run RUN --classes 64 128 256 512 1024 2048 --max-classes 4

Why: the offline explainer (analyses/explain.py) may list token strings, and a randomized model's features,
functions of the current token through shuffled weights, are predicted well by such lists at any length
(docs/results.md). The paper's explainer is a language model, whose explanations name what tokens have in
common. This experiment stands in for that constraint without a language model: the vocabulary is cut into
C classes of tokens that occur in similar contexts, computed from the run's training tokens alone (no model):
each token's counts of the previous and of the next token (the 1,000 most frequent, both sides), positive
PMI, the top 100 singular vectors, spherical k-means (30 rounds, seed 0). An explanation names at most M
classes (those with the most activation mass, each with its mean level 0-9) and the scripts of the offline
explainer; the simulator predicts each token's level from its class and script. Everything else is the
demo's protocol (`run_autointerp`: the same feature sample, test windows, Spearman). Fewer classes = coarser
concepts; C = the vocabulary is the token lookup again. Prints one table per C and writes JSON.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from monosemantic import paths
from monosemantic.analyses.autointerp import AutoInterpConfig, run_autointerp
from monosemantic.analyses.explain import SCRIPTS, Evidence, level_of, script_of
from monosemantic.analyses.heldout import vocab_strings
from monosemantic.io import read_json, write_json

CONTEXT_TOKENS = 1000
DIMS = 100


def token_classes(tokens: np.ndarray, vocab_size: int, n_classes: int, seed: int = 0) -> np.ndarray:
    """`[vocab_size]` class of each token id: spherical k-means of its PPMI context vectors (module docstring)."""
    ids = tokens.astype(np.int64)
    freq = np.bincount(ids, minlength=vocab_size)
    rank = np.full(vocab_size, CONTEXT_TOKENS, dtype=np.int64)
    rank[np.argsort(-freq)[:CONTEXT_TOKENS]] = np.arange(CONTEXT_TOKENS)
    width = CONTEXT_TOKENS + 1  # the last column counts every rarer neighbour, then is dropped
    left = np.bincount(ids[1:] * width + rank[ids[:-1]], minlength=vocab_size * width)
    right = np.bincount(ids[:-1] * width + rank[ids[1:]], minlength=vocab_size * width)
    counts = np.concatenate(
        [left.reshape(vocab_size, width)[:, :-1], right.reshape(vocab_size, width)[:, :-1]], axis=1
    ).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * counts.sum() / (counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True)))
    ppmi = np.nan_to_num(np.maximum(pmi, 0), posinf=0.0)
    u, s, _ = np.linalg.svd(ppmi, full_matrices=False)
    emb = u[:, :DIMS] * s[:DIMS]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    rng = np.random.default_rng(seed)
    centres = emb[rng.choice(vocab_size, n_classes, replace=False)]
    for _ in range(30):
        label = np.argmax(emb @ centres.T, axis=1)
        for c in range(n_classes):
            members = emb[label == c]
            centres[c] = members.mean(0) if len(members) else emb[rng.integers(vocab_size)]
            centres[c] /= np.linalg.norm(centres[c]) + 1e-12
    return label


@dataclass(frozen=True)
class ClassExplainer:
    """Names the classes (and scripts) of the examples' tokens with the most activation mass."""

    classes: dict[str, int]
    max_classes: int
    name: str = "classes"

    def explain(self, evidence: Evidence) -> str:
        top = max((max(e.acts) for e in evidence.examples if e.acts), default=0.0)
        if top <= 0:
            return "never fires"
        mass: dict[int, float] = defaultdict(float)
        count: dict[int, int] = defaultdict(int)
        script_mass: dict[str, float] = defaultdict(float)
        script_count: dict[str, int] = defaultdict(int)
        for e in evidence.examples:
            for t, a in zip(e.tokens, e.acts, strict=True):
                c = self.classes.get(t, -1)
                mass[c] += a
                count[c] += 1
                if (s := script_of(t)) is not None:
                    script_mass[s] += a
                    script_count[s] += 1
        level = {c: level_of(m / count[c], top) for c, m in mass.items() if c >= 0}
        chosen = [c for c in sorted(level, key=lambda c: -mass[c]) if level[c] >= 1][: self.max_classes]
        parts = ["classes " + ", ".join(f"{c} ({level[c]})" for c in chosen)] if chosen else []
        total = sum(mass.values())
        for s in SCRIPTS:
            if total > 0 and script_mass.get(s, 0.0) / total >= 0.5:
                parts.append(f"{s} ({level_of(script_mass[s] / script_count[s], top)})")
        return "; ".join(parts) or "no consistent pattern"


@dataclass(frozen=True)
class ClassSimulator:
    """Each token's level: the explanation's level for its class or its script, else 0."""

    classes: dict[str, int]
    name: str = "classes"

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        levels: dict[int, int] = {}
        scripts: dict[str, int] = {}
        for part in explanation.split("; "):
            if part.startswith("classes "):
                for item in part.removeprefix("classes ").split(", "):
                    c, lv = item.split(" (")
                    levels[int(c)] = int(lv.rstrip(")"))
            elif part.split(" (")[0] in SCRIPTS:
                s, lv = part.split(" (")
                scripts[s] = int(lv.rstrip(")"))
        out = []
        for w in windows:
            pred = []
            for t in w:
                lv = levels.get(self.classes.get(t, -1), 0)
                if scripts and (s := script_of(t)) in scripts:
                    lv = max(lv, scripts[s])
                pred.append(float(lv))
            out.append(pred)
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a copy of a demo run (its database is rewritten)")
    p.add_argument("--classes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--max-classes", type=int, nargs="+", default=[4], help="classes one explanation may name")
    p.add_argument("--models", nargs="+", default=["A", "A-shuffled"])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/autointerp_classes.json"))
    args = p.parse_args()
    layout = paths.RunLayout(args.run)
    tok = Tokenizer.from_file(str(args.run / "tokenizer" / "tokenizer.json"))
    vocab_size = int(read_json(args.run / "tokens" / "config.json")["vocab_size"])
    strings = vocab_strings(tok, vocab_size)
    train = np.concatenate([np.fromfile(f, dtype=np.uint16) for f in sorted((args.run / "tokens").glob("train_*.bin"))])
    rows = []
    for n_classes in args.classes:
        t0 = time.perf_counter()
        label = token_classes(train, vocab_size, n_classes)
        classes: dict[str, int] = {}
        for i, s in enumerate(strings):
            classes.setdefault(s, int(label[i]))
        print(f"{n_classes} classes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for m in args.max_classes:
            conn = sqlite3.connect(layout.root / "features" / "features.sqlite")
            cfg = AutoInterpConfig(explain_all=False, models=tuple(args.models))
            pair = (ClassExplainer(classes, m), ClassSimulator(classes))
            summary = run_autointerp(conn, layout, cfg, progress=False, pair=pair)
            conn.close()
            for r in summary["dictionaries"]:
                rows.append({"classes": n_classes, "max_classes": m, **r})
    print("| classes | names at most | model | dictionary | median ρ | single-token | median ρ without single-token |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['classes']} | {r['max_classes']} | {r['model']} | {r['dictionary']} | {r['median']:.2f} | "
            f"{r['single_token_share']:.0%} | {r['median_multi_token']:.2f} |"
        )
    write_json(args.out, {"argv": sys.argv[1:], "rows": rows})
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
