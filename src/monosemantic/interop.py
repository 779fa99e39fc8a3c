"""SAELens exports with everything a run knows about each SAE: metadata, feature density and a model card.

    export_saelens_with_metadata(Path("runs/x/sae/A/blocks.0.mlp.hook_post/tm2023-4096"), Path("out/tm2023-4096"))
    export_hub(Path("runs/x/sae/A/blocks.0.mlp.hook_post"), Path("out/repo"), repo_id="me/my-saes")

`sae/saelens.py` writes the format; this module, above the stages, reads the run around an SAE
folder to fill it in (docs/formats.md "SAELens export"):
- `training.json` beside the SAE: the recipe, the input scale, and the activation store it trained on,
  whose `config.json` gives the subject model, the hook and the context length; the run's
  `corpus/` gives the dataset. An imported SAE has `imported.json` instead, with the metadata its
  own folder carried.
- `eval/MODEL/HOOK/NAME/metrics.json`: the metrics of the model card.
- density for `sparsity.safetensors`: the feature database's (held-out tokens) when it holds this
  SAE, else the fraction of rows of the training activations on which each feature fires, over at
  most `density_rows` rows (SAELens's trainer measures it on its training activations too).

The Hugging Face layout (`export_hub`) is a repository folder: one SAELens folder per SAE, named
after it (the `sae_id` of `SAE.from_pretrained(release=REPO_ID, sae_id=NAME)`, which reads
`NAME/cfg.json`, `NAME/sae_weights.safetensors` and `NAME/sparsity.safetensors`), and a README.md
model card listing them.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic import paths
from monosemantic.data.corpus import dataset_name
from monosemantic.errors import UserError
from monosemantic.features import db
from monosemantic.io import atomic_path, stage_dir
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.saelens import export_saelens, log10_density
from monosemantic.writers import check_output, mark_export

log = logging.getLogger(__name__)

DENSITY_ROWS = 262_144
"""Default rows of training activations encoded for the density when the feature database lacks the SAE."""

# Hugging Face module paths -> TransformerLens hook names (SAELens's `hook_name`), for the architectures
# whose names are known; other hooks keep their module path. (layer `L`, side) per pattern.
_TL_HOOKS = [
    (r"(?:transformer\.h|model\.layers|gpt_neox\.layers|model\.decoder\.layers)\.(\d+)", "output", "hook_resid_post"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj", "input", "mlp.hook_post"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj", "input", "mlp.hook_post"),
    (r"gpt_neox\.layers\.(\d+)\.mlp\.dense_4h_to_h", "input", "mlp.hook_post"),
    (r"(?:transformer\.h|model\.layers|gpt_neox\.layers)\.(\d+)\.mlp", "output", "hook_mlp_out"),
    (r"(?:transformer\.h\.(\d+)\.attn|model\.layers\.(\d+)\.self_attn)", "output", "hook_attn_out"),
]


@dataclass
class SAEInfo:
    """What a run says about one SAE folder: SAELens metadata, density, and the model card's facts."""

    name: str
    sae: SparseAutoencoder
    metadata: dict[str, Any] = field(default_factory=dict)
    """SAELens metadata keys (model_name, hook_name, context_size, dataset_path, ...) and `monosemantic_*`."""
    density: Tensor | None = None
    """`[n_features]` firing fraction, or None when nothing measured it."""
    density_source: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def tl_hook_name(hook: str) -> str | None:
    """The TransformerLens name of a Hugging Face hook spec (`transformer.h.1.mlp.c_proj:input` ->
    `blocks.1.mlp.hook_post`), or None when the module path is not one we know."""
    path, _, side = hook.partition(":")
    side = side or "output"
    for pattern, want, name in _TL_HOOKS:
        m = re.fullmatch(pattern, path)
        if m and side == want:
            layer = next(g for g in m.groups() if g is not None)
            return f"blocks.{layer}.{name}"
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _run_of(sae_folder: Path) -> tuple[paths.RunLayout, str, str] | None:
    """(run, model key, hook folder) when `sae_folder` is RUN/sae/MODEL/HOOK/NAME."""
    parts = sae_folder.resolve().parts
    if len(parts) >= 5 and parts[-4] == "sae":
        return paths.RunLayout(Path(*parts[:-4])), parts[-3], parts[-2]
    return None


