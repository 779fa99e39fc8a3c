"""What every writer shares: one writer per folder, temporary names and their cleanup, and fsync.

    with hold(Path("runs/default")):     # a second writer of this run gets a one-line error naming our PID
        ...                              # (temporaries that no live process holds are removed first)

One writer per folder. A writing command holds an advisory lock (`fcntl.flock`) on
`FOLDER/.monosemantic.lock`, a file holding the holder's PID, for as long as it writes: the run
folder for a stage command or the demo, `--out` for `sae train --activations`, and for an export
or import, whose OUT is swapped in whole and so cannot hold its own lock, the run OUT lies in or
else the folder holding OUT (`hold_output`). A second writer fails at once with a `UserError`
naming that PID. Readers (`serve`, `export-html` of the run it reads) take no lock: they read
stage folders that appear whole (io.py). The lock is reentrant within a process, so the
demo holds it across its stages, and the kernel drops it when the process dies, SIGKILL included.
The file is removed on release (a waiter that opened it just before checks that the file it
locked is still the one at that path, and retries otherwise), so a run holds no lock file at rest.

Temporaries. Every temporary file or folder is named `.<final name>.<8 random chars>.tmp` (or
`.old` for a replaced stage folder on its way out) beside its final name, and its writer holds a
`flock` on it until it is renamed or removed. `sweep` removes the ones nobody holds: what a killed
process left. It runs when a writer takes a folder's lock, and beside a stage folder or an export
before it is built.

Durability. `fsync_file` and `fsync_tree` flush a temporary's bytes before its rename, and
`fsync_dir` the folder holding the new name after it, so after a power loss a name points to whole
data or to the previous version.

Nothing here imports torch: the browser's static export uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from monosemantic.errors import UserError
from monosemantic.paths import run_around

log = logging.getLogger(__name__)

LOCK_NAME = ".monosemantic.lock"
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)$")
"""`tempfile.mkstemp/mkdtemp(prefix=".<name>.", suffix=".tmp")`: the names every writer here uses."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) files; artifacts get the usual permissions instead.
FILE_MODE, DIR_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()

_held: dict[str, list[int]] = {}  # realpath of a locked folder -> [lock fd, depth]
_mutex = threading.Lock()


def _rank_other_than_zero() -> bool:
    """Under torchrun, rank 0 holds the lock for the group (the other ranks follow it by barriers).

    Read from the environment torchrun sets, so this module stays free of torch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0"


@contextlib.contextmanager
def hold(folder: str | os.PathLike[str], sweep_temporaries: bool = True) -> Iterator[None]:
    """Hold `folder`'s writer lock (created with the folder if missing) for the block.

    Raises `UserError` naming the holder's PID when another live process holds it. On the first
    acquisition in this process, temporaries under `folder` that no live process holds are removed.
    """
    folder = Path(folder)
    if _rank_other_than_zero():
        yield
        return
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    with _mutex:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        try:
            fd = _acquire(folder)
        except UserError:
            _remove_empty(created)
            raise
        with _mutex:
            _held[key] = [fd, 1]
        if sweep_temporaries:
            sweep(folder)
    try:
        yield
    finally:
        with _mutex:
            entry = _held[key]
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / LOCK_NAME)  # while still holding it: see the module docstring
            os.close(entry[0])
            _remove_empty(created)  # a command that failed before writing leaves no empty run folder


@contextlib.contextmanager
def hold_output(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the writer lock for `out`, a folder (or file) an export, an import or an analysis writes outside
    the run's own stages: the lock of the run it lies in (`paths.run_around`), else of the folder holding it.

    The folder holding OUT is not swept (it may be any folder of yours): `building` removes OUT's own
    temporaries beside it."""
    where = Path(os.path.abspath(out))
    run = run_around(where)
    with hold(run) if run is not None else hold(where.parent, sweep_temporaries=False):
        yield


