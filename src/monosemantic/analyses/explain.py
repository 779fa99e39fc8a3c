"""Explainers and simulators (paper.md §8.8 "Automated Interpretability", paper.md §8.8): the offline pair.

The paper's protocol: an explainer reads a feature's examples and writes a short explanation; a
simulator, in a fresh context and on *other* examples, predicts each token's activation from the
explanation alone (quantised 0–9, as Bills et al.); the score is the correlation of predicted and
true activations (scoring.py). `Explainer` and `Simulator` are the two halves; `autointerp.py` runs
them, and `llm.py` has the language-model pair for any OpenAI-compatible endpoint.

The offline pair needs no language model. Its explanation is a short text made only of evidence
the simulator can check token by token:

    tokens "AC" (9), "GT" (7); after "A": "CG" (6); Arabic script (8); mostly synthetic/dna

- *tokens*: the token strings with the most activation mass in the explanation examples, each with
  its mean activation when present, scaled so the largest activation seen is 9;
- *after*: bigrams whose mean activation beats the second token alone by >= 2 levels (the
  feature needs the context, not just the token);
- *script*: a script (proxy_defs' Unicode blocks) holding >= half of the activation mass, with
  the mean level of its tokens;
- *mostly*: the dominant corpus source (>= half of the mass), informational only.

The offline simulator parses that text back and predicts, for each token, the largest level among
the clauses that apply (its token, its bigram, its script), else 0: the explanation is a
token-level lookup model, so a wrong or vague explanation predicts badly and scores low.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np

from monosemantic.analyses.proxy_defs import BUILTIN, in_script

SCRIPTS = {n: BUILTIN[n] for n in ("arabic", "hebrew", "cyrillic", "cjk")}


@dataclass(frozen=True)
class Example:
    """A window of text: token strings and the feature's activation on each."""

    tokens: list[str]
    acts: list[float]


@dataclass(frozen=True)
class Evidence:
    """What an explainer may read about one feature."""

    examples: list[Example]
    sources: dict[str, float] = field(default_factory=dict)
    """Share of the feature's activation per corpus source (features.source_json)."""
    top_logits: list[str] = field(default_factory=list)


class Explainer(Protocol):
    @property
    def name(self) -> str: ...

    def explain(self, evidence: Evidence) -> str: ...


class Simulator(Protocol):
    @property
    def name(self) -> str: ...

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]: ...


def quantize(acts: np.ndarray, top: float) -> np.ndarray:
    """Activations scaled so that `top` is 9, rounded to integers 0–9 (Bills et al.; paper.md §8.8)."""
    if top <= 0:
        return np.zeros_like(acts, dtype=np.int64)
    return np.clip(np.rint(9 * np.asarray(acts) / top), 0, 9).astype(np.int64)


