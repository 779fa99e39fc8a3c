"""Export a feature database as a Neuronpedia dataset export, the files Neuronpedia's import reads.

    export_neuronpedia(RunLayout("runs/default"), Path("np"), NeuronpediaConfig(release="my-saes"))

The layout and every record follow Neuronpedia's own converter from SAEDashboard output to its
public dataset exports, and the record classes it writes (docs/reference/peers.md §8):

    OUT/<modelId>/<sourceId>/            sourceId = "<layer>-<source set>", e.g. "0-tm2023-4096"
      release.jsonl                      one SourceRelease
      model.jsonl                        one Model
      sourceset.jsonl                    one SourceSet
      source.jsonl                       one Source (dataset, prompts, tokens per prompt, HF weights)
      features/batch-<i>.jsonl.gz        one Feature (Neuronpedia's Neuron table) per feature, 1,024 per batch
      activations/batch-<i>.jsonl.gz     the examples of batch i's features: tokens, values, bins
      explanations/batch-<i>.jsonl.gz    the explanations of batch i's features

One source per SAE dictionary of the database (`dictionaries` picks some). From each feature row:
`frac_nonzero` = density; `freq_hist_data_bar_values`/`_heights` = the activation histogram's bin
centres (log-spaced bins) and counts; `pos_str`/`pos_values` and `neg_str`/`neg_values` = the top and
bottom logit weights, `logits_hist_data_*` their histogram; `maxActApprox` = the largest exported
activation, as the converter computes it. Top examples are activations with binMin = binContains = −1
and binMax = the feature's max (the converter's "TOP ACTIVATIONS" group); interval examples carry their
interval (binMin, binMax] and binContains = the share of the feature's active tokens in it. Random
examples, neuron alignment, correlations and loss values are left at the converter's defaults (empty),
as are vectors (no steering). Explanations go without type and explainer-model names, which must name
rows of Neuronpedia's own tables; our explainer and score are in `notes`. Ids are 25-character
cuid-like strings derived from the content, so a re-export writes the same ids.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monosemantic import paths
from monosemantic.data.corpus import dataset_name
from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.features import db
from monosemantic.io import atomic_path, stage_dir
from monosemantic.writers import check_output, mark_export

# Neuronpedia's seeded default user (its webapp's DEFAULT_CREATOR_USER_ID, the converter's fallback).
DEFAULT_CREATOR_ID = "clkht01d40000jv08hvalcvly"
FEATURES_PER_BATCH = 1024  # the size of the public exports' batches
GZIP_LEVEL = 5  # the converter's compresslevel


@dataclass(frozen=True)
class NeuronpediaConfig:
    """What the export names its model, release and sources; defaults come from the run."""

    model_id: str | None = None
    """Neuronpedia model id (default: the subject, `hf-` dropped, or RUN-MODEL for the run's own model)."""
    release: str | None = None
    """Release id, letters, digits and dashes (default: the run directory's name)."""
    release_title: str | None = None
    """Human-readable release title (default: one naming the run)."""
    creator_name: str = "monosemantic"
    """Author shown on the release and source set."""
    creator_id: str = DEFAULT_CREATOR_ID
    """User id the rows belong to in the Neuronpedia instance (default: its seeded default user)."""
    url: str | None = None
    """A URL of the paper or release."""
    hf_repo_id: str | None = None
    """Hugging Face repository holding the SAEs (`sae export --format hub`); each source's folder is its name."""
    model: str | None = None
    """Which model's dictionaries (default: the one the database was built for)."""
    dictionaries: tuple[str, ...] = ()
    """SAE dictionaries to export (default: every SAE of the model)."""


def slug(text: str) -> str:
    """Letters, digits and single dashes, lower case: what Neuronpedia accepts in ids."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "x"


def layer_of(hook: str) -> int:
    """The layer number in a hook name (`blocks.3.mlp.hook_post`, `transformer.h.3.mlp...`); 0 if none."""
    m = re.search(r"\.(\d+)(?:\.|$|:)", hook)
    return int(m.group(1)) if m else 0


def _cuid(*parts: Any) -> str:
    return "c" + hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:24]


def _centres(hist: dict[str, Any] | None) -> tuple[list[float], list[float]]:
    """(bin centres, counts) of a `{"edges", "counts"}` histogram; empty lists without one."""
    if not hist or not hist.get("counts"):
        return [], []
    e = hist["edges"]
    return [round((e[i] + e[i + 1]) / 2, 6) for i in range(len(hist["counts"]))], [float(c) for c in hist["counts"]]


@dataclass(frozen=True)
class _Source:
    model_id: str
    source_id: str
    set_name: str
    dict_id: int
    name: str
    hook: str
    n_features: int


def export_neuronpedia(
    layout: paths.RunLayout, out: Path, cfg: NeuronpediaConfig, force: bool = False, created_at: datetime | None = None
) -> list[Path]:
    """Write the export folder `out` (built whole, then renamed); returns the source folders written."""
    try:
        conn = db.open_readonly(layout.features_db)
    except db.DatabaseError as e:
        raise UserError(str(e)) from None
    try:
        check_output(out, [layout.root], force)
    except UserError:
        conn.close()
        raise
    when = (created_at or datetime.now(UTC)).isoformat()
    try:
        meta = db.get_meta(conn, "features") or {}
        model = cfg.model or meta.get("model") or "A"
        rows = conn.execute(
            "SELECT id, name, hook, kind, n_features FROM dictionaries WHERE model = ? ORDER BY kind, n_features, name",
            (model,),
        ).fetchall()
        if not rows:
            raise UserError(f"{layout.features_db}: no dictionaries of model {model!r}")
        saes = [r for r in rows if r["kind"] == "sae" and (not cfg.dictionaries or r["name"] in cfg.dictionaries)]
        missing = set(cfg.dictionaries) - {r["name"] for r in saes}
        if missing:
            raise UserError(f"{layout.features_db}: no SAE dictionary {', '.join(sorted(missing))} of model {model}")
        own = f"{layout.root.name}-{model}"  # the run's own transformer: named after the run
        model_id = slug(cfg.model_id or (model.removeprefix("hf-") if model.startswith("hf-") else own))
        neurons = next((r for r in rows if r["kind"] == "neurons"), None)
        sources = [
            _Source(model_id, f"{layer_of(r['hook'])}-{slug(r['name'])}", slug(r["name"]), r["id"], r["name"],
                    r["hook"], r["n_features"])
            for r in saes
        ]  # fmt: skip
        ctx_len = meta.get("ctx_len") or _run_ctx_len(layout, model)
        n_tokens = int(meta.get("n_tokens") or 0)
        common = {
            "cfg": cfg,
            "when": when,
            "release": slug(cfg.release or layout.root.name),
            "dataset": dataset_name(layout.corpus),
            "num_prompts": n_tokens // ctx_len if ctx_len else None,
            "ctx_len": ctx_len,
            "neurons_per_layer": neurons["n_features"] if neurons is not None else 0,
        }
        written = []
        with stage_dir(out, force=force) as tmp:
            mark_export(tmp, "neuronpedia")
            for s in sources:
                folder = tmp / s.model_id / s.source_id
                _write_metadata(folder, s, common, layout)
                _write_batches(conn, folder, s, cfg, when)
                written.append(out / s.model_id / s.source_id)
    finally:
        conn.close()
    return written


def _run_ctx_len(layout: paths.RunLayout, model: str) -> int | None:
    """The run model's context length (databases written before `ctx_len` was recorded)."""
    try:
        return int(json.loads((layout.transformer(model) / paths.CONFIG).read_text())["model"]["ctx_len"])
    except (OSError, *CONFIG_VALUE_ERRORS):
        return None


def _jsonl(path: Path, records: list[dict[str, Any]], gz: bool = False) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if gz else data)