def _remove_empty(folders: list[Path]) -> None:
    """rmdir each of `folders` (deepest first) while it is empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def _acquire(folder: Path) -> int:
    path = folder / LOCK_NAME
    for _ in range(50):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise UserError(
                f"{folder}: another monosemantic process (PID {pid}) is writing here; wait for it or stop it"
            ) from None
        try:
            st = os.stat(path, follow_symlinks=False)
            same = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous holder removed the file we locked: lock the one there now
    raise UserError(f"{path}: could not take the writer lock")


def _holder(fd: int) -> str:
    """The PID written in a held lock file (the holder writes it right after locking)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def lock_temporary(path: str | os.PathLike[str]) -> int:
    """Open and `flock` a temporary file or folder just made by this process; returns the fd to close later."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: nobody else can hold it
    return fd


def _unheld(path: Path) -> bool:
    """True when no live process holds `path` (a temporary), so it is left over from a dead one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # gone meanwhile, or a symlink: not ours
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def sweep(folder: str | os.PathLike[str], prefix: str = "", recursive: bool = True) -> list[Path]:
    """Remove the temporaries (`TEMP_NAME`, starting with `prefix`) under `folder` that no live process holds.

    Never follows a symlink. Returns what it removed.
    """
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*dirnames, *filenames]:
            if not (name.startswith(prefix) and TEMP_NAME.match(name)):
                continue
            path = Path(dirpath) / name
            if not _unheld(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            log.info("removed %s, left by an interrupted process", path)
            removed.append(path)
        dirnames[:] = [d for d in dirnames if not TEMP_NAME.match(d)] if recursive else []
    return removed


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; on success swap it in for `final` (replacing it).

    Temporaries of `final` that no live process holds are removed first. The new folder's files
    are fsynced before the rename and the parent folder after it; an existing `final` is moved
    aside (`.old`, held) and deleted only once the new one is in place. On failure the temporary
    is removed and `final` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep(final.parent, prefix=f".{final.name}.", recursive=False)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    held = [lock_temporary(tmp)]
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        fsync_tree(tmp)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            held.append(lock_temporary(trash))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
            fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for fd in held:
            os.close(fd)


@contextlib.contextmanager
def temporary_folder(parent: Path, name: str) -> Iterator[Path]:
    """A scratch folder `parent/.<name>.<random>.tmp`, held while in use and removed after (a killed
    process's one is swept later, as every temporary here)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    held = lock_temporary(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(held)


EXPORT_MARKER = ".monosemantic-export"
"""In every folder an export or import writes outside a run: `--force` replaces only a folder holding it."""


def mark_export(folder: Path, kind: str) -> None:
    """Write the export marker into `folder` (the temporary folder, before it is renamed into place)."""
    (folder / EXPORT_MARKER).write_text(json.dumps({"kind": f"monosemantic.{kind}", "version": 1}) + "\n")


def check_output(out: Path, reads: Sequence[Path], force: bool) -> None:
    """Refuse, with a one-line `UserError`, an OUT that an export or import must not write or replace.

    Never `.`, never a file or a symlink, never one of `reads` (what the command reads: a run, an SAE
    folder), a folder holding one of them or a folder inside one. An existing OUT needs `force`, and
    even then must be empty or hold `EXPORT_MARKER`: `--force` never deletes what this tool did not write.
    """
    where = Path(os.path.abspath(out))
    if where.is_symlink():
        raise UserError(f"{out}: is a symbolic link; give the output folder itself (a link is never replaced)")
    if where.exists() and not where.is_dir():
        raise UserError(f"{out}: is a file, not an output folder; remove it or pick another OUT")
    real = where.resolve()
    if real == Path.cwd().resolve():
        raise UserError(f"{out}: is the current folder; give a new folder, or an earlier export to replace")
    for source in reads:
        src = Path(source).resolve()
        if real == src or real in src.parents:
            raise UserError(f"{out}: holds {source}, which this command reads; pick a folder outside it")
        if src.is_dir() and src in real.parents:
            raise UserError(f"{out}: lies inside {source}, which this command reads; pick a folder outside it")
    if not where.exists():
        return
    if not force:
        raise UserError(f"{out}: exists; use --force to replace it")
    marker = where / EXPORT_MARKER
    if any(where.iterdir()) and not (marker.is_file() and not marker.is_symlink()):
        raise UserError(
            f"{out}: not an earlier export (no {EXPORT_MARKER}); --force replaces only an empty folder or one "
            "this tool exported"
        )


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it, a new file): what makes a rename survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file and folder under `folder` (a stage folder about to be renamed into place)."""
    for dirpath, _dirnames, filenames in os.walk(folder, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(dirpath)