@dataclass(frozen=True)
class OfflineExplainer:
    """Explanations from token statistics of the examples (module docstring)."""

    name: str = "offline"
    max_tokens: int = 8
    max_bigrams: int = 4

    def explain(self, evidence: Evidence) -> str:
        # Plain Python sums and counts: every live feature gets an explanation, so this runs ~10^4
        # times per build (tests/analyses/test_autointerp.py checks it against the numpy original).
        top = max((max(e.acts) for e in evidence.examples if e.acts), default=0.0)
        if top <= 0:
            return "never fires"
        mass: dict[str, float] = defaultdict(float)  # token -> sum of its activations
        count: dict[str, int] = defaultdict(int)
        two_mass: dict[tuple[str, str], float] = defaultdict(float)
        two_count: dict[tuple[str, str], int] = defaultdict(int)
        for e in evidence.examples:
            prev = None
            for t, a in zip(e.tokens, e.acts, strict=True):
                mass[t] += a
                count[t] += 1
                if prev is not None:
                    two_mass[prev, t] += a
                    two_count[prev, t] += 1
                prev = t
        level = {t: level_of(m / count[t], top) for t, m in mass.items()}
        tokens = [t for t in sorted(mass, key=lambda t: -mass[t]) if level[t] >= 1][: self.max_tokens]
        bigrams: list[tuple[str, str, int]] = []
        for (p, t), m in sorted(two_mass.items(), key=lambda kv: -kv[1]):
            if len(bigrams) == self.max_bigrams:
                break
            lv = level_of(m / two_count[p, t], top)
            if lv >= level[t] + 2:
                bigrams.append((p, t, lv))
        parts = []
        if tokens:
            parts.append("tokens " + ", ".join(f"{json.dumps(t, ensure_ascii=False)} ({level[t]})" for t in tokens))
        if bigrams:
            parts.append(
                "; ".join(
                    f"after {json.dumps(p, ensure_ascii=False)}: {json.dumps(t, ensure_ascii=False)} ({lv})"
                    for p, t, lv in bigrams
                )  # fmt: skip
            )
        total = sum(mass.values())
        by_script: dict[str, list[str]] = defaultdict(list)
        for t in mass:
            if (name := script_of(t)) is not None:
                by_script[name].append(t)
        for name in SCRIPTS:
            members = by_script.get(name, [])
            if total > 0 and members and sum(mass[t] for t in members) / total >= 0.5:
                mean = sum(mass[t] for t in members) / sum(count[t] for t in members)
                parts.append(f"{name.capitalize()} script ({level_of(mean, top)})")
        if evidence.sources:
            src, share = max(evidence.sources.items(), key=lambda kv: kv[1])
            if share >= 0.5:
                parts.append(f"mostly {src}")
        return "; ".join(parts) if parts else "no consistent pattern"


def level_of(act: float, top: float) -> int:
    """`quantize` of one activation: 9·act/top rounded half to even (as numpy's rint), clipped to 0–9."""
    return min(9, max(0, round(9 * act / top)))


@lru_cache(maxsize=1 << 16)
def script_of(token: str) -> str | None:
    """The script of SCRIPTS that holds every non-space character of `token`, if any (they are disjoint)."""
    return next((name for name, proxy in SCRIPTS.items() if in_script(token, proxy.ranges)), None)


_STR = r'"(?:[^"\\]|\\.)*"'
_TOKEN = re.compile(rf"({_STR}) \((\d)\)")
_AFTER = re.compile(rf"after ({_STR}): ({_STR}) \((\d)\)")
_SCRIPT = re.compile(r"(\w+) script \((\d)\)")


@dataclass(frozen=True)
class ParsedExplanation:
    tokens: dict[str, int]
    bigrams: dict[tuple[str, str], int]
    scripts: dict[str, int]


def parse_offline(explanation: str) -> ParsedExplanation:
    """The clauses of an offline explanation (unknown text is ignored: it predicts nothing)."""
    bigrams = {(json.loads(p), json.loads(t)): int(lv) for p, t, lv in _AFTER.findall(explanation)}
    rest = _AFTER.sub("", explanation)
    tokens = {json.loads(t): int(lv) for t, lv in _TOKEN.findall(rest)}
    scripts = {s.lower(): int(lv) for s, lv in _SCRIPT.findall(rest) if s.lower() in SCRIPTS}
    return ParsedExplanation(tokens, bigrams, scripts)


@dataclass(frozen=True)
class OfflineSimulator:
    """Predicts each token's level from the clauses of an offline explanation that apply to it."""

    name: str = "offline"

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        ex = parse_offline(explanation)
        out = []
        for w in windows:
            pred = []
            for i, t in enumerate(w):
                lv = ex.tokens.get(t, 0)
                if i:
                    lv = max(lv, ex.bigrams.get((w[i - 1], t), 0))
                if ex.scripts and (s := script_of(t)) in ex.scripts:
                    lv = max(lv, ex.scripts[s])
                pred.append(float(lv))
            out.append(pred)
        return out
