"""`monosemantic features build` (the feature database) and the analyses run alone on a finished one.

    monosemantic features build        --run R      the database: statistics, examples, logit weights, analyses
    monosemantic features ablate       --run R      ablations on top contexts; pinned samples
    monosemantic features split        --run R      feature splitting across the ladder; automata links
    monosemantic features map          --run R      UMAP of decoder directions with clusters
    monosemantic features proxies      --run R      case studies: proxies vs features and neurons
    monosemantic features universality --run R      model A's features matched in model B
    monosemantic features explain      --run R      automated interpretability (offline or --explainer llm)
    monosemantic features export R OUT --format neuronpedia   the database as a Neuronpedia dataset export

Wiring only: flags come from each config dataclass; the stage and the analyses do the work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from monosemantic import paths, pipeline
from monosemantic.cli.args import add_dataclass_args, build
from monosemantic.cli.common import add_common
from monosemantic.errors import UserError
from monosemantic.features import db  # stdlib only
from monosemantic.writers import hold, hold_output


def add_parsers(sub: Any) -> None:
    from monosemantic.analyses.ablation import AblationConfig
    from monosemantic.analyses.autointerp import AutoInterpConfig
    from monosemantic.analyses.featuremap import MapConfig
    from monosemantic.analyses.llm import LLMConfig
    from monosemantic.analyses.proxies import ProxyConfig
    from monosemantic.analyses.splitting import SplitConfig
    from monosemantic.analyses.universality import UniversalityConfig
    from monosemantic.features.config import FeaturesConfig
    from monosemantic.features.neuronpedia import NeuronpediaConfig

    features = sub.add_parser("features", help="feature database stage").add_subparsers(dest="action", required=True)
    fb = features.add_parser(
        "build",
        help="build the feature database (SQLite) of a run's SAEs and neurons",
        description="Stream held-out tokens (the validation split) through model MODEL and every SAE under "
        "RUN/sae/MODEL/HOOK (or --saes), plus the model's neurons, and write RUN/features/features.sqlite: per "
        "feature its density, mean and max activation, a log-spaced activation histogram, the top activating "
        "examples, samples from each activation interval and random samples (each with the activations over a "
        "window of tokens), the activation share per corpus source, and logit weights (paper.md §8.3, §9). "
        "Two passes over the tokens; memory does not grow with --n-tokens. The run's control model "
        "MODEL-shuffled (`lm shuffle`, then `harvest` and `sae train` with --model A-shuffled; paper §8.9), when "
        "it has SAEs, gets the same passes and its dictionaries are written beside. Skipped when complete unless "
        "--force. "
        "MODEL may be a Hugging Face causal LM (folder, .gguf, hf:NAME) with --hook MODULE.PATH[:input|:output], "
        "as for harvest and sae train; the analyses that need the run's own model are then skipped. Under "
        "torchrun the passes are sharded across the processes and rank 0 writes the database.",
    )
    fb.add_argument(
        "--run", "--run-dir", dest="run", type=Path, required=True, help="run directory (with tokens/, sae/, ...)"
    )
    fb.add_argument("--force", action="store_true", help="rebuild even if the database is complete")
    fb.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    fb.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_dataclass_args(fb, FeaturesConfig)
    fb.set_defaults(func=cmd_features_build)
    specs = [
        (
            "ablate",
            AblationConfig,
            cmd_ablate,
            "ablate each feature on its top contexts; pinned samples",
            "For every feature with top examples: subtract its contribution f·d from the true MLP activation on "
            "every token of each context, finish the forward, and store the change in log-likelihood of each "
            "window token (examples.ablation_json), the mean loss change and the most promoted / suppressed next "
            "tokens (ablations). Then sample continuations of --prompt with the feature pinned at its max "
            "activation (pinned). Neurons too (ablation zeroes them). [TM] appendix 'Feature Ablations', §4.",
        ),
        (
            "split",
            SplitConfig,
            cmd_split,
            "feature splitting across the SAE ladder; automata links",
            "Match the features of each pair of consecutive SAE sizes (and smallest to largest) by the paper's "
            "masked activation cosine on held-out tokens, links above --threshold, with the decoder cosine "
            "beside (splits). Then, for every feature, the features whose top tokens its logit effect raises "
            "most (logit_links, the paper's 'finite state automata'). [TM] 'Feature Splitting', footnote 32.",
        ),
        (
            "map",
            MapConfig,
            cmd_map,
            "UMAP of decoder directions with HDBSCAN clusters",
            "Co-embed the decoder directions of the chosen SAEs with a 2-D UMAP (cosine, n_neighbors 15, "
            "min_dist 0.05: features.umap_x/umap_y) and cluster them with HDBSCAN (min_cluster_size 3) on a "
            "10-D UMAP (features.cluster, clusters with labels). [TM] appendix 'Feature UMAPs'.",
        ),
    ]
    for name, cls, func, help_, description in specs:
        p = features.add_parser(name, help=help_, description=description)
        add_common(p)
        p.add_argument(
            "--db", type=Path, default=None, help="the feature database (default RUN/features/features.sqlite)"
        )
        add_dataclass_args(p, cls)
        p.set_defaults(func=func, config_class=cls)

    px = features.add_parser(
        "proxies",
        help="case studies: each proxy's best feature and neuron (paper.md §8.1–§8.2)",
        description="Score held-out tokens with each proxy (a log-likelihood ratio, TM appendix 'Feature "
        "Proxies': Arabic, Hebrew, base64, DNA, Cyrillic, CJK, HTML, hex, and --proxy ones), correlate with "
        "every feature of the model's SAEs and every neuron, and store the best of each with the specificity "
        "and sensitivity plots' data, over all tokens and without the synthetic/ sources.",
    )
    add_common(px)
    add_dataclass_args(px, ProxyConfig, skip=("custom",))
    px.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="NAME=regex:PATTERN|NAME=py:module:function",
        help="a proxy of your own (repeatable): a regular expression over the decoded text, or a function "
        "taking a context's token strings and returning one LLR per token",
    )
    px.set_defaults(func=cmd_proxies)

    un = features.add_parser(
        "universality",
        help="match model A's features in model B (paper.md §8.11–§8.13)",
        description="For each feature of each SAE of --model, the most activation-correlated feature of the "
        "same-named SAE of --other over the same held-out tokens, and the same for the neurons; stores "
        "matches and the median (the paper: 0.72 features, 0.46 neurons). Model B: `lm train --model B "
        "--seed 1`, `harvest --model B`, `sae train --model B` with A's settings.",
    )
    add_common(un)
    add_dataclass_args(un, UniversalityConfig)
    un.set_defaults(func=cmd_universality)

    ex = features.add_parser(
        "explain",
        help="automated interpretability: explain every live feature and neuron, score a sample (paper.md §8)",
        description="Split each live feature's stored examples by context; explain the feature from the top "
        "and interval examples of one side (every live feature gets an explanation), and score a seeded sample "
        "of --max-features per dictionary by how well a simulator predicts the activations of windows the "
        "explainer never saw: the other side's examples, random held-out tokens (zeros included) and the "
        "feature's top tokens in other contexts, the last two from a forward of the run's model. Score: "
        "Spearman ρ (the headline), with Pearson r and an importance-weighted ρ in the summary; also the share "
        "of single-token features and the medians without them. Every model in the database is scored, so the "
        "control (A-shuffled, paper §8.9) appears beside A when the build streamed it. Offline by default "
        "(token statistics, no language model); --explainer llm uses an OpenAI-compatible endpoint "
        "(--llm-base-url, --llm-model, key in $OPENAI_API_KEY or --llm-api-key-env), cached in "
        "RUN/features/llm_cache.",
    )
    add_common(ex)
    add_dataclass_args(ex, AutoInterpConfig)
    add_dataclass_args(ex, LLMConfig, prefix="llm")
    ex.set_defaults(func=cmd_explain)

    xp = features.add_parser(
        "export",
        help="write the feature database in another tool's format (Neuronpedia)",
        description="--format neuronpedia: write OUT/<model id>/<source id>/ for every SAE dictionary of the "
        "database, in the layout of Neuronpedia's public dataset exports (release, model, source set and source "
        "records; features, activations and explanations as batch-<i>.jsonl.gz), which a Neuronpedia instance "
        "imports (its admin import route reads that layout, e.g. synced into its dataset bucket). docs/formats.md "
        "lists every field.",
    )
    xp.add_argument("run", type=Path, metavar="RUN", help="run directory (or its features/features.sqlite's run)")
    xp.add_argument("out", type=Path, metavar="OUT")
    xp.add_argument("--format", choices=["neuronpedia"], default="neuronpedia")
    xp.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_dataclass_args(xp, NeuronpediaConfig, prefix="np")
    xp.set_defaults(func=cmd_export)


def _open(path: Path) -> sqlite3.Connection:
    try:
        return db.open_for_update(path)
    except db.DatabaseError as e:
        raise UserError(str(e)) from None


def cmd_features_build(args: argparse.Namespace) -> None:
    from monosemantic import distributed
    from monosemantic.features.config import FeaturesConfig

    # the dataclass defaults, not a preset's: the database stage is often run alone on another run's SAEs
    cfg = build(FeaturesConfig, {}, args)
    with hold(args.run):
        path = pipeline.features(paths.RunLayout(args.run), cfg, args.force, args.progress)
    if not distributed.is_main():
        return  # under torchrun rank 0 writes the database (and may still be writing it)
    conn = db.open_readonly(path)
    try:
        models = [r[0] for r in conn.execute("SELECT model FROM dictionaries ORDER BY id")]  # A, and A-shuffled
        for model, (name, kind, n, alive, n_tokens) in zip(models, db.dictionary_counts(conn), strict=True):
            print(f"{model:<12} {name:<16} {kind:<8} {n:>6,} features, {alive:>6,} active on {n_tokens:,} tokens")
    finally:
        conn.close()
    print(path)


def _run(args: argparse.Namespace, run: Any) -> None:
    from monosemantic.transformer.subject import is_run_model

    cfg = build(args.config_class, {}, args)
    layout = paths.RunLayout(args.run)
    if is_run_model(layout, cfg.model) and not (layout.transformer(cfg.model) / paths.CONFIG).is_file():
        raise UserError(f"{layout.transformer(cfg.model)}: no model here; is --run {args.run} a run directory?")
    with hold(args.run), hold_output(args.db) if args.db else contextlib.nullcontext():  # --db outside the run too
        conn = _open(args.db or layout.features_db)
        try:
            print(json.dumps(run(conn, layout, cfg, progress=args.progress), indent=2))
        finally:
            conn.close()


def cmd_ablate(args: argparse.Namespace) -> None:
    from monosemantic.analyses.ablation import AblationConfig, run_ablation
    from monosemantic.analyses.ablation_deep import run_deep_ablation
    from monosemantic.transformer.subject import is_run_model

    model = build(AblationConfig, {}, args).model
    deep = not is_run_model(paths.RunLayout(args.run), model)  # a Hugging Face subject (a path, hf:NAME)
    _run(args, run_deep_ablation if deep else run_ablation)


def cmd_split(args: argparse.Namespace) -> None:
    from monosemantic.analyses.splitting import run_split

    _run(args, run_split)


def cmd_map(args: argparse.Namespace) -> None:
    from monosemantic.analyses.featuremap import run_map

    _run(args, run_map)


def cmd_proxies(args: argparse.Namespace) -> None:
    from monosemantic.analyses.proxies import ProxyConfig, format_case_study, run_proxies

    layout = paths.RunLayout(args.run)
    cfg = dataclasses.replace(build(ProxyConfig, {}, args), custom=tuple(args.proxy))
    with hold(args.run):
        conn = _open(layout.features_db)
        print(format_case_study(run_proxies(conn, layout, cfg, progress=args.progress)))


def cmd_universality(args: argparse.Namespace) -> None:
    from monosemantic.analyses.universality import UniversalityConfig, format_universality, run_universality

    layout = paths.RunLayout(args.run)
    with hold(args.run):
        conn = _open(layout.features_db)
        print(format_universality(run_universality(conn, layout, build(UniversalityConfig, {}, args), args.progress)))


def cmd_explain(args: argparse.Namespace) -> None:
    from monosemantic.analyses.autointerp import AutoInterpConfig, format_interpretability, run_autointerp
    from monosemantic.analyses.llm import LLMConfig
    from monosemantic.features import db

    layout = paths.RunLayout(args.run)
    cfg, llm = build(AutoInterpConfig, {}, args), build(LLMConfig, {}, args, prefix="llm")
    with hold(args.run):
        conn = _open(layout.features_db)
        summary = run_autointerp(conn, layout, cfg, progress=args.progress, llm=llm)
        db.finalize(conn)  # explanations are searchable text: rebuild the full-text index
    print(format_interpretability(summary))


def cmd_export(args: argparse.Namespace) -> None:
    from monosemantic.features.neuronpedia import NeuronpediaConfig, export_neuronpedia

    cfg = build(NeuronpediaConfig, {}, args, prefix="np")
    with hold_output(args.out):
        folders = export_neuronpedia(paths.RunLayout(args.run), args.out, cfg, force=args.force)
    for folder in folders:
        print(folder)
