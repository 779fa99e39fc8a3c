"""The case studies' rows (the `proxies` table and `summary['case_study']`) and the demo's table.

`case_study_rows` turns the passes of `proxies.run_proxies` into database rows; `format_case_study`
prints a stored summary (the demo's last lines, `monosemantic features proxies`). The summary's
shape (features/db.py's `summary` convention), one row per proxy, slice and dictionary:

    {"name", "with_synthetic", "dictionary", "dictionary_id", "feature", "feature_corr", "neuron",
     "neuron_corr", "paper_corr", "n_tokens",                   # proxy tokens in the slice
     "specificity", "neuron_specificity",                       # share above half the max activation
     "mass_specificity", "sensitivity",
     "decoder": {"n_ge", "top": [[neuron, coefficient]...], "norm"},
     "family": {"members": [[feature, r]...], "sum_corr"}}

and the `proxies` table holds the levels behind the specificities: `specificity_json` is
`{"feature": Levels, "neuron": Levels}` (casestudy.Levels.to_json), `sensitivity_json` the best
feature's sensitivity plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monosemantic.analyses.casestudy import Levels
from monosemantic.analyses.proxy_defs import Proxy

SLICES = {1: "all tokens", 0: "without synthetic/"}
"""`with_synthetic` value -> label; slice index s in the passes is the position in this dict."""


def case_study_rows(
    proxies: Sequence[Proxy],
    ids: dict[str, int],
    best: dict[str, tuple[np.ndarray, np.ndarray]],
    fams: dict[str, list[list[list[tuple[int, float]]]]],
    fam_r: dict[tuple[int, str, int], float],
    levels: dict[tuple[int, str, int], Levels],
    decoders: dict[tuple[str, int], dict[str, Any]],
    held: np.ndarray,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`(proxies table rows, summary rows)`, per slice, SAE (in `ids` order) and proxy.

    `best[d]`: ([S, P] column, [S, P] r) for each SAE and 'neurons'; `fams[d][s][k]`: the family's
    (feature, r); `fam_r`, `levels`: keyed (slice, dictionary, proxy); `decoders`: keyed
    (dictionary, feature); `held [S, P]`: proxy tokens per slice.
    """
    table, rows = [], []
    n_idx, n_corr = best["neurons"]
    for s, with_synthetic in enumerate(SLICES):
        for d, did in ids.items():
            f_idx, f_corr = best[d]
            for k, p in enumerate(proxies):
                feat, neuron = _int(f_idx[s, k]), _int(n_idx[s, k])
                lf, ln = levels.get((s, d, k)), levels.get((s, "neurons", k))
                row = {"name": p.name, "with_synthetic": with_synthetic, "dictionary_id": did, "feature": feat,
                       "feature_corr": float(f_corr[s, k]), "neuron": neuron, "neuron_corr": float(n_corr[s, k]),
                       "paper_corr": p.paper_corr, "n_tokens": int(held[s, k])}  # fmt: skip
                table.append({**row, "description": p.description,
                              "specificity_json": {"feature": lf and lf.to_json(), "neuron": ln and ln.to_json()},
                              "sensitivity_json": lf and lf.sensitivity_json()})  # fmt: skip
                fam = {"members": [[i, r] for i, r in fams[d][s][k]], "sum_corr": fam_r.get((s, d, k))}
                rows.append({**row, "dictionary": d,
                             "specificity": lf.specificity() if lf else None,
                             "neuron_specificity": ln.specificity() if ln else None,
                             "mass_specificity": lf.mass_specificity() if lf else None,
                             "sensitivity": lf.sensitivity() if lf else None,
                             "decoder": decoders.get((d, feat)) if feat is not None else None,
                             "family": fam})  # fmt: skip
    return table, rows


