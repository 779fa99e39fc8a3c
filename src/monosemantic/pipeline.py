"""The pipeline as library functions: each stage from a `RunConfig`, and the demo that runs them all.

    from monosemantic.pipeline import DemoOptions, run_demo
    summary = run_demo(RunLayout("runs/default"), run_config, DemoOptions())

The CLI parses flags into a `RunConfig` and calls these; each function skips a stage whose folder is complete
(unless `force`), so re-running resumes. Stage modules are imported where used, so `--help` stays cheap."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from monosemantic import paths
from monosemantic.config import RunConfig
from monosemantic.errors import UserError

if TYPE_CHECKING:
    from monosemantic.activations.harvest import HarvestConfig
    from monosemantic.data.corpus import CorpusConfig
    from monosemantic.data.tokenizer import TokenizerConfig
    from monosemantic.data.tokens import TokensConfig
    from monosemantic.eval.report import EvalConfig
    from monosemantic.features.config import FeaturesConfig, Step
    from monosemantic.sae.ladder import LadderConfig
    from monosemantic.sae.train import TrainRecipe
    from monosemantic.transformer.train import LMTrainConfig

log = logging.getLogger("monosemantic")
T = TypeVar("T")


# ----- the stages -----


def corpus(layout: paths.RunLayout, inputs: Sequence[str], cfg: CorpusConfig, force: bool, progress: bool) -> dict:
    """RUN/corpus from `inputs` (files, folders, globs, hf:NAME) or the embedded corpus; returns the manifest.

    Skipped when complete and built from these inputs (the same files, by content); rebuilt otherwise.
    """
    from monosemantic import provenance
    from monosemantic.data.corpus import build_corpus, corpus_inputs
    from monosemantic.io import read_json

    if provenance.reuse(layout.corpus, corpus_inputs(layout.corpus, list(inputs)), force):
        log.info("%s exists: skipping (use --force to rebuild)", layout.corpus)
        return read_json(layout.corpus / paths.MANIFEST)
    force = force or layout.corpus.exists()
    return build_corpus(list(inputs), layout.corpus, cfg, force=force, progress=progress)


def tokenize(
    layout: paths.RunLayout, tokenizer_cfg: TokenizerConfig, tokens_cfg: TokensConfig, force: bool, progress: bool
) -> dict:
    """RUN/tokenizer and RUN/tokens from RUN/corpus; returns the tokens' config.json."""
    from monosemantic import provenance
    from monosemantic.data import tokenizer, tokens
    from monosemantic.data.corpus import iter_documents
    from monosemantic.io import is_complete, read_config, read_json

    if not is_complete(layout.corpus, paths.MANIFEST):
        raise UserError(f"{layout.corpus}: no corpus yet; run `monosemantic corpus build --run {layout.root}`")
    given = [Path(tokenizer_cfg.tokenizer)] if tokenizer_cfg.tokenizer else []
    tok = tokenizer.run(
        lambda: (t for _, t in iter_documents(layout.corpus)),
        layout.tokenizer,
        tokenizer_cfg,
        force=force,
        inputs=provenance.inputs(layout.tokenizer, given or [layout.corpus], root=layout.root),
    )
    ins = provenance.inputs(layout.tokens, [layout.corpus, layout.tokenizer], root=layout.root)
    if provenance.reuse(layout.tokens, ins, force):
        log.info("%s exists: skipping (use --force to redo)", layout.tokens)
        return read_config(layout.tokens / paths.CONFIG, tokens.KIND)
    n_docs = read_json(layout.corpus / paths.MANIFEST).get("n_documents")
    return tokens.write_tokens(
        iter_documents(layout.corpus),
        tok,
        layout.tokens,
        tokens_cfg,
        force=force or layout.tokens.exists(),
        progress=progress,
        total_docs=n_docs,
        inputs=ins,
    )


