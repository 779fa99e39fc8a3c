"""A synthetic feature database: every table filled, hostile corpus text included, any size.

For the browser's tests and benchmark, and for trying the browser before a run has features:

    build_synthetic_db("/tmp/f.sqlite", n_features=16_384)

Deterministic (`random.Random(seed)`), standard library only, written with `interp.db` exactly as
the interp stage writes a real run. Contexts mix plain words with what a scraped corpus can hold
and a browser must show as text: `<script>`, an `onerror` image, a `javascript:` URL, right-to-left
marks, zero-width joiners and stacked combining accents.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

from monosemantic.features import db

HOOK = "blocks.0.mlp.hook_post"
SOURCES = ("prose/story", "code/python", "multi/mixed", "synthetic/count")
HOSTILE = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "\u202egnp.exe",  # right-to-left override
    "zero\u200bwidth\u200d",
    "Z\u0335\u0321\u0327a\u0336\u0361l\u0338go",  # combining marks
    "</span></div><b>bold?</b>",
    '" onmouseover="alert(1)',
    "{{ 7*7 }}",
)
WORDS = (  # noqa: SIM905 (a sentence reads better than a list of 60 strings)
    " the whale sees the rope . the captain follows a storm , our crew loves the moon and"
    " def add ( a , b ) : return a + b x_1 = 42 + 7 1 , 2 , 3 , 4 مرحبا بالعالم שלום עולם 你好 世界 ACGT TGCA"
).split(" ")
EXPLAIN = (
    "closing parenthesis in Python code", "Arabic script", "Hebrew script", "DNA sequences",
    "numbers in a counting list", "the word 'whale' in stories", "HTML tags <script>", "base64-like strings",
    "end of a sentence", "variable names after '='",
)  # fmt: skip


def build_synthetic_db(
    path: str | Path,
    n_features: int = 64,
    sizes: tuple[int, ...] | None = None,
    n_neurons: int = 32,
    window: int = 24,
    n_top: int = 8,
    n_intervals: int = 4,
    per_interval: int = 2,
    seed: int = 0,
) -> Path:
    """Write a feature database at `path` (must not exist); returns the path.

    Dictionaries: the neurons (`n_neurons`), model A SAEs of `sizes` (default `n_features // 2` and
    `n_features`), and a model B SAE of `n_features` (for the universality match). Total features
    = n_neurons + sum(sizes) + n_features.
    """
    r = random.Random(seed)
    sizes = sizes or (max(n_features // 2, 1), n_features)
    conn = db.create(path)
    metrics = {
        s: {"l0": 4 + 60 / math.sqrt(s), "fvu": 0.5 / math.log2(s + 1), "loss_recovered": 1 - 2 / math.log2(s + 2),
            "n_dead": s // 50, "n_dense": s // 200, "mse": 0.01, "explained_variance": 0.9}
        for s in (*sizes, n_features)
    }  # fmt: skip
    dicts = [(db.add_dictionary(conn, name="neurons", model="A", hook=HOOK, kind="neurons", n_features=n_neurons,
                                n_tokens=100_000), n_neurons)]  # fmt: skip
    for s in sizes:
        d = db.add_dictionary(conn, name=f"tm2023-{s}", model="A", hook=HOOK, kind="sae", architecture="tm2023",
                              n_features=s, n_tokens=100_000, metrics=metrics[s])  # fmt: skip
        dicts.append((d, s))
    b = db.add_dictionary(conn, name=f"tm2023-{n_features}", model="B", hook=HOOK, kind="sae",
                          architecture="tm2023", n_features=n_features, n_tokens=100_000,
                          metrics=metrics[n_features])  # fmt: skip
    dicts.append((b, n_features))
    n_clusters = 6
    db.insert_rows(conn, "clusters", [{"id": c, "label": f"cluster {c}: {EXPLAIN[c]}", "size": 0}
                                      for c in range(n_clusters)])  # fmt: skip
    for d, n in dicts:
        _fill_dictionary(conn, r, d, n, window, n_top, n_intervals, per_interval, n_clusters)
    _links(conn, r, dicts, b)
    _summaries(conn, dicts, sizes)
    _case_study(conn, dicts, sizes)
    conn.execute("UPDATE clusters SET size = (SELECT count(*) FROM features WHERE cluster = clusters.id)")
    db.finalize(conn)
    conn.close()
    return Path(path)


def _context(r: random.Random, window: int, f: int, peak: float) -> tuple[list[str], list[float], int]:
    """A window of tokens (one hostile string in most), the feature's acts on them and the max index."""
    toks = [" " + r.choice(WORDS) for _ in range(window)]
    if r.random() < 0.7:
        toks[r.randrange(window)] = HOSTILE[(f + r.randrange(len(HOSTILE))) % len(HOSTILE)]
    m = r.randrange(window // 2, window)
    acts = [0.0 if r.random() < 0.7 else round(r.random() * peak * 0.5, 4) for _ in range(window)]
    acts[m] = round(peak, 4)
    return toks, acts, m


def _fill_dictionary(conn, r, d, n, window, n_top, n_intervals, per_interval, n_clusters) -> None:
    feats, examples, intervals, ablations, pinned, logit_links = [], [], [], [], [], []
    for f in range(n):
        density = 0.0 if f % 97 == 5 else 10 ** r.uniform(-5, -0.5)
        max_act = round(r.uniform(0.5, 12), 4) if density else 0.0
        shares = [r.random() ** 3 for _ in SOURCES]
        total = sum(shares)
        edges = [max_act * 10 ** (k / 4 - 3) for k in range(13)]
        top_tok = [r.choice(WORDS) for _ in range(3)]
        feats.append({
            "dictionary_id": d, "feature": f, "density": density, "n_active": int(density * 100_000),
            "mean_act": max_act / 3 if density else None, "max_act": max_act,
            "hist_json": {"edges": edges, "counts": [int(r.expovariate(0.01)) for _ in range(12)]},
            "source_json": {s: round(v / total, 4) for s, v in zip(SOURCES, shares, strict=True)},
            "top_tokens": " ".join(top_tok + ([HOSTILE[f % len(HOSTILE)]] if f % 5 == 0 else [])),
            "logit_json": {"top": [[" " + r.choice(WORDS), round(r.uniform(0.5, 3), 3)] for _ in range(6)],
                           "bottom": [[" " + r.choice(WORDS), round(-r.uniform(0.5, 3), 3)] for _ in range(6)],
                           "hist": {"edges": [k / 2 - 4 for k in range(17)],
                                    "counts": [int(1000 * math.exp(-((k - 8) ** 2) / 8)) for k in range(16)]}},
            "explanation": EXPLAIN[f % len(EXPLAIN)] + (f" {HOSTILE[f % len(HOSTILE)]}" if f % 7 == 0 else ""),
            "explainer": "synthetic", "score": round(r.uniform(-0.1, 0.9), 3) if f % 11 else None,
            "umap_x": r.gauss(f % n_clusters * 3, 1), "umap_y": r.gauss((f * 7) % n_clusters, 1),
            "cluster": f % n_clusters if f % 13 else -1,
        })  # fmt: skip
        if not density:
            continue
        kinds: list[tuple[str, int | None, int, float]] = [
            ("top", None, k, max_act * (1 - k / (2 * n_top))) for k in range(n_top)
        ]
        for i in range(n_intervals):
            lo, hi = max_act * i / n_intervals, max_act * (i + 1) / n_intervals
            intervals.append({"dictionary_id": d, "feature": f, "interval": i, "lo": lo, "hi": hi,
                              "count": 1000 // (i + 1)})  # fmt: skip
            kinds += [("interval", i, k, r.uniform(lo, hi) or hi) for k in range(per_interval)]
        for kind, interval, rank, peak in kinds:
            toks, acts, m = _context(r, window, f, peak)
            abl = [None] * (m + 1) + [round(r.uniform(-0.8, 0.8), 3) for _ in range(window - m - 1)]
            examples.append({
                "dictionary_id": d, "feature": f, "kind": kind, "interval": interval, "rank": rank,
                "ctx_offset": r.randrange(10**6), "ctx_pos": m, "src": r.choice(SOURCES), "max_act": acts[m],
                "max_index": m, "tokens_json": toks, "acts_json": acts, "ablation_json": abl if kind == "top" else None,
            })  # fmt: skip
        ablations.append({"dictionary_id": d, "feature": f, "mean_loss_delta": round(r.uniform(-0.1, 0.3), 4),
                          "promoted_json": [[" " + r.choice(WORDS), round(r.uniform(0, 2), 3)] for _ in range(5)],
                          "suppressed_json": [[HOSTILE[0], -1.25]] + [[" " + r.choice(WORDS), -0.5]]})  # fmt: skip
        for k in range(2):
            pinned.append({"dictionary_id": d, "feature": f, "rank": k, "value": max_act * 2,
                           "prompt": "the whale", "sample": " ".join(r.choice(WORDS) for _ in range(12))
                           + (HOSTILE[1] if k else "")})  # fmt: skip
        for k in range(3):
            logit_links.append({"dictionary_id": d, "feature": f, "rank": k, "target_feature": r.randrange(n),
                                "weight": round(r.uniform(0.1, 1), 3)})  # fmt: skip
    for table, rows in (("features", feats), ("examples", examples), ("intervals", intervals),
                        ("ablations", ablations), ("pinned", pinned), ("logit_links", logit_links)):  # fmt: skip
        db.insert_rows(conn, table, rows)


def _links(conn, r: random.Random, dicts: list[tuple[int, int]], model_b: int) -> None:
    """Splits between consecutive A sizes; matches to the neurons and to model B."""
    neurons, saes = dicts[0], [x for x in dicts[1:] if x[0] != model_b]
    splits, matches = [], []
    for (pd, pn), (cd, cn) in zip(saes, saes[1:], strict=False):
        for c in range(cn):
            splits.append({"parent_dictionary_id": pd, "parent_feature": c % pn, "child_dictionary_id": cd,
                           "child_feature": c, "act_cosine": round(r.uniform(0.5, 1), 3),
                           "dec_cosine": round(r.uniform(0.4, 1), 3)})  # fmt: skip
    bn = dicts[-1][1]
    for d, n in saes:
        for f in range(n):
            for other, on in ((neurons[0], neurons[1]), (model_b, bn)):
                for k in range(2):
                    matches.append({"dictionary_id": d, "feature": f, "other_dictionary_id": other, "rank": k,
                                    "other_feature": r.randrange(on), "corr": round(r.uniform(0, 0.9), 3)})  # fmt: skip
    db.insert_rows(conn, "splits", splits)
    db.insert_rows(conn, "matches", matches)


def _summaries(conn, dicts: list[tuple[int, int]], sizes: tuple[int, ...]) -> None:
    db.set_summary(conn, "eval", [{"dictionary": f"tm2023-{s}", "n_features": s, "l0": 4 + 60 / math.sqrt(s),
                                   "loss_recovered": 1 - 2 / math.log2(s + 2)} for s in sizes])  # fmt: skip
    from monosemantic.analyses.bands import PAPER, density_bands, distribution  # the real summary's shape

    def pair(name: str, kind: str, best: list[float]) -> dict:
        density = np.array([5e-5, 5e-4, 5e-3] * 2)[: len(best)]  # features dealt round-robin into the 3 bands
        by = density_bands(np.array(best), density, [1e-4, 1e-3], 20)
        return {"dictionary": name, "kind": kind, **distribution(np.array(best), 20), "by_density": by}

    db.set_summary(
        conn,
        "universality",
        {
            "model": "A",
            "other": "B",
            "n_tokens": 262_144,
            "paper": PAPER,
            "pairs": [
                pair("neurons", "neurons", [0.3, 0.4, 0.5, 0.45]),
                pair(f"tm2023-{sizes[-1]}", "sae", [0.1, 0.2, 0.8, 0.7, 0.9]),
            ],
        },
    )
    db.set_summary(conn, "interpretability", {"features": {"mean_score": 0.41, "n": 100},
                                              "neurons": {"mean_score": 0.12, "n": 100}})  # fmt: skip
    db.set_summary(conn, "interpretability_classes", {"explainer": "classes/classes (256 classes of tokens, at most 4 "
                   "named)", "dictionaries": [{"model": "A", "dictionary": "neurons", "median": 0.31}]})  # fmt: skip


PROXIES = ("arabic", "dna", "base64", "hebrew")


def _levels(r: random.Random, max_act: float, n: int = 10) -> dict:
    """A column's specificity by activation level (analyses/casestudy.py `Levels.to_json`)."""
    tokens = [int(4000 / (k + 1) ** 2) + 1 for k in range(n)]
    held = [int(t * min(1.0, 0.1 + k / n + r.uniform(0, 0.1))) for k, t in enumerate(tokens)]
    half = {"tokens": sum(tokens[n // 2 :]), "proxy_tokens": sum(held[n // 2 :])}
    return {"max": max_act, "edges": [max_act * k / n for k in range(n + 1)], "tokens": tokens, "proxy_tokens": held,
            "act": [t * max_act * (k + 0.5) / n for k, t in enumerate(tokens)],
            "proxy_act": [h * max_act * (k + 0.5) / n for k, h in enumerate(held)], "half_max": half,
            "specificity": half["proxy_tokens"] / half["tokens"], "mass_specificity": 0.5}  # fmt: skip


def _case_study(conn, dicts: list[tuple[int, int]], sizes: tuple[int, ...]) -> None:
    """The `proxies` rows and `summary['case_study']` as analyses/proxies.py writes them
    (analyses/casestudy_report.py): per proxy, slice and model A SAE, feature k of each."""
    r = random.Random(1)
    neurons, saes = dicts[0], dicts[1 : 1 + len(sizes)]
    table, rows = [], []
    for ws in (1, 0):
        for d, n in saes:
            for k, name in enumerate(PROXIES):
                feat, neuron = (k * 7 + n // 3) % n, (k * 5) % neurons[1]
                base = {"name": name, "with_synthetic": ws, "dictionary_id": d, "feature": feat,
                        "feature_corr": round(0.8 - k / 10 - 0.1 * ws, 3), "neuron": neuron, "neuron_corr": 0.3,
                        "paper_corr": (0.74, 0.8, 0.38, 0.55)[k], "n_tokens": 1000 * (k + 1)}  # fmt: skip
                lf, ln = _levels(r, 8.0), _levels(r, 3.0)
                table.append({**base, "description": f"{name} proxy <b>not bold</b>",
                              "specificity_json": {"feature": lf, "neuron": ln},
                              "sensitivity_json": {"edges": [0, 5, 10], "tokens": [10, 5], "fires": [8, 5],
                                                   "act": [20.0, 30.0], "sensitivity": 0.9}})  # fmt: skip
                members = [[feat, base["feature_corr"]], [(feat + 1) % n, 0.31], [(feat + 2) % n, 0.22]]
                rows.append({**base, "dictionary": f"tm2023-{n}", "specificity": lf["specificity"],
                             "neuron_specificity": ln["specificity"], "mass_specificity": 0.5, "sensitivity": 0.9,
                             "decoder": {"n_ge": 20 + k, "top": [[neuron, 0.41], [(neuron + 1) % neurons[1], -0.3],
                                                                 [(neuron + 2) % neurons[1], 0.22]], "norm": 1.0},
                             "family": {"members": members, "sum_corr": 0.85}})  # fmt: skip
    db.insert_rows(conn, "proxies", table)
    db.set_summary(conn, "case_study", {
        "model": "A", "neurons_dictionary_id": neurons[0], "largest": f"tm2023-{saes[-1][1]}",
        "dictionaries": [{"name": f"tm2023-{n}", "id": d, "n_features": n} for d, n in saes],
        "config": {"n_tokens": 1_048_576, "n_levels": 10, "family_min_r": 0.2, "decoder_min": 0.1,
                   "note": "<script>alert('summary')</script>"},
        "sample": {"n_tokens": 1_048_576, "n_contexts": 4096, "ctx_len": 256, "order": "spread",
                   "split_tokens": 1_327_449},
        "n_tokens": {"all tokens": 1_048_576, "without synthetic/": 1_000_000},
        "shares": {name: {"sample": 0.002 * (k + 1), "split": 0.0021 * (k + 1), "split_tokens": 1_327_360,
                          "category": 0.002} for k, name in enumerate(PROXIES)},
        "rows": rows,
        "seconds": {"pass1": 60.0, "pass2": 8.0, "split_share": 1.0, "pass1_cpu": 110.0, "pass2_cpu": 14.0,
                    "split_share_cpu": 1.0},
    })  # fmt: skip
