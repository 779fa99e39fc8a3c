"""Token shards: the corpus as memmapped token ids, split into train and validation by document.

On disk (`runs/<name>/tokens/`):

    config.json        kind monosemantic.tokens: dtype, vocab size, split sizes, source names, and
                       `content_categories`: each split's tokens per content category
                       (categories.py: Arabic script, Hebrew, base64, DNA, ...) and their share
    train_000.bin ...  raw token ids (uint16, or uint32 for vocabularies over 65,536), each
                       document stored as [EOT, ids...]; documents never straddle shards
    train_docs.npy     one row per document: (shard, start, length, src), start at its EOT
    val_000.bin, val_docs.npy   the same for the held-out documents

The split is by document (a seeded hash of the document's index), so no validation text is ever
seen in training. A token's content category is that of the characters it covers (its offsets),
so the shares are measured on the tokens the model sees, for any corpus and tokenizer; tokens
folders written before `content_categories` existed load as before (`category_shares` is None).

Batches for the LM are random windows of the concatenated stream, as usual for GPT-style
training; `windows` gives the fixed, non-overlapping windows used for validation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from monosemantic import paths, provenance
from monosemantic.data import categories
from monosemantic.data.tokenizer import clean_text, eot_id
from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import read_config, save_npy, stage_dir, write_config

log = logging.getLogger(__name__)

KIND = "monosemantic.tokens"
SPLITS = ("train", "val")
DOC_DTYPE = np.dtype([("shard", "<u4"), ("start", "<u8"), ("length", "<u4"), ("src", "<u2")])


@dataclass(frozen=True)
class TokensConfig:
    """How the corpus becomes token shards: the held-out split and the shard size."""

    val_fraction: float = 0.1
    """Fraction of documents held out (by a seeded hash of the index): validation loss, and the
    held-out text later stages build the feature database from (about 1.6M tokens by default)."""
    seed: int = 0
    """Seed of the train/validation split."""
    shard_tokens: int = 1 << 27
    """Most tokens per shard file (128M tokens = 256 MB of uint16)."""
    encode_batch: int = 512
    """Documents handed to the (multi-threaded) tokenizer at once."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.shard_tokens < 1024:
            raise ValueError(f"shard_tokens must be at least 1024, got {self.shard_tokens}")