def _int(i: Any) -> int | None:
    return None if int(i) < 0 else int(i)


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return format(x, spec)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _size(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def format_case_study(summary: dict, dictionary: str | None = None) -> str:
    """The demo's table, per proxy over all tokens: its share of the sample and of the split, the
    best feature of `dictionary` (default: the largest) with r, specificity above half its max,
    decoder neurons and family; the best neuron with r and specificity; r per dictionary; the paper's r."""
    if not isinstance(summary, dict) or "sample" not in summary or "shares" not in summary:
        return "case studies: stored by an older version; rerun `monosemantic features proxies`"
    d = dictionary or summary["largest"]
    dmin, fmin = summary["config"]["decoder_min"], summary["config"]["family_min_r"]
    smp = summary["sample"]
    shares = summary.get("shares", {})
    rows = [r for r in summary["rows"] if r["with_synthetic"] == 1]
    lines = [
        f"case studies (paper §8.1-§8.2, §8.6), model {summary['model']}: {smp['n_tokens']:,} held-out tokens in "
        f"{smp['n_contexts']:,} contexts spread over the validation split ({smp['split_tokens']:,} tokens)",
        "% of tokens where the proxy holds (LLR > 0) in the sample and the split; content: the split's tokens of "
        "that content category (tokens stage); r: Pearson with the proxy; spec: share of tokens above half the max "
        f"activation where the proxy holds; dec: decoder neurons with |c| >= {dmin} (unit decoder row), top 3; "
        f"fam: features with r >= {fmin}, sum r: r of their summed activation",
        f"{'':<10} {'% of tokens':<21} {'feature of ' + d:<63} {'best neuron':<18}",
        f"{'proxy':<10} {'sample':>6} {'split':>6} {'content':>7} {'#':>6} {'r':>5} {'spec':>5} {'dec':>4}"
        f" {'top decoder neurons':<30}"
        f" {'fam':>3} {'sum r':>5} {'#':>5} {'r':>5} {'spec':>5} {'paper r':>7}",
    ]
    for r in rows:
        if r["dictionary"] != d:
            continue
        sh = shares.get(r["name"], {})
        dec, fam = r.get("decoder") or {}, r["family"]
        top = ", ".join(f"{i} {c:+.2f}" for i, c in dec.get("top", []))
        lines.append(
            f"{r['name']:<10} {_pct(sh.get('sample')):>6} {_pct(sh.get('split')):>6} {_pct(sh.get('category')):>7}"
            f" {_fmt(r['feature'], 'd'):>6} {_fmt(r['feature_corr']):>5} {_fmt(r['specificity']):>5}"
            f" {_fmt(dec.get('n_ge'), 'd'):>4} {top:<30}"
            f" {len(fam['members']):>3} {_fmt(fam['sum_corr']):>5} {_fmt(r['neuron'], 'd'):>5}"
            f" {_fmt(r['neuron_corr']):>5} {_fmt(r['neuron_specificity']):>5} {_fmt(r['paper_corr']):>7}"
        )
        per = [f"{_size(x['n_features'])} {_fmt(x['feature_corr'])}" for x in _by_size(summary, rows, r["name"])]
        lines.append(f"{'':<10} r by dictionary: {' · '.join(per)}")
    other = [r for r in summary["rows"] if r["with_synthetic"] == 0 and r["dictionary"] == d]
    if other and summary["n_tokens"].get(SLICES[0]) != summary["n_tokens"].get(SLICES[1]):
        lines.append(
            f"{SLICES[0]} ({summary['n_tokens'][SLICES[0]]:,} tokens), feature r / neuron r: "
            + " · ".join(f"{r['name']} {_fmt(r['feature_corr'])}/{_fmt(r['neuron_corr'])}" for r in other)
        )
    return "\n".join(lines)


def _by_size(summary: dict, rows: list[dict], name: str) -> list[dict]:
    """One proxy's rows of every SAE, smallest first, each with its `n_features`."""
    size = {x["name"]: x["n_features"] for x in summary["dictionaries"]}
    mine = [{**r, "n_features": size[r["dictionary"]]} for r in rows if r["name"] == name and r["dictionary"] in size]
    return sorted(mine, key=lambda r: r["n_features"])