def _write_metadata(folder: Path, s: _Source, c: dict[str, Any], layout: paths.RunLayout) -> None:
    """release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl: the converter's records, field for field."""
    cfg: NeuronpediaConfig = c["cfg"]
    title = cfg.release_title or f"monosemantic: sparse autoencoders of {layout.root.name}"
    creator, when = cfg.creator_id, c["when"]
    release = {
        "name": c["release"], "description": title, "creatorName": cfg.creator_name, "creatorId": creator,
        "visibility": "PUBLIC", "isNewUi": False, "featured": False, "descriptionShort": title,
        "urls": [cfg.url] if cfg.url else [], "creatorEmail": None, "creatorNameShort": cfg.creator_name,
        "defaultSourceSetName": None, "defaultSourceId": None, "defaultUmapSourceIds": [], "createdAt": when,
    }  # fmt: skip
    model = {
        "id": s.model_id, "instruct": s.model_id.endswith("-it"), "creatorId": creator,
        "displayNameShort": s.model_id, "displayName": s.model_id, "tlensId": None, "dimension": None,
        "visibility": "PUBLIC", "defaultSourceSetName": None, "defaultSourceId": None,
        "inferenceEnabled": False,  # Neuronpedia's servers cannot run this model: no live activations
        "layers": 0, "neuronsPerLayer": c["neurons_per_layer"], "createdAt": when, "owner": "",
        "updatedAt": when, "website": None,
    }  # fmt: skip
    what = f"{s.name}, {s.n_features:,} features"
    sourceset = {
        "modelId": s.model_id, "name": s.set_name, "creatorId": creator, "hasDashboards": True,
        "visibility": "PUBLIC", "description": f"{s.hook} - {what}", "type": "", "creatorName": cfg.creator_name,
        "urls": [], "creatorEmail": None, "releaseName": c["release"], "defaultOfModelId": None,
        "defaultRange": 1, "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
        "showHeadAttribution": False, "showUmap": False, "createdAt": when,
    }  # fmt: skip
    source = {
        "id": s.source_id, "modelId": s.model_id, "setName": s.set_name, "creatorId": creator,
        "hasDashboards": True, "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": None,
        "saelensRelease": None, "saelensSaeId": None, "hfRepoId": cfg.hf_repo_id,
        "hfFolderId": s.name if cfg.hf_repo_id else None, "visibility": "PUBLIC",
        "defaultOfModelId": None, "hasUmap": False, "hasUmapLogSparsity": False, "hasUmapClusters": False,
        "num_prompts": c["num_prompts"], "num_tokens_in_prompt": c["ctx_len"], "dataset": c["dataset"],
        "notes": None, "createdAt": when,
    }  # fmt: skip
    for name, record in (("release", release), ("model", model), ("sourceset", sourceset), ("source", source)):
        _jsonl(folder / f"{name}.jsonl", [record])