def harvest(
    layout: paths.RunLayout,
    model: str,
    cfg: HarvestConfig,
    force: bool,
    progress: bool,
    ctx_len: int | None = None,
    tokens_cfg: TokensConfig | None = None,
) -> dict[str, Any]:
    """RUN/activations/MODEL/HOOK; returns the store's config."""
    from monosemantic.activations import harvest as stage

    return stage.run(layout, model, cfg, force=force, progress=progress, ctx_len=ctx_len, tokens_cfg=tokens_cfg)


def sae_checkpoints(layout: paths.RunLayout, model: str, hook: str) -> Path:
    """A run's SAE-training checkpoint folder: RUN/checkpoints/sae-MODEL-HOOK."""
    return layout.checkpoints(f"sae-{model}-{hook}")


def train_saes(
    source: Path,
    out_root: Path,
    ladder: LadderConfig,
    train: TrainRecipe,
    device: str,
    force: bool,
    extra: dict[str, Any],
    checkpoint: tuple[Path, int, bool] | None = None,
    prefetch_depth: int = 2,
    log_to: str | None = None,
) -> dict[str, Path]:
    """Open the activations at `source` and train the ladder into `out_root`; `checkpoint` is (folder, every, resume).

    `log_to` ("wandb" or "tensorboard") also sends every training log row there (`tracking.py`).

    This is where an activation store meets the trainer: `train_ladder` gets a plain iterator of
    batches (the trainer never learns where they came from). A thread reads the batches up to
    `prefetch_depth` ahead of the step (activations/prefetch.py; 0: read in the loop). On the idle
    2-core machine it made training 2–17 % faster (docs/decisions.md, 2026-12-06).
    """
    from monosemantic.activations.prefetch import prefetch
    from monosemantic.activations.store import open_activations
    from monosemantic.runtime import pick_device
    from monosemantic.sae.ladder import train_ladder

    dev = pick_device(device)
    acts = open_activations(source)
    acts.check_sample()  # NaN/inf stop the command before training starts
    seed = getattr(train, "seed", 0)
    ckpt_dir, every, resume = checkpoint or (None, 0, False)
    tracker = None
    if log_to is not None:
        from monosemantic.tracking import open_tracker

        config = {"ladder": dataclasses.asdict(ladder), "train": dataclasses.asdict(train), "source": str(source)}
        tracker = open_tracker(log_to, out_root, config, name=out_root.name)
    try:
        return train_ladder(
            lambda skip: prefetch(acts.batches(train.batch_size, seed=seed, skip_rows=skip), prefetch_depth),
            acts.d,
            acts.n_rows,
            ladder,
            train,
            out_root,
            {"activations": str(source), **extra},
            force=force,
            device=dev,
            checkpoint_dir=ckpt_dir,
            checkpoint_every=every,
            resume=resume,
            logger=tracker,
            inputs=[Path(source)],  # recorded by content hash: SAEs of changed activations are trained again
        )
    finally:
        if tracker is not None:
            tracker.close()


def evaluate(
    layout: paths.RunLayout, model: str, cfg: EvalConfig, force: bool, progress: bool, ctx_len: int | None = None
) -> dict[str, Any]:
    """RUN/eval/MODEL/HOOK: every SAE of the model at the eval config's hook; returns the metrics by SAE."""
    from monosemantic.eval import report
    from monosemantic.features.build import find_saes
    from monosemantic.transformer.subject import HF_PREFIX, hook_dirname, is_run_model, subject_key

    key, hook_dir = subject_key(layout, model), hook_dirname(cfg.hook)
    own = is_run_model(layout, model)
    root = layout.saes(key, hook_dir)
    folders = find_saes(layout, model, cfg.hook)  # in natural order: tm2023-512 before tm2023-1024
    if not folders:
        raise UserError(f"{root}: no SAEs to evaluate; run `monosemantic sae train --run {layout.root}`")
    return report.run(
        layout.transformer(model) if own else model.removeprefix(HF_PREFIX),
        folders,
        layout.tokens if own else layout.root / f"tokens-{key}",
        layout.eval(key, hook_dir),
        cfg,
        force=force,
        progress=progress,
        ctx_len=ctx_len,
    )


def analysis_steps(cfg: FeaturesConfig) -> list[Step]:
    """The analyses `cfg.analyses` names, from the registry (analyses/steps.py)."""
    from monosemantic.analyses.steps import selected

    return selected(cfg.analyses)


