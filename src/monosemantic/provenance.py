"""Provenance between stages: each stage folder records the content hashes of the inputs it was built from.

    ins = provenance.inputs(out, [layout.corpus, layout.tokenizer])   # stale inputs are refused here
    if is_complete(out) and not force and provenance.fresh(out, ins):
        ...                                                            # skip: built from these very inputs
    with stage_dir(out, force=force or out.exists()) as tmp:
        ...
        provenance.record(tmp, ins)                                    # tmp/provenance.json

`provenance.json` maps each input, named by its path relative to the folder (so a run can be
moved), to a stamp:

- a stage folder's stamp is the sha256 of its top-level JSON files (names and bytes). Those carry
  the content hashes and measurements of what the stage wrote (the corpus's sha256, the model's
  losses, the SAE's final loss) and the folder's own `provenance.json`, so a stamp changes when
  anything upstream changes, without re-reading gigabytes of activations;
- a file's stamp (a user's text, an `.npy` of activations, a tokenizer) is the sha256 of its bytes,
  computed again only when its size or modification time changed since it was recorded;
- a Hugging Face model or dataset is recorded by name only (`external`): its content is not ours.

A stage whose recorded inputs differ from the current ones is rebuilt (`fresh` says so and logs
why); an input that is itself stale against its own inputs is refused, with the command that
rebuilds it (`inputs` raises). An input deleted since (activations, once the SAEs are trained)
leaves nothing to compare and counts as unchanged. Folders written before provenance was recorded
have no `provenance.json` and are trusted as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monosemantic import paths
from monosemantic.errors import UserError
from monosemantic.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

VERSION = 1
EXTERNAL = "external"
MISSING = "missing"


@dataclass(frozen=True)
class Inputs:
    """What a stage folder is built from: input name (path relative to the folder) -> stamp."""

    stamps: dict[str, str]
    files: dict[str, list[int]] = field(default_factory=dict)
    """Size and modification time (ns) of the file inputs, so a later check hashes only a changed file."""


def stage_stamp(folder: Path) -> str:
    """sha256 over a stage folder's top-level JSON files, by name; `missing` when it has none."""
    h = hashlib.sha256()
    names = sorted(p.name for p in folder.glob("*.json") if p.is_file())
    if not names:
        return MISSING
    for name in names:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()


def _name(out: Path, path: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out))


def _recorded(folder: Path) -> dict[str, Any] | None:
    path = folder / paths.PROVENANCE
    if not path.is_file():
        return None
    rec = read_json(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("inputs"), dict):
        raise UserError(f"{path}: not a provenance record (no inputs); rebuild {folder.name} with --force")
    return rec


def _stamp(path: Path, name: str, previous: dict[str, Any] | None) -> tuple[str, list[int] | None]:
    if path.is_dir():
        return stage_stamp(path), None
    if not path.is_file():
        return MISSING, None
    st = path.stat()
    meta = [st.st_size, st.st_mtime_ns]
    if previous and previous.get("files", {}).get(name) == meta and name in previous["inputs"]:
        return previous["inputs"][name], meta  # unchanged since recorded: no need to read it again
    try:
        return "sha256:" + sha256_file(path), meta
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def inputs(out: Path, folders: Iterable[Path], external: Iterable[str] = (), root: Path | None = None) -> Inputs:
    """The stamps of the inputs `out` is (or will be) built from: stage folders or files, and `external` names.

    Raises `UserError` when an input stage folder is itself stale against its own inputs, naming
    the command that rebuilds it (`root`, the run folder, makes that command exact).
    """
    out = Path(out)
    previous = _recorded(out) if out.is_dir() else None
    stamps: dict[str, str] = {}
    files: dict[str, list[int]] = {}
    for path in folders:
        path = Path(path)
        if path.is_dir():
            check(path, root)
        name = _name(out, path)
        stamps[name], meta = _stamp(path, name, previous)
        if meta is not None:
            files[name] = meta
    for name in external:
        stamps[name] = EXTERNAL
    return Inputs(dict(sorted(stamps.items())), dict(sorted(files.items())))


def record(folder: Path, ins: Inputs) -> None:
    """Write `folder/provenance.json` (a stage's temporary folder, before it is renamed into place)."""
    write_json(Path(folder) / paths.PROVENANCE, {"version": VERSION, "inputs": ins.stamps, "files": ins.files})


def changed(folder: Path, ins: Inputs) -> list[str] | None:
    """The inputs whose stamps differ from those `folder` recorded ([] when none; None without a record)."""
    rec = _recorded(Path(folder))
    if rec is None:
        return None
    old, new = rec["inputs"], ins.stamps
    # an input deleted since (activations, once the SAEs are trained) leaves nothing to compare: not a change
    return sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and not (k in old and new.get(k) == MISSING)
    )


def fresh(folder: Path, ins: Inputs) -> bool:
    """True when `folder` was built from exactly `ins` (or predates provenance); logs what changed otherwise."""
    diff = changed(folder, ins)
    if diff is None:
        log.debug("%s: built before provenance was recorded; reused as is", folder)
        return True
    if diff:
        log.warning("%s: built from other inputs than now (%s changed): rebuilding it", folder, ", ".join(diff))
    return not diff


def reuse(out: Path, ins: Inputs, force: bool = False, marker: str = paths.CONFIG) -> bool:
    """True when the stage folder `out` is complete (has `marker`), not forced, and built from `ins`: skip it."""
    return (Path(out) / marker).is_file() and not force and fresh(out, ins)


def check(folder: Path, root: Path | None = None) -> None:
    """Refuse `folder` (an input about to be read) when its own recorded inputs changed since it was built."""
    folder = Path(folder)
    rec = _recorded(folder)
    if rec is None:
        return
    for name, old in rec["inputs"].items():
        if old == EXTERNAL:
            continue
        path = Path(os.path.normpath(folder / name))
        if _stamp(path, name, rec)[0] not in (old, MISSING):  # a deleted input is no change (`changed`)
            raise UserError(f"{folder}: built from an older {path}; rebuild it first: {rebuild_command(folder, root)}")


_COMMANDS = {
    "corpus": "corpus build",
    "tokenizer": "tokenize",
    "tokens": "tokenize",
    "transformer": "lm train --model {model}",
    "activations": "harvest --model {model}",
    "sae": "sae train --model {model}",
    "eval": "sae eval --model {model}",
    "features": "features build",
}


def run_root(folder: Path) -> Path | None:
    """The run folder holding the stage folder `folder` (`RUN` for `RUN/sae/A/hook/tm2023-64`), if it is one."""
    folder = Path(os.path.abspath(folder))
    for up in folder.parents:
        if folder.relative_to(up).parts[0] in _COMMANDS:
            return up
    return None


def rebuild_command(folder: Path, root: Path | None = None) -> str:
    """The command that rebuilds a run's stage folder, e.g. `monosemantic tokenize --run runs/x`."""
    root = root if root is not None else run_root(folder)
    if root is not None:
        parts = Path(os.path.abspath(folder)).relative_to(os.path.abspath(root)).parts
        if parts and parts[0] in _COMMANDS:
            command = _COMMANDS[parts[0]].format(model=parts[1] if len(parts) > 1 else "A")
            return f"`monosemantic {command} --run {root}`"
    return f"the command that wrote {folder}, again"
