"""The user's corpus inputs, resolved into the files (and datasets) they name, in a fixed order.

    resolve(["notes/", "extra.jsonl", "data/**/*.txt", "hf:wikitext"])   # -> [Input, ...]

Resolving fails on a bad path before anything is read or written (data/corpus.py reads the
files). Folders are walked without following symlinks, and so is a `**` glob (`glob` itself
follows them: two self-linking folders make it recurse for hours).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monosemantic.errors import UserError

SUFFIXES = (".txt", ".jsonl", ".parquet")
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Input:
    kind: str  # "txt", "jsonl", "parquet" or "hf"
    target: str  # a file path, or the dataset name after "hf:"
    label: str  # default src of its documents


def resolve(inputs: Iterable[str]) -> list[Input]:
    """Expand folders and globs into the files (and datasets) they name, in a fixed order."""
    out: list[Input] = []
    for spec in inputs:
        if spec.startswith(HF_PREFIX):
            name = spec[len(HF_PREFIX) :].partition(":")[0]
            if not name:
                raise UserError(f"{spec}: give a dataset name or folder, as hf:NAME[:CONFIG]")
            label = Path(name).name if Path(name).is_dir() else name
            out.append(Input("hf", spec[len(HF_PREFIX) :], f"hf/{label}"))
        elif glob.has_magic(spec):
            matches = _glob(spec)
            found = [x for m in matches for x in _expand(Path(m), strict=False)]
            if not found:
                raise UserError(f"{spec}: no {'/'.join(SUFFIXES)} file or folder matches this pattern")
            out += found
        else:
            out += _expand(Path(spec), strict=True)
    # A file named twice (say by `data/**/*`, which matches a folder and the files in it) is read
    # once, under the first input that named it.
    seen: set[str] = set()
    unique = []
    for inp in out:
        key = inp.target if inp.kind == "hf" else str(Path(inp.target).resolve())
        if key not in seen:
            seen.add(key)
            unique.append(inp)
    return unique


def _glob(spec: str) -> list[str]:
    """`glob.glob(spec, recursive=True)`, sorted, except that `**` never enters a symlinked folder.

    `glob` follows symlinks, so a folder linking to itself (or two linking to each other) makes
    `dir/**/*.txt` recurse until paths hit the OS limit, for hours. Here `**` walks with
    `os.walk(followlinks=False)`; hidden names match only a pattern that starts with a dot, as in glob.
    """
    if "**" not in spec:
        return sorted(glob.glob(spec))  # no recursion, nothing to loop on
    parts = Path(spec).parts
    k = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    root, pattern = (Path(*parts[:k]) if k else Path(".")), parts[k:]
    # as glob: `dir/**` names `dir/` itself, a pattern starting with `**` does not name `.`
    found = [os.path.join(root, "")] if k and _match(pattern, ()) and root.is_dir() else []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root).parts
        real_dirs = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in [*real_dirs, *filenames]:
            if _match(pattern, (*rel, name)):
                found.append(os.path.normpath(os.path.join(dirpath, name)))
        dirnames[:] = [d for d in real_dirs if not d.startswith(".")]
    return sorted(found)


def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Does the relative path `parts` match the glob components `pattern` (`**`: any number of folders)?"""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(
            _match(rest, parts[i:]) for i in range(len(parts) + 1) if not any(p.startswith(".") for p in parts[:i])
        )
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])


def _expand(path: Path, strict: bool) -> list[Input]:
    if path.is_dir():
        files = []
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):  # hidden names are skipped
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
        files = sorted(p for p in files if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"{path}: folder holds no {', '.join(SUFFIXES)} files")
        return [Input(p.suffix[1:], str(p), f"user/{path.resolve().name}") for p in files]
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.suffix not in SUFFIXES:
        if strict:
            raise UserError(f"{path}: unsupported file type (use .txt, .jsonl, .parquet, a folder, a glob or hf:NAME)")
        return []
    return [Input(path.suffix[1:], str(path), f"user/{path.stem}")]