def features(layout: paths.RunLayout, cfg: FeaturesConfig, force: bool, progress: bool) -> Path:
    """The feature database with the analyses `cfg.analyses` names; returns its path."""
    from monosemantic.features.build import build_features

    return build_features(layout, cfg, force=force, progress=progress, steps=analysis_steps(cfg))


# ----- the demo -----


@dataclass(frozen=True)
class DemoOptions:
    """How the demo runs, beside what it computes (the RunConfig)."""

    inputs: tuple[str, ...] = ()
    """Texts instead of the embedded corpus (files, folders, globs, hf:NAME)."""
    force: bool = False
    """Redo every stage."""
    resume: bool = False
    """Require a checkpoint to continue from."""
    progress: bool = True
    checkpoint_every: int = 0
    """SAE checkpoints every this many steps (0: none)."""


@dataclass
class DemoResult:
    """What the demo made: enough for the summary it prints."""

    manifest: dict[str, Any]
    tokens: dict[str, Any]
    activations: dict[str, Any]
    evals: dict[str, Any]
    database: Path
    seconds: dict[str, float]


def run_demo(
    layout: paths.RunLayout, cfg: RunConfig, opt: DemoOptions = DemoOptions(), on_eval: Callable[[dict], None] = print
) -> DemoResult:
    """Every stage into one run directory: corpus → tokens → model A → harvest → ladder → eval → database.

    `on_eval` gets model A's evaluation as soon as it exists (the demo prints its table there, before the
    slower database). With `cfg.universality`, model B (`model_b_config`) gets its own harvest and the ladder's
    largest SAE. Under torchrun unsplit stages run on rank 0 first; the database's passes are sharded.
    Per-stage seconds go to RUN/demo_timings.json. A pretrained subject (`cfg.subject`) runs `_run_pretrained`."""
    from monosemantic.writers import hold

    with hold(layout.root):  # one writer per run (writers.py); reentrant, so the stages may take it too
        return (_run_pretrained if cfg.subject else _run_demo)(layout, cfg, opt, on_eval)


def _run_demo(layout: paths.RunLayout, cfg: RunConfig, opt: DemoOptions, on_eval: Callable[[dict], None]) -> DemoResult:
    from monosemantic import distributed
    from monosemantic.io import write_json

    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    timed = _timer(seconds, t0)
    once = opt.force and distributed.is_main()  # --force redoes a stage once, not once per rank
    p = opt.progress
    manifest = timed("corpus", lambda: distributed.main_first(lambda: corpus(layout, opt.inputs, cfg.corpus, once, p)))
    tokens = timed(
        "tokenize", lambda: distributed.main_first(lambda: tokenize(layout, cfg.tokenizer, cfg.tokens, once, p))
    )
    if opt.resume and not any(layout.checkpoints("").glob("*/ckpt.json")):
        raise UserError(f"--resume: no checkpoint in {layout.checkpoints('')}")
    acts = _model_and_saes(layout, cfg, opt, "A", cfg.lm, cfg.ladder, timed)
    # model A's table first, then what only the database needs
    evals = timed("evaluate A", lambda: distributed.main_first(lambda: evaluate(layout, "A", cfg.eval, once, p)))
    if distributed.is_main():
        on_eval(evals)
    if cfg.universality:  # paper §8.12: model B, A's settings with other seeds, and A's SAE recipe
        b = model_b_config(cfg)
        _model_and_saes(layout, b, opt, "B", b.lm, b.ladder, timed)
    if cfg.control:  # paper §8.9: A with shuffled weights, for automated interpretability's control
        _control(layout, cfg, opt, timed)
    database = timed("feature database", lambda: features(layout, cfg.features, once, p))
    seconds["total"] = round(time.perf_counter() - t0, 1)
    if distributed.is_main():
        write_json(layout.root / "demo_timings.json", {"version": 1, "seconds": seconds})
    return DemoResult(manifest, tokens, acts, evals, database, seconds)