def _dataset(corpus: Path) -> dict[str, Any]:
    """dataset_path of a run's corpus (`corpus.dataset_name`) and the corpus sha256."""
    meta: dict[str, Any] = {}
    name = dataset_name(corpus)
    if name is not None:
        meta["dataset_path"] = name
    sha = _read(corpus / paths.MANIFEST).get("sha256")
    if sha:
        meta["monosemantic_corpus_sha256"] = sha
    return meta


def describe(sae_folder: Path, hook: str | None = None, density_rows: int = DENSITY_ROWS) -> SAEInfo:
    """Everything the run knows about the SAE saved in `sae_folder` (module docstring)."""
    sae = SparseAutoencoder.load(sae_folder)
    info = SAEInfo(sae_folder.name, sae)
    info.training = _read(sae_folder / paths.TRAINING_JSON)
    imported = _read(sae_folder / paths.IMPORTED_JSON)
    meta = info.metadata
    meta.update({k: v for k, v in imported.get("metadata", {}).items() if not k.startswith("sae_lens")})
    source = info.training.get("source", {})
    store_cfg = _read(Path(source["activations"]) / paths.CONFIG) if "activations" in source else {}
    run = _run_of(sae_folder)
    spec = hook or store_cfg.get("hook") or source.get("hook") or meta.get("hook_name")
    own: bool | None = None  # the run's own transformer, a Hugging Face model, or unknown (no store)
    if store_cfg:
        subject = str(store_cfg.get("model", ""))
        own = _read(Path(subject) / paths.CONFIG).get("kind") == "monosemantic.transformer"
        meta["model_name"] = str(store_cfg.get("model_name")) if own else _hf_name(subject)
        meta["context_size"] = store_cfg.get("ctx_len")
        meta["prepend_bos"] = False  # contexts are windows of the token stream, documents split by EOT
        meta.update(_dataset(Path(str(store_cfg.get("tokens", ""))).parent / "corpus"))
    if spec:
        if own is False:  # a Hugging Face module path: SAELens's hf_hook_name, and the TransformerLens name if known
            meta["hf_hook_name"] = spec.partition(":")[0]
            meta["monosemantic_hook"] = spec
            spec = tl_hook_name(spec) or meta["hf_hook_name"]
        meta["hook_name"] = spec
    if info.training:
        meta["monosemantic_train"] = info.training.get("train")
        meta["monosemantic_n_activations"] = info.training.get("n_activations")
        meta["monosemantic_input_scale"] = info.training.get("input_scale")
    if imported:
        meta["monosemantic_imported_from"] = imported.get("format")
    if run is not None:
        layout, key, hook_dir = run
        info.metrics = _read(layout.root / "eval" / key / hook_dir / info.name / paths.METRICS)
        info.density, info.density_source = _db_density(layout, key, info.name, sae.cfg.n_features)
    if info.density is None and "activations" in source and density_rows > 0:
        info.density, info.density_source = _store_density(sae, Path(source["activations"]), density_rows)
    if info.metrics:
        keys = ("l0", "fvu", "explained_variance", "loss_recovered", "dead_frac", "dense_frac", "eval_tokens")
        meta["monosemantic_metrics"] = {k: info.metrics.get(k) for k in keys if k in info.metrics}
    return info


def _hf_name(subject: str) -> str:
    """A Hugging Face subject's name: the hub name as given, or a local folder's / .gguf file's name."""
    subject = subject.removeprefix("hf:")
    p = Path(subject)
    return p.stem if p.suffix == ".gguf" else (p.name if p.exists() else subject)