def is_val(doc_index: int, cfg: TokensConfig) -> bool:
    h = hashlib.blake2b(f"{cfg.seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < cfg.val_fraction


class _ShardWriter:
    """Appends documents to `<split>_NNN.bin` files, starting a new shard when one is full."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shard, self.pos, self.n_tokens = -1, shard_tokens, 0
        self.docs: list[tuple[int, int, int, int]] = []
        self.file: BinaryIO | None = None

    def add(self, ids: np.ndarray, src: int) -> None:
        if self.pos + len(ids) > self.shard_tokens and self.pos > 0:
            self._next_shard()
        self.docs.append((self.shard, self.pos, len(ids), src))
        assert self.file is not None  # opened by the first `_next_shard` (pos starts full)
        ids.astype(self.dtype).tofile(self.file)
        self.pos += len(ids)
        self.n_tokens += len(ids)

    def _next_shard(self) -> None:
        if self.file:
            self.file.close()
        self.shard, self.pos = self.shard + 1, 0
        # Held open across `add` calls; closed in `_next_shard` and `close`.
        self.file = open(self.folder / f"{self.split}_{self.shard:03d}.bin", "wb")  # noqa: SIM115

    def close(self) -> np.ndarray:
        if self.file:
            self.file.close()
        docs = np.array(self.docs, dtype=DOC_DTYPE)
        save_npy(self.folder / f"{self.split}_docs.npy", docs)
        return docs


def write_tokens(
    documents: Iterator[tuple[str, str]],
    tok: Tokenizer,
    out: Path,
    cfg: TokensConfig = TokensConfig(),
    force: bool = False,
    progress: bool = True,
    total_docs: int | None = None,
    eot: int | None = None,
    inputs: provenance.Inputs | None = None,
) -> dict:
    """Tokenize `(src, text)` documents into train/val shards under `out`; returns the config.

    `eot` is the id put before each document (default: the tokenizer's `<|endoftext|>`; a Hugging
    Face model's tokenizer passes its EOS). `inputs` (the corpus and tokenizer) are recorded.
    """
    vocab = tok.get_vocab_size()
    dtype = np.dtype("<u2") if vocab <= 1 << 16 else np.dtype("<u4")
    eot = eot_id(tok) if eot is None else eot
    srcs: dict[str, int] = {}
    counts = {s: np.zeros(categories.N_CODES, dtype=np.int64) for s in SPLITS}  # tokens per category code
    with stage_dir(out, force) as tmp:
        writers = {s: _ShardWriter(tmp, s, dtype, cfg.shard_tokens) for s in SPLITS}
        bar = tqdm(total=total_docs, desc="tokenize", unit="doc", disable=not progress)
        index = 0
        for chunk in _batched(documents, cfg.encode_batch):
            texts = [clean_text(t) for _, t in chunk]
            encodings = tok.encode_batch(texts, add_special_tokens=False)
            for (src, _), text, enc in zip(chunk, texts, encodings, strict=True):
                ids = np.empty(len(enc.ids) + 1, dtype=np.int64)
                ids[0], ids[1:] = eot, enc.ids
                split = "val" if is_val(index, cfg) else "train"
                writers[split].add(ids, srcs.setdefault(src, len(srcs)))
                # Each token's content category; the EOT counts as none, so shares are of all the split's
                # tokens. Most documents have no category character, and skip the offsets (~15M tuples).
                codes = categories.char_codes(text)
                if codes.any():
                    counts[split] += categories.count_codes(categories.token_codes(codes, enc.offsets))
                index += 1
            bar.update(len(chunk))
        bar.close()
        docs = {s: w.close() for s, w in writers.items()}
        if index == 0:
            raise UserError("no documents to tokenize: the corpus is empty")
        for s in SPLITS:
            if len(docs[s]) == 0:
                raise UserError(
                    f"the {s} split is empty: {index} documents are too few for val_fraction {cfg.val_fraction}"
                )
        body: dict[str, Any] = {
            "dtype": dtype.name,
            "vocab_size": vocab,
            "eot_id": eot,
            "sources": list(srcs),
            "splits": {
                s: {"n_docs": len(docs[s]), "n_tokens": writers[s].n_tokens, "n_shards": writers[s].shard + 1}
                for s in SPLITS
            },
            "content_categories": _content_categories(counts, {s: writers[s].n_tokens for s in SPLITS}),
            "config": cfg.__dict__,
        }
        write_config(tmp / paths.CONFIG, KIND, body)
        provenance.record(tmp, inputs or provenance.Inputs({}))
    log.info(
        "tokens: %s train, %s val", f"{body['splits']['train']['n_tokens']:,}", f"{body['splits']['val']['n_tokens']:,}"
    )
    shares = body["content_categories"]["share_tokens"]
    log.info("token categories, share of train/val tokens: %s", categories.format_shares([shares[s] for s in SPLITS]))
    return body


def _content_categories(counts: dict[str, np.ndarray], n_tokens: dict[str, int]) -> dict[str, Any]:
    """Each split's tokens per content category (categories.py) and their share of the split's tokens."""
    return {
        "tokens": {s: {c: int(counts[s][categories.code(c)]) for c in categories.CATEGORIES} for s in SPLITS},
        "share_tokens": {s: categories.shares(counts[s], n_tokens[s]) for s in SPLITS},
    }


def _batched(it: Iterator[tuple[str, str]], n: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class TokenSplit:
    """One split's shards as a single logical token stream (memmapped, never loaded whole)."""

    def __init__(self, folder: Path, split: str, dtype: str, n_shards: int):
        self.shards = [np.memmap(folder / f"{split}_{i:03d}.bin", dtype=dtype, mode="r") for i in range(n_shards)]
        self.docs: np.ndarray = np.load(folder / f"{split}_docs.npy")
        self.shard_sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.n_tokens = int(self.shard_sizes.sum())

    def sample_windows(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        """`n` random windows of `length` tokens, each inside one shard. Returns int64 [n, length]."""
        # Pick shards in proportion to size, then a start inside the shard.
        usable = np.maximum(self.shard_sizes - length, 0)
        if usable.sum() == 0:
            raise UserError(f"the token stream ({self.n_tokens} tokens) is shorter than a window ({length})")
        shard = rng.choice(len(self.shards), size=n, p=usable / usable.sum())
        starts = (rng.random(n) * usable[shard]).astype(np.int64)
        out = np.empty((n, length), dtype=np.int64)
        for i, (s, b) in enumerate(zip(shard, starts, strict=True)):
            out[i] = self.shards[s][b : b + length]
        return out

    def windows(self, length: int, max_tokens: int | None = None) -> np.ndarray:
        """Non-overlapping windows of `length` tokens from the start of each shard, in order.

        Consecutive windows share one token (the last of one is the first of the next), so each
        token after the very first is a prediction target exactly once. int64 [n, length].
        """
        rows: list[np.ndarray] = []
        budget = max_tokens if max_tokens is not None else self.n_tokens
        for shard in self.shards:
            for b in range(0, len(shard) - length + 1, length - 1):
                if budget < length - 1:
                    break
                rows.append(np.asarray(shard[b : b + length], dtype=np.int64))
                budget -= length - 1
        if not rows:
            raise UserError(f"the validation split is shorter than one window of {length} tokens")
        return np.stack(rows)

    def all_tokens(self, max_tokens: int | None = None) -> np.ndarray:
        """The first `max_tokens` of the stream as one int64 array (for n-gram counting)."""
        parts, left = [], max_tokens if max_tokens is not None else self.n_tokens
        for shard in self.shards:
            take = min(left, len(shard))
            parts.append(np.asarray(shard[:take], dtype=np.int64))
            left -= take
            if left == 0:
                break
        return np.concatenate(parts)


def _check_docs(path: Path, split: TokenSplit) -> None:
    """The document index must match its shards: right dtype, every document inside a shard."""
    d = split.docs
    if d.dtype != DOC_DTYPE or d.ndim != 1 or len(d) == 0:
        raise UserError(f"{path}: expected a non-empty document index of {DOC_DTYPE}, got {d.dtype} {d.shape}")
    shard = d["shard"].astype(np.int64)
    if shard.max() >= len(split.shards):
        raise UserError(f"{path}: documents in shard {int(shard.max())}, but there are {len(split.shards)} shards")
    if np.any(d["start"].astype(np.int64) + d["length"] > split.shard_sizes[shard]):
        raise UserError(f"{path}: documents run past the end of their shard (truncated .bin file?)")


class TokenStore:
    """Read side of a tokens folder: `TokenStore(dir).train`, `.val`, `.config`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"{self.folder}: tokens folder not found")
        self.config = read_config(self.folder / paths.CONFIG, KIND)
        where = self.folder / paths.CONFIG
        try:
            dtype, vocab = str(self.config["dtype"]), int(self.config["vocab_size"])
            n_shards = {s: int(self.config["splits"][s]["n_shards"]) for s in SPLITS}
        except CONFIG_VALUE_ERRORS as e:
            raise UserError(f"{where}: corrupt tokens config ({type(e).__name__}: {e})") from None
        if dtype not in ("uint16", "uint32") or vocab <= 0 or min(n_shards.values()) < 1:
            raise UserError(f"{where}: corrupt tokens config (dtype {dtype!r}, vocab {vocab}, shards {n_shards})")
        try:
            self.train, self.val = (TokenSplit(self.folder, s, dtype, n_shards[s]) for s in SPLITS)
        except (OSError, EOFError, ValueError, KeyError) as e:  # missing, empty, truncated, not .npy
            raise UserError(f"{self.folder}: incomplete or corrupt token shards ({e})") from None
        for s, split in (("train", self.train), ("val", self.val)):
            _check_docs(self.folder / f"{s}_docs.npy", split)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def sources(self) -> list[str]:
        return list(self.config["sources"])

    @property
    def category_shares(self) -> dict[str, dict[str, float]] | None:
        """`{split: {category: share of its tokens}}` (categories.py), or None for a tokens folder
        written before the tokenize stage measured them."""
        measured = self.config.get("content_categories")
        return None if measured is None else measured["share_tokens"]
