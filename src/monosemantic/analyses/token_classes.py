"""Explanations that name classes of tokens, never a token: the offline pair under the paper's rule (paper.md §8.8).

The paper's explainer writes a succinct explanation that "names no specific token examples", and its
simulator predicts from that explanation alone. The token-lookup pair (explain.py) lists token strings, and
a list of tokens predicts well any feature that is a function of the current token, which is what a
randomized model's features are (paper.md §8.9): by that pair the control scores above model A
(docs/results.md). This pair keeps the rule without a language model. The vocabulary is cut into C classes
of tokens that occur in similar contexts, computed from the run's training tokens alone:

    counts of each token's previous and next token (the 1,000 most frequent, both sides)
    → positive PMI → the top 100 singular vectors → spherical k-means (30 rounds, seeded)

An explanation names at most M classes (those with the most activation mass in the explanation examples,
each with its mean level 0–9) and, as the token pair does, a script that holds half of the mass:

    classes 17 (9), 203 (4); arabic (7)

The simulator predicts each token's level from its class and its script, else 0. C and M are choices the
paper does not make (`AutoInterpConfig.n_classes`, `max_classes`; docs/decisions.md, "Explanations that
name classes of tokens"). Fewer classes are coarser concepts; C = the vocabulary is the token lookup again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from monosemantic.analyses.explain import SCRIPTS, Evidence, level_of, script_of
from monosemantic.analyses.heldout import vocab_strings
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError

CONTEXT_TOKENS = 1000
"""Neighbours counted on each side: the most frequent tokens; every rarer neighbour is dropped."""
DIMS = 100
"""Singular vectors kept of the PPMI matrix."""
ROUNDS = 30
"""k-means rounds."""


def token_classes(tokens: np.ndarray, vocab_size: int, n_classes: int, seed: int = 0) -> np.ndarray:
    """`[vocab_size]` class of each token id: spherical k-means of its PPMI context vectors (module docstring).

    Args:
        tokens: a token stream, any integer dtype (documents back to back).
        vocab_size: ids run from 0 to this.
        n_classes: C, at most `vocab_size`.
    """
    if not 1 <= n_classes <= vocab_size:
        raise ValueError(f"n_classes must be in [1, {vocab_size}], got {n_classes}")
    ids = np.asarray(tokens, dtype=np.int64)  # no copy of an int64 stream (`TokenSplit.all_tokens`)
    freq = np.bincount(ids, minlength=vocab_size)
    n_ctx = min(CONTEXT_TOKENS, vocab_size)
    rank = np.full(vocab_size, n_ctx, dtype=np.int64)
    rank[np.argsort(-freq, kind="stable")[:n_ctx]] = np.arange(n_ctx)
    width = n_ctx + 1  # the last column counts every rarer neighbour, then is dropped
    left = np.bincount(ids[1:] * width + rank[ids[:-1]], minlength=vocab_size * width)
    right = np.bincount(ids[:-1] * width + rank[ids[1:]], minlength=vocab_size * width)
    counts = np.concatenate(
        [left.reshape(vocab_size, width)[:, :-1], right.reshape(vocab_size, width)[:, :-1]], axis=1
    ).astype(np.float64)  # (vocab, 2·n_ctx)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * counts.sum() / (counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True)))
    ppmi = np.nan_to_num(np.maximum(pmi, 0), posinf=0.0)
    u, s, _ = np.linalg.svd(ppmi, full_matrices=False)
    emb = u[:, :DIMS] * s[:DIMS]  # (vocab, ≤ DIMS)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    rng = np.random.default_rng(seed)
    centres = emb[rng.choice(vocab_size, n_classes, replace=False)]
    label = np.argmax(emb @ centres.T, axis=1)
    for _ in range(ROUNDS):
        sums = np.zeros_like(centres)
        np.add.at(sums, label, emb)
        empty = ~np.bincount(label, minlength=n_classes).astype(bool)
        sums[empty] = emb[rng.integers(vocab_size, size=int(empty.sum()))]  # an empty class restarts anywhere
        centres = sums / (np.linalg.norm(sums, axis=1, keepdims=True) + 1e-12)
        label = np.argmax(emb @ centres.T, axis=1)
    return label


def class_of_strings(strings: Sequence[str], label: np.ndarray) -> dict[str, int]:
    """Token string → class, as the database's examples spell tokens (the lowest id wins a shared string)."""
    out: dict[str, int] = {}
    for i, s in enumerate(strings):
        out.setdefault(s, int(label[i]))
    return out