def _write_batches(conn: sqlite3.Connection, folder: Path, s: _Source, cfg: NeuronpediaConfig, when: str) -> None:
    """features/, activations/ and explanations/ batch-<i>.jsonl.gz, FEATURES_PER_BATCH features each."""
    for i, lo in enumerate(range(0, s.n_features, FEATURES_PER_BATCH)):
        feats, acts, expls = [], [], []
        for f, feature_acts, expl in _records(conn, s, cfg, when, lo, min(lo + FEATURES_PER_BATCH, s.n_features)):
            feats.append(f)
            acts += feature_acts
            expls += expl
        _jsonl(folder / "features" / f"batch-{i}.jsonl.gz", feats, gz=True)
        _jsonl(folder / "activations" / f"batch-{i}.jsonl.gz", acts, gz=True)
        if expls:
            _jsonl(folder / "explanations" / f"batch-{i}.jsonl.gz", expls, gz=True)


def _records(
    conn: sqlite3.Connection, s: _Source, cfg: NeuronpediaConfig, when: str, lo: int, hi: int
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]:
    """(Feature, its Activations, its Explanations) for features [lo, hi) of source `s`."""
    did = s.dict_id
    feats = {r["feature"]: r for r in conn.execute(
        "SELECT * FROM features WHERE dictionary_id = ? AND feature >= ? AND feature < ?", (did, lo, hi))}  # fmt: skip
    examples: dict[int, list[sqlite3.Row]] = {}
    for r in conn.execute(
        "SELECT * FROM examples WHERE dictionary_id = ? AND feature >= ? AND feature < ?"
        " AND kind IN ('top', 'interval') ORDER BY feature, kind = 'interval', interval DESC, rank",
        (did, lo, hi),
    ):
        examples.setdefault(r["feature"], []).append(r)
    bins = {(r["feature"], r["interval"]): r for r in conn.execute(
        "SELECT * FROM intervals WHERE dictionary_id = ? AND feature >= ? AND feature < ?", (did, lo, hi))}  # fmt: skip
    for index in range(lo, hi):
        row = feats.get(index)
        activations = [_activation(s, cfg, when, row, e, bins) for e in examples.get(index, [])]
        yield _feature(s, cfg, when, index, row, activations), activations, _explanation(s, cfg, when, index, row)


