"""Byte-level BPE tokenizer: train on the corpus with Hugging Face `tokenizers`, or load one.

Byte-level, as the paper's tokenizer is for non-Latin text ([TM] appendix: Arabic `ث` is the
bytes `\\xd8` + `\\xab`), so every string round-trips, whatever its script. The ByteLevel
pre-tokenizer keeps digit runs together, so multi-digit numbers can merge as in the paper.

Saved as a plain `tokenizer.json` that `tokenizers.Tokenizer.from_file` and
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)` both read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from monosemantic import paths, provenance
from monosemantic.errors import UserError
from monosemantic.io import atomic_path, stage_dir, write_config

log = logging.getLogger(__name__)

KIND = "monosemantic.tokenizer"
EOT = "<|endoftext|>"
"""Separates documents in the token stream; always id 0."""

DEFAULT_VOCAB_SIZE = 8192
"""Not stated in the paper (paper.md §1 of the reference); 8k keeps the unembedding, which dominates
the one-layer model's compute, small enough for the 10-minute CPU budget. docs/decisions.md."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Replace lone surrogates (which cannot be UTF-8 encoded) with U+FFFD; other text is unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train a byte-level BPE with `vocab_size` entries (256 bytes + EOT + merges)."""
    if vocab_size < 258:
        raise UserError(f"--vocab-size {vocab_size}: must be at least 258 (256 bytes + EOT + 1 merge)")
    if vocab_size > 2**20:
        raise UserError(f"--vocab-size {vocab_size}: at most {2**20}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_cleaned(texts), trainer=trainer)
    if tok.token_to_id(EOT) != 0:
        raise AssertionError("EOT must be id 0")
    return tok


def _cleaned(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        yield clean_text(t)


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    with atomic_path(path) as tmp:
        tok.save(str(tmp))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `tokenizer.json`; it must define the EOT token used as document separator."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise UserError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
    if tok.token_to_id(EOT) is None:
        tok.add_special_tokens([EOT])
        log.warning("%s has no %s token; added it as id %d", path, EOT, tok.token_to_id(EOT))
    return tok


def eot_id(tok: Tokenizer) -> int:
    i = tok.token_to_id(EOT)
    assert i is not None
    return i


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(clean_text(text), add_special_tokens=False).ids


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokenizer: a byte-level BPE trained on the corpus, or an existing tokenizer.json."""

    vocab_size: int = DEFAULT_VOCAB_SIZE
    """BPE vocabulary size, EOT and the 256 byte tokens included (ignored with --tokenizer)."""
    tokenizer: str | None = None
    """Use this existing tokenizer.json instead of training one."""

    def __post_init__(self) -> None:
        if self.tokenizer is None and not 258 <= self.vocab_size <= 2**20:
            raise ValueError(f"vocab_size must be between 258 and {2**20}, got {self.vocab_size}")


def run(
    documents: Callable[[], Iterable[str]],
    out: Path,
    cfg: TokenizerConfig,
    force: bool = False,
    inputs: provenance.Inputs | None = None,
) -> Tokenizer:
    """The stage: train (or copy) the tokenizer into `out/tokenizer.json`; skipped if complete.

    `inputs` (what the documents come from) are recorded; a folder built from other inputs is redone.
    """
    ins = inputs or provenance.Inputs({})
    if provenance.reuse(out, ins, force):
        log.info("%s exists: skipping (use --force to retrain)", out)
        return load_tokenizer(out / paths.TOKENIZER_JSON)
    force = force or out.exists()
    if cfg.tokenizer is not None:
        tok, source = load_tokenizer(cfg.tokenizer), str(Path(cfg.tokenizer).resolve())
    else:
        t0 = time.perf_counter()
        tok, source = train_tokenizer(documents(), cfg.vocab_size), "trained"
        log.info("tokenizer: %d tokens trained in %.1f s", tok.get_vocab_size(), time.perf_counter() - t0)
    with stage_dir(out, force) as tmp:
        save_tokenizer(tok, tmp / paths.TOKENIZER_JSON)
        write_config(
            tmp / paths.CONFIG,
            KIND,
            {"vocab_size": tok.get_vocab_size(), "source": source, "eot": EOT, "eot_id": eot_id(tok)},
        )
        provenance.record(tmp, ins)
    return tok
