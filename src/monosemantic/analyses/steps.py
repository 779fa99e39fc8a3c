"""The analyses that run inside `features build`, in order, after the core records (build.py).

Each is a `Step(name, run)` with `run(conn, layout, cfg, progress)`: it reads what it needs from the open
database (examples carry `ctx_offset`/`ctx_pos` to re-run a forward) and the run directory, and
writes its own tables (db.py). Each analysis keeps its own defaults; the build passes on its
model and hook, and its token budget where the analysis streams tokens. `FeaturesConfig.analyses`
picks a subset (`--analyses ablations,map`, or `none`); the caller passes the
selection to `build_features(..., steps=...)`. Each one also runs alone on a finished database: `monosemantic features
ablate|split|map ...`.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3

from monosemantic.errors import UserError
from monosemantic.features.build import find_saes
from monosemantic.features.config import FeaturesConfig, Step
from monosemantic.paths import CONFIG, RunLayout
from monosemantic.transformer.subject import is_run_model

log = logging.getLogger(__name__)


def _ablations(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.analyses.ablation import AblationConfig, run_ablation
    from monosemantic.analyses.ablation_deep import run_deep_ablation

    ablation = AblationConfig(model=cfg.model, hook=cfg.hook, ctx_len=cfg.ctx_len)
    if is_run_model(layout, cfg.model):
        run_ablation(conn, layout, ablation, progress=progress)
    else:  # a deep subject: a sample of features, through the whole forward
        run_deep_ablation(conn, layout, ablation, progress=progress)


def _split(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.analyses.splitting import SplitConfig, run_split

    split = SplitConfig(model=cfg.model, hook=cfg.hook, n_tokens=min(cfg.n_tokens, SplitConfig.n_tokens),
                        ctx_len=cfg.ctx_len or SplitConfig.ctx_len)  # fmt: skip
    run_split(conn, layout, split, progress=progress)


def _map(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.analyses.featuremap import MapConfig, run_map
    from monosemantic.transformer.subject import subject_key

    model = subject_key(layout, cfg.model)  # the database's name of the model (hf-<name> for a HF model)
    run_map(conn, layout, MapConfig(model=model, hook=cfg.hook, seed=cfg.seed), progress=progress)


def _explain(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.analyses.autointerp import AutoInterpConfig, run_autointerp

    # every live feature explained, a sample scored; the model re-run on held-out contexts for the random windows
    subjects = () if is_run_model(layout, cfg.model) else (cfg.model,)
    auto = AutoInterpConfig(seed=cfg.seed, device=cfg.device, subjects=subjects, ctx_len=cfg.ctx_len)
    run_autointerp(conn, layout, auto, progress=progress)
    if not subjects:  # the same sample scored with explanations that name no token (the paper's rule, §8.8)
        run_autointerp(conn, layout, dataclasses.replace(auto, explainer="classes"), progress=progress)


def _proxies(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.analyses.proxies import ProxyConfig, run_proxies

    # The case studies take their own budget (ProxyConfig.n_tokens, spread over the validation split),
    # not the database's: a rare proxy needs ~1M tokens to have a few thousand (paper §8.2). A deep subject's
    # forward costs more than reading its activations back, so its pass 2 reads pass 1's from disk.
    deep = not is_run_model(layout, cfg.model)
    run_proxies(conn, layout, ProxyConfig(model=cfg.model, ctx_len=cfg.ctx_len, spill=deep), progress=progress)


def _universality(conn: sqlite3.Connection, layout: RunLayout, cfg: FeaturesConfig, progress: bool) -> None:
    from monosemantic.analyses.universality import UniversalityConfig, run_universality

    other = UniversalityConfig.other
    if not (layout.transformer(other) / CONFIG).is_file() or not find_saes(layout, other, cfg.hook):
        log.info("features: no model %s with SAEs in %s: universality skipped", other, layout.root)
        return
    uni = UniversalityConfig(model=cfg.model, n_tokens=min(cfg.n_tokens, UniversalityConfig.n_tokens))
    run_universality(conn, layout, uni, progress=progress)


STEPS: tuple[Step, ...] = (
    Step("explain", _explain, any_subject=True),  # TM "Automated Interpretability": explanations and scores
    Step("ablations", _ablations, any_subject=True),  # paper.md §8.4–§8.5: ablations on top contexts, pinned samples
    Step("split", _split, any_subject=True),  # TM "Feature Splitting": family links across sizes, automata links
    Step("map", _map, any_subject=True),  # TM "Feature Splitting" UMAP view: 2-D map and clusters
    Step("proxies", _proxies, any_subject=True),  # paper.md §8.1–§8.2 case studies: proxies, specificity, sensitivity
    Step("universality", _universality),  # TM "Universality": A's features against B's (only when B exists)
)
"""The registry of analyses, in the order `features build` runs them."""

NAMES = [s.name for s in STEPS]


def selected(spec: tuple[str, ...]) -> list[Step]:
    """The steps named in `spec` (("all",), ("none",) or () for none, or a subset of NAMES), in STEPS order.

    Raises a UserError naming `--analyses` on an unknown name.
    """
    wanted = {s.strip() for s in spec if s.strip()}
    if "all" in wanted:
        return list(STEPS)
    wanted.discard("none")
    unknown = wanted - set(NAMES)
    if unknown:
        raise UserError(f"--analyses: unknown {', '.join(sorted(unknown))}; known: all, none, {', '.join(NAMES)}")
    return [s for s in STEPS if s.name in wanted]