def run_classes(tokens_dir: Path, tokenizer: Path, n_classes: int, seed: int = 0) -> dict[str, int]:
    """The classes of a run's vocabulary, from its training tokens (`tokens/`) and its tokenizer."""
    if not (tokens_dir / "config.json").is_file() or not tokenizer.is_file():
        raise UserError(f"{tokens_dir}: --explainer classes needs the run's tokens and tokenizer")
    store = TokenStore(tokens_dir)
    if n_classes > store.vocab_size:
        raise UserError(f"{tokens_dir}: {n_classes} classes are more than the vocabulary's {store.vocab_size} tokens")
    label = token_classes(store.train.all_tokens(), store.vocab_size, n_classes, seed)
    return class_of_strings(vocab_strings(Tokenizer.from_file(str(tokenizer)), store.vocab_size), label)


@dataclass(frozen=True)
class ClassExplainer:
    """Names the classes (and the script) of the examples' tokens with the most activation mass."""

    classes: dict[str, int]
    max_classes: int = 4
    name: str = "classes"

    def explain(self, evidence: Evidence) -> str:
        top = max((max(e.acts) for e in evidence.examples if e.acts), default=0.0)
        if top <= 0:
            return "never fires"
        mass: dict[int, float] = defaultdict(float)  # class -> its tokens' activation mass
        count: dict[int, int] = defaultdict(int)
        script_mass: dict[str, float] = defaultdict(float)
        script_count: dict[str, int] = defaultdict(int)
        for e in evidence.examples:
            for t, a in zip(e.tokens, e.acts, strict=True):
                c = self.classes.get(t, -1)  # -1: a string outside the vocabulary names nothing
                mass[c] += a
                count[c] += 1
                if (s := script_of(t)) is not None:
                    script_mass[s] += a
                    script_count[s] += 1
        level = {c: level_of(m / count[c], top) for c, m in mass.items() if c >= 0}
        chosen = [c for c in sorted(level, key=lambda c: (-mass[c], c)) if level[c] >= 1][: self.max_classes]
        parts = ["classes " + ", ".join(f"{c} ({level[c]})" for c in chosen)] if chosen else []
        total = sum(mass.values())
        for s in SCRIPTS:
            if total > 0 and script_mass.get(s, 0.0) / total >= 0.5:
                parts.append(f"{s} ({level_of(script_mass[s] / script_count[s], top)})")
        return "; ".join(parts) or "no consistent pattern"


def parse_classes(explanation: str) -> tuple[dict[int, int], dict[str, int]]:
    """The (class → level) and (script → level) clauses of a class explanation; other text predicts nothing."""
    levels: dict[int, int] = {}
    scripts: dict[str, int] = {}
    for part in explanation.split("; "):
        if part.startswith("classes "):
            for item in part.removeprefix("classes ").split(", "):
                c, _, lv = item.partition(" (")
                if c.isdigit() and lv[:1].isdigit():
                    levels[int(c)] = int(lv[:1])
        elif (s := part.partition(" (")[0]) in SCRIPTS and part[-2:-1].isdigit():
            scripts[s] = int(part[-2])
    return levels, scripts


@dataclass(frozen=True)
class ClassSimulator:
    """Each token's level: the explanation's level for its class or its script, else 0."""

    classes: dict[str, int]
    name: str = "classes"

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        levels, scripts = parse_classes(explanation)
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
