"""Atomic artifact I/O: every file appears whole or not at all (STYLE P9).

Writers put bytes in a temporary file beside the target, fsync it, `os.replace` it into place and
fsync the folder, so neither a crash nor a power loss leaves a file that a later stage would trust.
A whole stage folder is built under a hidden temporary name by `stage_dir` and renamed into place
when the stage succeeds: a stage folder that exists is complete by construction. Each temporary is
held (`writers.lock_temporary`) while it is written, so the ones a killed process left are told
apart from live ones and removed (`writers.sweep`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from monosemantic.errors import UserError
from monosemantic.writers import FILE_MODE, building, fsync_dir, fsync_file, lock_temporary

SCHEMA_VERSION = 1


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_error(path: str | os.PathLike[str], e: OSError) -> UserError:
    """A write that failed for lack of space (or quota) as a one-line UserError naming `path`."""
    return UserError(f"{path}: write failed, {e.strerror or 'no space left on device'}; earlier artifacts are intact")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path`, else delete it.

    A full disk (ENOSPC, or a quota) while writing is a `UserError` naming `path`; the temporary
    file is removed and whatever `path` held before is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise disk_error(path, e) if e.errno in NO_SPACE else e from None
    os.close(fd)
    held = lock_temporary(tmp)  # a sweep by another process leaves it alone while we write
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise disk_error(path, e) from None
        raise
    finally:
        os.close(held)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def write_config(path: str | os.PathLike[str], kind: str, body: dict[str, Any]) -> None:
    """A versioned `config.json`: `{"kind", "schema_version", ...body}`."""
    write_json(path, {"kind": kind, "schema_version": SCHEMA_VERSION, **body})


def read_config(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Read a `config.json` written by `write_config`, checking its kind and version."""
    cfg = read_json(path)
    if not isinstance(cfg, dict) or cfg.get("kind") != kind:
        found = cfg.get("kind") if isinstance(cfg, dict) else None
        raise UserError(f"{path}: not a {kind} config (kind={found})")
    version = cfg.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version {version} unsupported (this release reads {SCHEMA_VERSION})")
    return cfg


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or bad headers
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


@contextlib.contextmanager
def stage_dir(final: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Build a stage's folder under a temporary name and rename it to `final` on success.

    An existing `final` is replaced only after the new folder is complete (with `force`);
    without `force` an existing folder is an error, since callers check `is_complete` first.
    Temporaries of `final` that a killed process left are removed first, and every file of the
    new folder is fsynced before the rename (`writers.building`).
    """
    final = Path(final)
    if final.exists() and not force:
        raise UserError(f"{final}: already exists (use --force to redo this stage)")
    try:
        with building(final) as tmp:
            try:
                yield tmp
            except UserError as e:
                if str(tmp) in str(e):  # name the stage folder, not its temporary twin
                    raise UserError(str(e).replace(str(tmp), str(final))) from None
                raise
    except OSError as e:
        if e.errno in NO_SPACE:
            raise disk_error(getattr(e, "filename", None) or final, e) from None
        raise


def is_complete(folder: str | os.PathLike[str], marker: str = "config.json") -> bool:
    """A stage folder is complete when it exists with its marker file (see `stage_dir`)."""
    return (Path(folder) / marker).is_file()