def _feature(
    s: _Source, cfg: NeuronpediaConfig, when: str, index: int, row: sqlite3.Row | None, acts: list[dict[str, Any]]
) -> dict[str, Any]:
    """One Feature record (the converter's `Feature`, every field)."""
    logit = json.loads(row["logit_json"]) if row is not None and row["logit_json"] else {}
    hist = json.loads(row["hist_json"]) if row is not None and row["hist_json"] else None
    freq_values, freq_heights = _centres(hist)
    logit_values, logit_heights = _centres(logit.get("hist"))
    return {
        "modelId": s.model_id, "layer": s.source_id, "index": str(index), "creatorId": cfg.creator_id,
        "createdAt": when, "maxActApprox": max((a["maxValue"] for a in acts), default=0.0),
        "hasVector": False, "vector": [], "vectorLabel": None, "vectorDefaultSteerStrength": 10,
        "hookName": None, "topkCosSimIndices": [], "topkCosSimValues": [],
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
        "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
        "neg_str": [t for t, _ in logit.get("bottom", [])], "neg_values": [v for _, v in logit.get("bottom", [])],
        "pos_str": [t for t, _ in logit.get("top", [])], "pos_values": [v for _, v in logit.get("top", [])],
        "frac_nonzero": float(row["density"]) if row is not None else 0.0,
        "freq_hist_data_bar_heights": freq_heights, "freq_hist_data_bar_values": freq_values,
        "logits_hist_data_bar_heights": logit_heights, "logits_hist_data_bar_values": logit_values,
        "decoder_weights_dist": [], "sourceSetName": s.set_name,
    }  # fmt: skip


def _activation(
    s: _Source, cfg: NeuronpediaConfig, when: str, row: sqlite3.Row | None, e: sqlite3.Row,
    bins: dict[tuple[int, int], sqlite3.Row],
) -> dict[str, Any]:  # fmt: skip
    """One Activation record (the converter's `Activation`, every field) for a top or interval example."""
    values = [float(v) if v is not None else 0.0 for v in json.loads(e["acts_json"])]
    top = max(values)
    if e["kind"] == "top":  # the converter's "TOP ACTIVATIONS" group
        bin_min, bin_max, contains = -1.0, float(row["max_act"]) if row is not None else top, -1.0
    else:
        b = bins.get((e["feature"], e["interval"]))
        n_active = row["n_active"] if row is not None else 0
        bin_min, bin_max = (float(b["lo"]), float(b["hi"])) if b is not None else (0.0, top)
        contains = b["count"] / n_active if b is not None and n_active else 0.0
    return {
        "id": _cuid(s.model_id, s.source_id, e["feature"], e["kind"], e["interval"], e["rank"]),
        "tokens": json.loads(e["tokens_json"]), "index": str(e["feature"]), "layer": s.source_id,
        "modelId": s.model_id, "maxValue": top, "maxValueTokenIndex": values.index(top), "minValue": min(values),
        "values": values, "creatorId": cfg.creator_id, "dataSource": None, "dataIndex": None, "dfaValues": [],
        "dfaTargetIndex": None, "dfaMaxValue": None, "createdAt": when, "lossValues": [],
        "logitContributions": None, "binMin": bin_min, "binMax": bin_max, "binContains": contains,
        "qualifyingTokenIndex": int(e["max_index"]), "zIndices": None, "zValues": None,
    }  # fmt: skip


def _explanation(
    s: _Source, cfg: NeuronpediaConfig, when: str, index: int, row: sqlite3.Row | None
) -> list[dict[str, Any]]:
    """The feature's Explanation record (batch-autointerp's fields, no embedding), or none."""
    if row is None or not row["explanation"]:
        return []
    notes = f"monosemantic {row['explainer'] or 'explainer'}"
    if row["score"] is not None:
        notes += f"; simulation score (Spearman) {row['score']:.3f}"
    return [{
        "id": _cuid("explanation", s.model_id, s.source_id, index), "modelId": s.model_id, "layer": s.source_id,
        "index": str(index), "description": row["explanation"], "authorId": cfg.creator_id, "triggeredById": None,
        "typeName": None, "explanationModelName": None, "notes": notes, "createdAt": when,
    }]  # fmt: skip
