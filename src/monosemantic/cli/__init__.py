"""The `monosemantic` command: one subcommand per stage, plus `demo` (the whole pipeline).

The CLI is the only package that wires stages together, one file per command noun (corpus, lm,
harvest, sae, features, browser, demo): each parses flags, builds the `RunConfig` once from the
preset plus overrides (common.py), and calls a function of `monosemantic.pipeline` or a stage.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import sys

from monosemantic import __version__
from monosemantic.cli import browser, corpus, demo, features, harvest, lm, sae
from monosemantic.errors import UserError

log = logging.getLogger("monosemantic")

DESCRIPTION = """\
Dictionary learning on a language model's MLP activations, after "Towards Monosemanticity"
(Bricken et al., 2023). Each stage writes a self-describing folder in a run directory; a stage
whose folder is complete is skipped, so re-running a command resumes it (--force redoes it).

pipeline:  corpus build -> tokenize -> lm train -> harvest -> sae train -> sae eval -> features build -> serve
quick start:  monosemantic demo                  (embedded corpus, with model B; see docs/results.md for the time)
              monosemantic demo --preset full    (the same pipeline on more data, with model B: about 47 min)
              monosemantic demo --preset tiny --input my_texts/   (seconds)
"""


def _parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="monosemantic", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root.add_argument("--version", action="version", version=f"monosemantic {__version__}")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (demo, corpus, lm, harvest, sae, features, browser):
        command.add_parsers(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    from monosemantic import distributed

    if distributed.launched_by_torchrun():
        # A torchrun rank leaves without the interpreter's teardown: after a clean destroy of the
        # process group, gloo's C++ threads still aborted one rank at exit now and then
        # ("terminate called without an active exception", no Python frame left), which failed a
        # finished run. Every artifact is closed by now (atomic writes), so nothing is lost.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
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