def _db_density(layout: paths.RunLayout, key: str, name: str, n: int) -> tuple[Tensor | None, str]:
    if not layout.features_db.is_file():
        return None, ""
    try:
        conn = db.open_readonly(layout.features_db)
    except db.DatabaseError:
        return None, ""
    try:
        row = conn.execute(
            "SELECT id, n_tokens FROM dictionaries WHERE model = ? AND name = ? AND kind = 'sae'", (key, name)
        ).fetchone()
        if row is None:
            return None, ""
        sql = "SELECT density FROM features WHERE dictionary_id = ? ORDER BY feature"
        dens = [r[0] for r in conn.execute(sql, (row[0],))]
    except sqlite3.Error:
        return None, ""
    finally:
        conn.close()
    if len(dens) != n:
        return None, ""
    return torch.tensor(dens, dtype=torch.float64), f"feature database, {row[1]:,} held-out tokens"


@torch.inference_mode()
def _store_density(sae: SparseAutoencoder, store: Path, max_rows: int) -> tuple[Tensor | None, str]:
    from monosemantic.activations.store import open_activations

    if not store.exists():
        log.warning("%s: activations gone; no sparsity.safetensors", store)
        return None, ""
    acts = open_activations(store)
    counts, seen = torch.zeros(sae.cfg.n_features, dtype=torch.float64), 0
    sae = sae.float().eval()
    for x in acts.batches(4096, seed=0):
        x = x[: max_rows - seen]
        counts += (sae.encode(x) > 0).sum(0).double()
        seen += len(x)
        if seen >= max_rows:
            break
    return (counts / seen, f"{seen:,} rows of its training activations") if seen else (None, "")


def model_card(info: SAEInfo, repo_id: str | None = None) -> str:
    """README.md for one SAE folder: Hugging Face front matter, what it is, metrics, recipe, data, loading."""
    m, cfg = info.metadata, info.sae.cfg
    lines = ["---", "library_name: saelens", "tags:", "- sparse-autoencoder", "- monosemantic", "---", ""]
    lines += [f"# {info.name}", ""]
    subject = m.get("model_name", "an unrecorded model")
    lines += [f"A sparse autoencoder ({info.sae.architecture}) on `{subject}`, hook `{m.get('hook_name')}`.", ""]
    rows = [("architecture", info.sae.architecture), ("d_in", cfg.d_in), ("features", cfg.n_features)]
    rows += [(k, getattr(cfg, k)) for k in ("k",) if hasattr(cfg, k)]
    lines += _table(("", ""), rows)
    if info.metrics:
        keys = ("l0", "fvu", "explained_variance", "loss_recovered", "loss_recovered_vs_mean", "dead_frac")
        n_tokens = info.metrics.get("eval_tokens", "?")
        lines += ["## Metrics", "", f"On {n_tokens} held-out tokens (`monosemantic sae eval`).", ""]
        lines += _table(("metric", "value"), [(k, _fmt(info.metrics[k])) for k in keys if k in info.metrics])
    if info.training:
        train = info.training.get("train") or {}
        lines += [
            "## Recipe",
            "",
            f"`monosemantic sae train --arch {info.training.get('arch')}`, "
            f"{info.training.get('n_steps')} steps on {info.training.get('n_activations')} activations.",
            "",
        ]
        settings = [(k, _fmt(v)) for k, v in train.items() if k not in ("progress", "log_every")]
        lines += _table(("setting", "value"), settings)
        scale = info.training.get("input_scale")
        if scale is not None:
            lines += [
                f"Inputs were scaled by {scale:.6g} while training; the scale is folded into the weights, "
                "so the SAE reads raw activations (`normalize_activations: none`).",
                "",
            ]
    if m.get("monosemantic_imported_from"):
        lines += [f"Imported from a {m['monosemantic_imported_from']} folder.", ""]
    data: list[tuple[str, Any]] = [
        (k, m[k]) for k in ("model_name", "hook_name", "hf_hook_name", "context_size", "dataset_path") if k in m
    ]
    if info.density is not None:
        data.append(("density", f"{info.density_source}; log10 in sparsity.safetensors"))
    if data:
        lines += ["## Data", ""] + _table(("", ""), data)
    where = f'release="{repo_id}", sae_id="{info.name}"' if repo_id else None
    lines += ["## Loading", "", "```python", "from sae_lens import SAE", ""]
    lines += [f"sae = SAE.from_pretrained({where})" if where else 'sae = SAE.load_from_disk("path/to/this/folder")']
    lines += ["```", ""]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list | dict) else str(v)


