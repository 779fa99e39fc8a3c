"""The analyses that run inside `features build`, in order, after the core records (build.py).

Each is `(name, step)` with `step(conn, layout, cfg, progress)`: it reads what it needs from the open
database (examples carry `ctx_offset`/`ctx_pos` to re-run a forward) and the run directory, and
writes its own tables (db.py). Each analysis keeps its own defaults; the build passes on its
model and hook, and its token budget where the analysis streams tokens. `FeaturesConfig.analyses`
picks a subset (`--analyses ablations,map`, or `none`); `build_features(..., steps=[...])`
overrides the list. Each one also runs alone on a finished database: `monosemantic features
ablate|split|map ...`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from monosemantic.interp.build import FeaturesConfig, Step, find_saes
from monosemantic.paths import CONFIG, RunLayout

log = logging.getLogger(__name__)


def _ablations(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.interp.ablation import AblationConfig, run_ablation

    run_ablation(conn, layout, AblationConfig(model=cfg.model, hook=cfg.hook), progress=progress)


def _split(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.interp.splitting import SplitConfig, run_split

    split = SplitConfig(model=cfg.model, hook=cfg.hook, n_tokens=min(cfg.n_tokens, SplitConfig.n_tokens))
    run_split(conn, layout, split, progress=progress)


def _map(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.interp.featuremap import MapConfig, run_map
    from monosemantic.transformer.subject import subject_key

    model = subject_key(layout, cfg.model)  # the database's name of the model (hf-<name> for a HF model)
    run_map(conn, layout, MapConfig(model=model, hook=cfg.hook, seed=cfg.seed), progress=progress)


def _explain(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.interp.autointerp import AutoInterpConfig, run_autointerp

    run_autointerp(conn, layout, AutoInterpConfig(seed=cfg.seed), progress=progress)


def _proxies(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.interp.proxies import ProxyConfig, run_proxies

    proxies = ProxyConfig(model=cfg.model, n_tokens=min(cfg.n_tokens, ProxyConfig.n_tokens))
    run_proxies(conn, layout, proxies, progress=progress)


def _universality(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.interp.universality import UniversalityConfig, run_universality

    other = UniversalityConfig.other
    if not (layout.transformer(other) / CONFIG).is_file() or not find_saes(layout, other, cfg.hook):
        log.info("features: no model %s with SAEs in %s: universality skipped", other, layout.root)
        return
    uni = UniversalityConfig(model=cfg.model, n_tokens=min(cfg.n_tokens, UniversalityConfig.n_tokens))
    run_universality(conn, layout, uni, progress=progress)


STEPS: list[tuple[str, Step]] = [
    ("explain", _explain),  # TM "Automated Interpretability": explanations and scores (offline by default)
    ("ablations", _ablations),  # TM §4: ablations on top contexts, pinned samples
    ("split", _split),  # TM "Feature Splitting": family links across sizes, automata links
    ("map", _map),  # TM "Feature Splitting" UMAP view: 2-D map and clusters, labelled with the explanations
    ("proxies", _proxies),  # TM §5 case studies: proxies, specificity and sensitivity
    ("universality", _universality),  # TM "Universality": A's features against B's (only when B exists)
]

NAMES = [name for name, _ in STEPS]
ANY_SUBJECT = ("explain", "map")
"""The analyses that read only the database and the SAEs, so they run on a Hugging Face subject too; the
others re-run the run's own one-layer transformer (edited forwards, its tokenizer, model B)."""


def for_subject(steps: Sequence[tuple[str, Step]], run_model: bool, key: str) -> list[tuple[str, Step]]:
    """`steps` without those of NAMES that need the run's own model when the subject is not one."""
    if run_model:
        return list(steps)
    skipped = [n for n, _ in steps if n in NAMES and n not in ANY_SUBJECT]
    if skipped:
        log.info("features: %s need the run's own model, not %s: skipped", ", ".join(skipped), key)
    return [(n, s) for n, s in steps if n not in skipped]


def selected(spec: str) -> list[tuple[str, Step]]:
    """The steps named in `spec` ('all', 'none', or a comma-separated subset of NAMES), in STEPS order."""
    if spec.strip() == "all":
        return list(STEPS)
    if spec.strip() in ("", "none"):
        return []
    wanted = {s.strip() for s in spec.split(",") if s.strip()}
    unknown = wanted - set(NAMES)
    if unknown:
        raise ValueError(f"unknown analyses {', '.join(sorted(unknown))}; known: all, none, {', '.join(NAMES)}")
    return [(n, s) for n, s in STEPS if n in wanted]