def _run_pretrained(
    layout: paths.RunLayout, cfg: RunConfig, opt: DemoOptions, on_eval: Callable[[dict], None]
) -> DemoResult:
    """The demo on a pretrained subject (`cfg.subject`, e.g. smollm2): corpus → the model (fetched, converted once:
    transformer/pretrained.py) → its tokens → harvest at `cfg.harvest.hook` → ladder → eval through the whole model
    → database; no LM, model B or control. The stages read the model's folder (so `cfg.features.model` is set)."""
    from monosemantic import distributed
    from monosemantic.io import read_config, write_json
    from monosemantic.transformer.pretrained import pretrained_model
    from monosemantic.transformer.subject import hook_dirname, subject_key

    t0, seconds = time.perf_counter(), dict[str, float]()
    timed = _timer(seconds, t0)
    once, p, ctx_len = opt.force and distributed.is_main(), opt.progress, cfg.features.ctx_len
    manifest = timed("corpus", lambda: distributed.main_first(lambda: corpus(layout, opt.inputs, cfg.corpus, once, p)))
    fetch = lambda: pretrained_model(cfg.subject, progress=p)  # noqa: E731 (a name keeps the next line short)
    model = str(timed(f"model {cfg.subject}", lambda: distributed.main_first(fetch)))
    key, hook_dir = subject_key(layout, model), hook_dirname(cfg.harvest.hook)
    acts = timed("harvest", lambda: harvest(layout, model, cfg.harvest, opt.force, p, ctx_len, cfg.tokens))
    ckpt = (sae_checkpoints(layout, key, hook_dir), opt.checkpoint_every, opt.resume)
    source, out = layout.activations(key, hook_dir), layout.saes(key, hook_dir)
    extra = {"model": key, "hook": cfg.harvest.hook}
    timed("sae train", lambda: train_saes(source, out, cfg.ladder, cfg.sae, cfg.eval.device, opt.force, extra, ckpt))
    evals = timed(
        "evaluate", lambda: distributed.main_first(lambda: evaluate(layout, model, cfg.eval, once, p, ctx_len))
    )
    if distributed.is_main():
        on_eval(evals)
    feats = dataclasses.replace(cfg.features, model=model)
    database = timed("feature database", lambda: features(layout, feats, once, p))
    seconds["total"] = round(time.perf_counter() - t0, 1)
    if distributed.is_main():
        write_json(layout.root / "demo_timings.json", {"version": 1, "seconds": seconds})
    tokens = read_config(layout.root / f"tokens-{key}" / paths.CONFIG, "monosemantic.tokens")
    return DemoResult(manifest, tokens, acts, evals, database, seconds)


def _timer(seconds: dict[str, float], t0: float) -> Callable[[str, Callable[[], T]], T]:
    """`timed(stage, fn)`: runs `fn`, logs and records its seconds in `seconds`."""

    def timed(stage: str, fn: Callable[[], T]) -> T:
        log.info("demo: %s started", stage)
        start = time.perf_counter()
        out = fn()
        seconds[stage] = round(time.perf_counter() - start, 1)
        log.info("demo: %s took %.1f s (%.0f s so far)", stage, seconds[stage], time.perf_counter() - t0)
        return out

    return timed


def model_b_config(cfg: RunConfig) -> RunConfig:
    """Model B of the universality analysis (paper §1, §8.12): model A's settings with every seed + 1.

    The paper's twins differ in their initialisation and their dictionaries are trained on activations of
    different tokens. So B differs from A in its weight initialisation (LM `seed`), the order it reads its
    training windows (LM `data_seed`), the contexts and positions it harvests (harvest `seed`), its SAE's
    initialisation (ladder `init_seed`) and the SAE's read order and resampling draws (the recipe's `seed`,
    where it has one); every other setting is A's. Only the ladder's largest size is trained: the pair the
    paper compares (A/1 with B/1).
    """
    lm = dataclasses.replace(cfg.lm, seed=cfg.lm.seed + 1, data_seed=cfg.lm.order_seed + 1)
    harvest = dataclasses.replace(cfg.harvest, seed=cfg.harvest.seed + 1)
    ladder = dataclasses.replace(
        cfg.ladder, n_features=(max(cfg.ladder.n_features),), init_seed=cfg.ladder.init_seed + 1
    )
    sae = cfg.sae
    if "seed" in {f.name for f in dataclasses.fields(sae)}:
        sae = dataclasses.replace(sae, seed=sae.seed + 1)  # type: ignore[attr-defined]  # checked: it has `seed`
    return dataclasses.replace(cfg, lm=lm, harvest=harvest, ladder=ladder, sae=sae)