def _table(head: tuple[str, str], rows: list[tuple[str, Any]]) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def export_saelens_with_metadata(
    sae_folder: Path, out: Path, hook: str | None = None, density_rows: int = DENSITY_ROWS, force: bool = False
) -> Path:
    """`sae export --format saelens`: one SAELens folder with metadata, sparsity and README (built whole)."""
    check_output(out, [sae_folder], force)
    info = describe(sae_folder, hook, density_rows)
    with stage_dir(out, force=force) as tmp:
        _export(info, sae_folder, tmp, None)
        mark_export(tmp, "saelens")
    return out


def _export(info: SAEInfo, sae_folder: Path, out: Path, repo_id: str | None) -> None:
    meta = {k: v for k, v in info.metadata.items() if k != "hook_name"}
    sparsity = None if info.density is None else log10_density(info.density)
    export_saelens(
        sae_folder, out, hook_name=info.metadata.get("hook_name"), metadata=meta, sparsity=sparsity,
        readme=model_card(info, repo_id),
    )  # fmt: skip


def sae_folders(src: Path) -> list[Path]:
    """`src` itself when it is an SAE folder, else the SAE folders in it (a ladder), in natural order."""
    if (src / paths.SAE_CONFIG).is_file():
        return [src]
    found = sorted((p for p in src.glob("*") if (p / paths.SAE_CONFIG).is_file()), key=_natural)
    if not found:
        raise UserError(f"{src}: no SAE folder here (a folder with cfg.json, or folders of them)")
    return found


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def export_hub(
    src: Path, out: Path, repo_id: str | None = None, hook: str | None = None,
    density_rows: int = DENSITY_ROWS, force: bool = False,
) -> Path:  # fmt: skip
    """`sae export --format hub`: a Hugging Face repository folder, one SAELens folder per SAE and a README."""
    check_output(out, [src], force)
    infos = [(describe(f, hook, density_rows), f) for f in sae_folders(src)]
    with stage_dir(out, force=force) as tmp:
        mark_export(tmp, "hub")
        for info, folder in infos:
            _export(info, folder, tmp / info.name, repo_id)
        rows = []
        for info, _ in infos:
            mt = info.metrics
            rows.append(
                f"| [{info.name}]({info.name}/) | {info.sae.architecture} | {info.sae.cfg.n_features} | "
                f"{_fmt(mt.get('l0', '–'))} | {_fmt(mt.get('loss_recovered', '–'))} |"
            )
        first = infos[0][0]
        card = model_card(first, repo_id).split("\n# ", 1)[0]  # the front matter
        body = [card, "", f"# Sparse autoencoders on `{first.metadata.get('model_name')}`", ""]
        body += [f"Hook `{first.metadata.get('hook_name')}`; one SAELens folder per SAE, each with its own README.", ""]
        body += ["| SAE | architecture | features | L0 | loss recovered |", "|---|---|---|---|---|", *rows, ""]
        body += ["```python", "from sae_lens import SAE", ""]
        body += [f'sae = SAE.from_pretrained(release="{repo_id or "USER/REPO"}", sae_id="{first.name}")', "```", ""]
        with atomic_path(tmp / "README.md") as p:
            p.write_text("\n".join(body), encoding="utf-8")
    return out
