"""Automated interpretability (paper.md §8.8): explain every live feature, score a sample by simulation.

    summary = run_autointerp(conn, RunLayout(run), AutoInterpConfig())
    print(format_interpretability(summary))

Per dictionary of the database (every model's: A's features and neurons, and the paper's control,
`A-shuffled`, when the build streamed it; §8.9):

1. each live feature's stored examples are split by context into explanation and test examples
   (sampling.py): the explainer reads the top examples and interval samples of its side, and every
   live feature gets an explanation (`features.explanation`), so the browser shows one for each;
2. a seeded sample of `max_features` features (the paper's protocol, which costs more) is scored: the
   simulator predicts every token of ±`window`-token windows (the paper: ±4) around the test side's
   top, interval and random non-zero examples, plus `n_random` random held-out tokens (zeros
   included) and up to `n_out_of_context` occurrences of the feature's top tokens in other
   contexts (heldout.py, a forward of the run's model over held-out contexts none of which the
   explainer read; a Hugging Face subject has no such forward here, and is scored on the stored
   examples only);
3. the score is the Spearman correlation of predicted and true activations over those tokens (the
   headline, as the paper; `features.score`), with Pearson's and an importance-weighted Spearman
   beside it in the summary (scoring.py says exactly what is weighted how).

Also reported per dictionary: the share of single-token features (sampling.is_single_token: the
same max token in every top example), which the paper uses to explain why its control's features
score high, and the medians without them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from monosemantic import paths
from monosemantic.analyses.explain import Evidence, Explainer, OfflineExplainer, OfflineSimulator, Simulator
from monosemantic.analyses.heldout import HeldOutPool, load_pool
from monosemantic.analyses.llm import ChatClient, LLMConfig, LLMExplainer, LLMSimulator
from monosemantic.analyses.loader import DictRow, dictionaries, load_dictionaries
from monosemantic.analyses.sampling import (
    ScoringWindow,
    StoredExample,
    explanation_examples,
    is_single_token,
    read_examples,
    split_by_context,
    stored_test_windows,
    top_tokens,
)
from monosemantic.analyses.scoring import importance_weights, window_scores
from monosemantic.analyses.token_classes import ClassExplainer, ClassSimulator, run_classes
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.transformer.subject import subject_key

log = logging.getLogger(__name__)

CLASSES_SUMMARY = "interpretability_classes"
"""The summary key of the class pair's scores (`explainer="classes"`), kept beside the token pair's."""


@dataclass(frozen=True)
class AutoInterpConfig:
    """Which features, which explainer, how many examples."""

    explainer: Literal["offline", "classes", "llm"] = "offline"
    """offline: token statistics, no language model; classes: the same with classes of tokens for tokens, so that
    an explanation names no token, as the paper's (token_classes.py; scores only: the features' explanations
    stay as they are); llm: an OpenAI-compatible chat endpoint (--llm-*)."""
    offline_max_tokens: int = 8
    """How many token strings an offline explanation may name (its bigram clauses name at most half as many):
    the paper's explanations are succinct, so a small budget keeps a lookup list from passing for a concept."""
    n_classes: int = 256
    """classes: how many classes of tokens the run's vocabulary is cut into (8,192 tokens: 32 a class on average)."""
    max_classes: int = 4
    """classes: how many classes one explanation may name."""
    models: tuple[str, ...] = ()
    """Models to explain (default: every model in the database, e.g. A and A-shuffled)."""
    max_features: int = 300
    """Features (and neurons) scored per dictionary, a seeded sample; 0 = every live one."""
    explain_all: bool = True
    """Explain every live feature (with --explainer llm, one request each); else only the scored sample."""
    min_examples: int = 10
    """Score only features with at least this many stored examples (the paper drops those with fewer than 20)."""
    window: int = 4
    """Tokens each side of a test window's centre token that the simulator predicts (the paper: 4)."""
    n_random: int = 20
    """Random held-out tokens per scored feature, zero activations included (needs the run's model)."""
    n_out_of_context: int = 5
    """Windows on the feature's top tokens in contexts the explainer did not read (needs the run's model)."""
    pool_contexts: int = 64
    """Held-out contexts run through the model for those two; 0 = score on the stored examples only."""
    device: str = "cpu"
    """Device of that forward."""
    subjects: tuple[str, ...] = ()
    """Hugging Face subjects to run for that pool, as --model names them (a path or hf:NAME); the database
    knows them as hf-<name>. Run models are found by name."""
    ctx_len: int | None = None
    """Context length of those Hugging Face subjects: the build's (default 256)."""
    seed: int = 0
    """Seeds the feature sample and the random windows."""

    def __post_init__(self) -> None:
        for name in ("max_features", "window", "n_random", "n_out_of_context", "pool_contexts"):
            if getattr(self, name) < 0:
                raise ValueError(f"AutoInterpConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("offline_max_tokens", "n_classes", "max_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"AutoInterpConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_examples < 2:
            raise ValueError(f"AutoInterpConfig.min_examples must be >= 2, got {self.min_examples}")


def make_pair(cfg: AutoInterpConfig, llm: LLMConfig, layout: paths.RunLayout) -> tuple[Explainer, Simulator]:
    if cfg.explainer == "offline":
        budget = cfg.offline_max_tokens
        return OfflineExplainer(max_tokens=budget, max_bigrams=budget // 2), OfflineSimulator()
    if cfg.explainer == "classes":
        classes = run_classes(layout.tokens, layout.tokenizer / paths.TOKENIZER_JSON, cfg.n_classes, cfg.seed)
        return ClassExplainer(classes, cfg.max_classes), ClassSimulator(classes)
    client = ChatClient(llm, cache_dir=layout.root / "features" / "llm_cache")
    return LLMExplainer(client), LLMSimulator(client)


@dataclass
class FeatureInfo:
    """What scoring one feature needs beside its examples: its `features` row and `intervals` counts."""

    n_active: int
    max_act: float
    sources: dict[str, float]
    interval_counts: list[int]

    def population(self, n_tokens: int) -> dict[int, int]:
        """Held-out tokens per stratum (scoring.py): 0 = zero activation, i + 1 = activation interval i."""
        counts = self.interval_counts or [self.n_active]
        return {0: max(n_tokens - self.n_active, 0), **{i + 1: c for i, c in enumerate(counts)}}


def live_features(conn: sqlite3.Connection, d: DictRow) -> dict[int, FeatureInfo]:
    """The dictionary's features that fired at least once, with their interval counts."""
    out = {
        int(f): FeatureInfo(int(n), float(m), json.loads(src or "{}"), [])
        for f, n, m, src in conn.execute(
            "SELECT feature, n_active, max_act, source_json FROM features WHERE dictionary_id = ? AND n_active > 0"
            " ORDER BY feature",
            (d.id,),
        )
    }
    rows = conn.execute(
        "SELECT feature, count FROM intervals WHERE dictionary_id = ? ORDER BY feature, interval", (d.id,)
    )
    for f, c in rows:
        if int(f) in out:
            out[int(f)].interval_counts.append(int(c))
    return out


def sample_features(candidates: list[int], cfg: AutoInterpConfig, dictionary_id: int) -> list[int]:
    """The scored sample: `max_features` of `candidates`, seeded by (seed, dictionary id), sorted."""
    if cfg.max_features and len(candidates) > cfg.max_features:
        rng = np.random.default_rng([cfg.seed, dictionary_id])
        return sorted(rng.choice(candidates, cfg.max_features, replace=False).tolist())
    return sorted(candidates)


def scoring_windows(
    explain: list[StoredExample],
    test: list[StoredExample],
    info: FeatureInfo,
    cfg: AutoInterpConfig,
    pool: HeldOutPool | None,
    col: np.ndarray | None,
    rng: np.random.Generator,
) -> list[ScoringWindow]:
    """Every window the simulator is scored on for one feature: the stored test side, then the pool's."""
    n_iv = len(info.interval_counts)
    out = stored_test_windows(test, cfg.window, info.max_act, n_iv)
    if pool is not None and col is not None:
        exclude = {e.ctx_offset for e in explain}
        out += pool.windows(col, exclude, cfg.n_random, top_tokens(explain), cfg.n_out_of_context, cfg.window,
                            info.max_act, n_iv, rng)  # fmt: skip
    return out


def score_windows(
    explanation: str, windows: list[ScoringWindow], simulator: Simulator, population: dict[int, int]
) -> dict[str, float | None]:
    """Simulate `windows` from `explanation` and score (scoring.window_scores) with importance weights."""
    predicted = simulator.simulate(explanation, [w.tokens for w in windows])
    sampled = {i: w.stratum for i, w in enumerate(windows) if w.stratum is not None}  # probability samples
    weights: list[float | None] = [None] * len(windows)
    for i, w in zip(sampled, importance_weights(list(sampled.values()), population), strict=True):
        weights[i] = float(w)
    return window_scores(predicted, [w.acts for w in windows], weights)


def run_autointerp(
    conn: sqlite3.Connection,
    layout: paths.RunLayout,
    cfg: AutoInterpConfig,
    progress: bool = True,
    llm: LLMConfig | None = None,
    pair: tuple[Explainer, Simulator] | None = None,
) -> dict:
    """Explain every live feature and score a sample of each dictionary; write `features.explanation/
    explainer/score` and `summary['interpretability']` (returned). `pair` overrides the configured explainer.

    With `explainer="classes"` only the scored sample is explained and nothing is written to `features` (class
    numbers mean nothing to a reader; the browser keeps the token explanations): the summary goes to
    `summary['interpretability_classes']`, beside the token pair's."""
    wanted = set(cfg.models)
    dicts = [d for d in dictionaries(conn) if not wanted or d.model in wanted]
    if not dicts:
        raise UserError("feature database: no dictionaries to explain; run `monosemantic features build` first")
    classes = cfg.explainer == "classes"
    if classes:
        foreign = sorted({d.model for d in dicts if not (layout.transformer(d.model) / paths.CONFIG).is_file()})
        if foreign:  # its classes come from the run's own tokenizer, which spells other models' tokens otherwise
            raise UserError(f"--explainer classes: {', '.join(foreign)} is not a model of {layout.root}")
        cfg = replace(cfg, explain_all=False)
    explainer, simulator = pair or make_pair(cfg, llm or LLMConfig(), layout)
    pools: dict[tuple[str, str], HeldOutPool | None] = {}
    specs = {subject_key(layout, s): s for s in cfg.subjects}  # database name -> what loads it
    out = []
    for d in dicts:
        n_tokens = int(conn.execute("SELECT n_tokens FROM dictionaries WHERE id = ?", (d.id,)).fetchone()[0])
        key = (d.model, d.hook)
        if key not in pools and n_tokens:  # one forward per model, shared by its dictionaries
            spec = specs.get(d.model, d.model)
            pools[key] = load_pool(layout, spec, d.hook, n_tokens, cfg.pool_contexts, cfg.seed, cfg.device,
                                   ctx_len=cfg.ctx_len) if cfg.pool_contexts else None  # fmt: skip
        row = _dictionary(conn, layout, d, n_tokens, cfg, explainer, simulator, pools.get(key), progress)
        if row is not None:
            out.append(row)
    summary = {
        "explainer": f"{explainer.name}/{simulator.name}"
        + (f" ({cfg.n_classes} classes of tokens, at most {cfg.max_classes} named)" if classes else ""),
        "score": "Spearman rank correlation of simulated and true activations over every test token (the "
        "headline); Pearson and importance-weighted Spearman beside it",
        "config": asdict(cfg),
        "dictionaries": out,
        "paper": "features score far above neurons (activation simulation, figure only); the randomised model's "
        "features score high only through single-token features; logit-based median 0.74 features, 0.53 "
        "neurons, 0.5 randomised model (paper.md §8.8)",
    }
    db.set_summary(conn, CLASSES_SUMMARY if classes else "interpretability", summary)
    conn.commit()
    return json.loads(db.dumps(summary))


def _pmap(fn, items: list, workers: int, desc: str, progress: bool) -> list:
    """`[fn(x) for x in items]` on `workers` threads (the LLM pair keeps requests in flight), with a bar."""
    if workers <= 1:
        return [fn(x) for x in tqdm(items, desc=desc, disable=not progress)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, disable=not progress))


def _dictionary(
    conn: sqlite3.Connection,
    layout: paths.RunLayout,
    d: DictRow,
    n_tokens: int,
    cfg: AutoInterpConfig,
    explainer: Explainer,
    simulator: Simulator,
    pool: HeldOutPool | None,
    progress: bool,
) -> dict | None:
    """Explain and score one dictionary (statistics over `n_tokens` held-out tokens), writing the explanations
    and scores into `features` (not the class pair's: `run_autointerp`); its summary row (None when it has no
    live feature)."""
    t0 = time.perf_counter()
    info = live_features(conn, d)
    if not info:
        return None
    examples = read_examples(conn, d.id)
    splits = {f: split_by_context(examples.get(f, [])) for f in info}
    eligible = [f for f in info if splits[f][0] and len(examples.get(f, [])) >= cfg.min_examples]
    scored = sample_features(eligible, cfg, d.id)
    todo = [f for f in info if splits[f][0]] if cfg.explain_all else scored
    workers = getattr(explainer, "concurrency", 1)
    name = f"{d.model}/{d.name}"

    def explain(f: int) -> str:
        return explainer.explain(Evidence(explanation_examples(splits[f][0]), info[f].sources))

    explanations = dict(zip(todo, _pmap(explain, todo, workers, f"explain {name}", progress), strict=True))
    cols = None
    if pool is not None and scored:
        (dictionary,) = load_dictionaries(conn, layout, d.model, d.hook, kinds=(d.kind,), names=(d.name,))
        cols = pool.columns(dictionary, scored)
    index = {f: j for j, f in enumerate(scored)}

    def score(f: int) -> tuple[dict[str, float | None], Counter]:
        rng = np.random.default_rng([cfg.seed, d.id, f])
        col = cols[:, index[f]] if cols is not None else None
        windows = scoring_windows(splits[f][0], splits[f][1], info[f], cfg, pool, col, rng)
        if not windows:
            return {"spearman": None, "pearson": None, "spearman_weighted": None}, Counter()
        scores = score_windows(explanations[f], windows, simulator, info[f].population(n_tokens))
        return scores, Counter(w.kind for w in windows)

    results = dict(zip(scored, _pmap(score, scored, workers, f"score {name}", progress), strict=True))
    if cfg.explainer != "classes":
        conn.executemany(
            "UPDATE features SET explanation = ?, explainer = ?, score = ? WHERE dictionary_id = ? AND feature = ?",
            [(e, f"{explainer.name}/{simulator.name}", results[f][0]["spearman"] if f in results else None, d.id, f)
             for f, e in explanations.items()],
        )  # fmt: skip
        conn.commit()
    single = {f for f in scored if is_single_token(examples.get(f, []))}
    row = {**_summary_row(d, info, explanations, results, single), "heldout_forward": pool is not None}
    log.info("explain %s: %d explained, %d scored in %.1f s", name, len(explanations), len(scored),
             time.perf_counter() - t0)  # fmt: skip
    return row


def _median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def _summary_row(
    d: DictRow,
    info: dict[int, FeatureInfo],
    explanations: dict[int, str],
    results: dict[int, tuple[dict[str, float | None], Counter]],
    single: set[int],
) -> dict:
    """One dictionary's line of `summary['interpretability']`."""
    ok = {f: s for f, (s, _) in results.items() if s["spearman"] is not None}
    rho = [float(s["spearman"]) for s in ok.values()]  # type: ignore[arg-type]  # ok: spearman is not None
    windows: Counter = sum((c for _, c in results.values()), Counter())
    return {
        "model": d.model,
        "dictionary": d.name,
        "kind": d.kind,
        "n_live": len(info),
        "n_explained": len(explanations),
        "n_scored": len(ok),
        "median": _median(rho),
        "mean": float(np.mean(rho)) if rho else None,
        "median_pearson": _median([float(s["pearson"]) for s in ok.values()]),  # type: ignore[arg-type]  # ok: spearman is not None
        "median_weighted": _median(
            [float(s["spearman_weighted"]) for s in ok.values() if s["spearman_weighted"] is not None]
        ),  # fmt: skip
        "single_token_share": float(np.mean([f in single for f in ok])) if ok else None,
        "median_multi_token": _median([float(s["spearman"]) for f, s in ok.items() if f not in single]),  # type: ignore[arg-type]  # ok: spearman is not None
        "test_windows_per_feature": {k: round(v / max(len(ok), 1), 1) for k, v in sorted(windows.items())},
    }


def format_interpretability(summary: dict) -> str:
    """One line per dictionary: explained and scored features, the median scores, the single-token share."""
    lines = [
        f"automated interpretability (§8.8), explainer {summary['explainer']}: score = Spearman ρ of simulated "
        "and true activations (r: Pearson; weighted: importance-weighted ρ)",
        f"{'model':<12} {'dictionary':<14} {'explained':>9} {'scored':>6} {'median ρ':>8} {'r':>5} {'weighted':>8}"
        f" {'single-token':>12} {'ρ w/o single':>12}",
    ]
    for d in summary["dictionaries"]:
        if not d.get("n_explained", d["n_scored"]):
            continue
        med, r, w, multi = (
            _num(d.get(k)) for k in ("median", "median_pearson", "median_weighted", "median_multi_token")
        )
        single = "-" if d["single_token_share"] is None else f"{d['single_token_share']:.0%}"
        lines.append(
            f"{d['model']:<12} {d['dictionary']:<14} {d.get('n_explained', '-'):>9} {d['n_scored']:>6} {med:>8}"
            f" {r:>5} {w:>8} {single:>12} {multi:>12}"
        )
    stored_only = sorted({d["model"] for d in summary["dictionaries"] if d.get("heldout_forward") is False})
    if stored_only:
        lines.append(f"({', '.join(stored_only)}: no forward of the model here, so scored on the stored examples "
                     "only: no random held-out or out-of-context windows)")  # fmt: skip
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