CONTROL = "A-shuffled"
"""The control model's name (transformer/shuffle.py names a shuffled copy of A so)."""


def _control(
    layout: paths.RunLayout, cfg: RunConfig, opt: DemoOptions, timed: Callable[[str, Callable[[], Any]], Any]
) -> None:
    """The paper's control (§8.9): model A with each weight matrix's entries shuffled, harvested as A was,
    and the ladder's largest SAE trained on it with A's recipe (the same rows, so the same steps).

    `features build` streams its dictionary beside A's (features/build.py `control_model`), and the
    explain step scores it by the same protocol, so the demo's last table puts them side by side.
    """
    from monosemantic import distributed
    from monosemantic.transformer.shuffle import write_shuffled

    once = opt.force and distributed.is_main()
    timed(
        f"shuffle {CONTROL}", lambda: distributed.main_first(lambda: write_shuffled(layout, "A", CONTROL, force=once))
    )
    largest = dataclasses.replace(cfg.ladder, n_features=(max(cfg.ladder.n_features),))  # the paper's A/1 size
    _harvest_and_train(layout, cfg, opt, CONTROL, largest, timed)


def _model_and_saes(
    layout: paths.RunLayout,
    cfg: RunConfig,
    opt: DemoOptions,
    model: str,
    lm: LMTrainConfig,
    ladder: LadderConfig,
    timed: Callable[[str, Callable[[], Any]], Any],
) -> dict[str, Any]:
    """Train subject model `model`, harvest it and train `ladder` on it; returns the harvest's config."""
    from monosemantic.transformer import train

    p = opt.progress
    timed(f"lm train {model}", lambda: train.run(layout, cfg.transformer, lm, model, force=opt.force, progress=p))
    return _harvest_and_train(layout, cfg, opt, model, ladder, timed)


def _harvest_and_train(
    layout: paths.RunLayout,
    cfg: RunConfig,
    opt: DemoOptions,
    model: str,
    ladder: LadderConfig,
    timed: Callable[[str, Callable[[], Any]], Any],
) -> dict[str, Any]:
    """Harvest the trained model `model` and train `ladder` on its activations; returns the harvest's config."""
    hook = cfg.harvest.hook
    acts = timed(f"harvest {model}", lambda: harvest(layout, model, cfg.harvest, opt.force, opt.progress))
    ckpt = (sae_checkpoints(layout, model, hook), opt.checkpoint_every, False)
    timed(
        f"sae train {model}",
        lambda: train_saes(
            layout.activations(model, hook),
            layout.saes(model, hook),
            ladder,
            cfg.sae,
            cfg.eval.device,
            opt.force,
            {"model": model, "hook": hook},
            ckpt,
        ),
    )
    return acts


def interp_summary(db_path: Path) -> str:
    """The case-study table and the interpretability and universality medians, from the database."""
    from monosemantic.analyses.autointerp import CLASSES_SUMMARY, format_interpretability
    from monosemantic.analyses.proxies import format_case_study
    from monosemantic.analyses.universality import format_universality
    from monosemantic.features import db

    conn = db.open_readonly(db_path)
    try:
        parts = []
        interp = format_interpretability
        for key, fmt in (
            ("case_study", format_case_study), ("interpretability", interp), (CLASSES_SUMMARY, interp),
            ("universality", format_universality),
        ):  # fmt: skip
            value = db.get_summary(conn, key)
            if value:
                parts.append(fmt(value))
        return "\n\n".join(["", *parts]) if parts else ""
    finally:
        conn.close()
