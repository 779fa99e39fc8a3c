"""Read activations back as shuffled float32 batches, the SAE trainer's input (STYLE P6).

    acts = open_activations("runs/demo/activations/A/blocks.0.mlp.hook_post")
    for x in acts.batches(4096, seed=0):      # x: float32 [4096, d]
        ...

`open_activations` takes a harvested folder (format in harvest.py) or any plain `(N, d)` float
array in a `.npy` or `.safetensors` file, so an SAE can be trained on anything; all three give
the same `.d`, `.n_rows` and `.batches(...)`.

Read order. [TM] samples "without replacement" (paper.md §2), so one pass of `batches` yields every
row exactly once. The rows are cut into blocks of contiguous rows (at most 8 MB, read in one go
from a memmap); a pass visits the blocks in a seeded random order, loads a window of blocks
(512 MB by default) into a buffer in a random row order, and cuts the buffer into batches. A
batch therefore mixes rows from many places in the data, memory stays bounded by one window,
and the same seed gives the same order. Harvested shards are already shuffled within each
shard, so the blocks of a store are random samples of several hundred contexts each.

Bad data. Opening reads only headers (shape and dtype), which costs nothing for a 10 GB store.
Every value is checked for NaN/inf as it is read, one block at a time, so a pass stops at the
first bad block with a `UserError` naming the file and rows; checking at open would read the
whole dataset twice. The harvest refuses to write non-finite rows, so a store only fails this
check after damage on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from monosemantic import paths
from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import read_config

# The harvested folder's format (written by harvest.py, documented there).
KIND = "monosemantic.activations"
ACTS_FILE = "acts_{:04d}.npy"
ROWS_FILE = "rows_{:04d}.npy"
ROW_DTYPE = np.dtype([("doc", "<i8"), ("pos", "<i4"), ("token", "<i4"), ("ctx_pos", "<i4")])
SAFETENSORS_NAMES = ("activations", "acts")  # the tensor taken from a file that holds several

BLOCK_BYTES = 8 << 20  # contiguous rows read at once
BUFFER_BYTES = 512 << 20  # one shuffle window, in float32
MIN_BLOCKS_PER_WINDOW = 16  # so a small window still mixes rows from many places


class _NpyFile:
    """A 2-D float array in a `.npy` file, memmapped."""

    def __init__(self, path: Path, what: str = "file"):
        if not path.is_file():
            raise UserError(f"{path}: {what} not found")
        try:
            self.array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError, SyntaxError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not a readable .npy array ({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(self.array, np.ndarray):
            raise UserError(f"{path}: not a single .npy array")
        _check_shape(path, tuple(self.array.shape), self.array.dtype.kind == "f", str(self.array.dtype))
        self.path, (self.n_rows, self.d) = path, self.array.shape

    def read(self, lo: int, hi: int) -> np.ndarray:
        return np.asarray(self.array[lo:hi], dtype=np.float32)  # a view of the memmap when it is float32


class _SafetensorsFile:
    """One 2-D float tensor of a `.safetensors` file, read by slices."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        if not path.is_file():
            raise UserError(f"{path}: file not found")
        try:
            handle = safe_open(str(path), framework="pt")
            names = list(handle.keys())
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise UserError(f"{path}: not a readable safetensors file ({e})") from None
        picked = [n for n in SAFETENSORS_NAMES if n in names]
        if len(names) == 1:
            name = names[0]
        elif picked:
            name = picked[0]
        else:
            raise UserError(
                f"{path}: {len(names)} tensors ({', '.join(names) or 'none'}); save one tensor or name it "
                + " or ".join(repr(n) for n in SAFETENSORS_NAMES)
            )
        self.slice = handle.get_slice(name)
        self._handle = handle  # keeps the file open while slices are read
        shape, dtype = tuple(self.slice.get_shape()), self.slice.get_dtype()
        _check_shape(path, shape, dtype in ("F16", "BF16", "F32", "F64"), f"{dtype} tensor {name!r}")
        self.path, (self.n_rows, self.d) = path, shape

    def read(self, lo: int, hi: int) -> np.ndarray:
        return self.slice[lo:hi].float().numpy()


def _check_shape(path: Path, shape: tuple[int, ...], is_float: bool, dtype: str) -> None:
    if len(shape) != 2:
        raise UserError(f"{path}: expected a 2-D (rows, d) array of activations, got shape {shape}")
    if not is_float:
        raise UserError(f"{path}: expected float activations, got {dtype}")
    if shape[0] == 0 or shape[1] == 0:
        raise UserError(f"{path}: the array is empty (shape {shape})")


class ActivationSource:
    """Rows of activation vectors, in one or more files, read as shuffled float32 batches."""

    def __init__(self, files: list[_NpyFile] | list[_SafetensorsFile], path: Path):
        self.files, self.path = files, path
        self.d = int(files[0].d)
        self.n_rows = int(sum(f.n_rows for f in files))

    def check_sample(self, n_rows: int = 8192, seed: int = 0) -> None:
        """Read about `n_rows` rows (the first and last block, and random blocks) and raise a UserError on
        NaN/inf, so bad data stops a command before its work starts; a full pass still checks every block."""
        rng = np.random.default_rng(seed)
        block = max(1, min(1024, n_rows // 8))
        for f in self.files:
            starts = {0, max(0, f.n_rows - block)} | set(rng.integers(0, f.n_rows, size=6).tolist())
            for lo in sorted(starts):
                hi = min(lo + block, f.n_rows)
                if not np.isfinite(f.read(lo, hi)).all():
                    raise UserError(f"{f.path}: NaN or inf in rows {lo}..{hi - 1}")

    def batches(
        self,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        skip_rows: int = 0,
        buffer_rows: int | None = None,
    ) -> Iterator[Tensor]:
        """One pass over the rows, each exactly once, as float32 `[batch_size, d]` tensors.

        Args:
            batch_size: rows per batch; the last batch may be smaller unless `drop_last`.
            seed: the read order; the same seed gives the same batches (use a new seed per pass).
            shuffle: False reads the rows in file order.
            skip_rows: start this many rows into the pass (resuming), without reading them.
            buffer_rows: rows in one shuffle window (default: 512 MB of float32).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= skip_rows <= self.n_rows:
            raise ValueError(f"skip_rows must be in [0, {self.n_rows}], got {skip_rows}")
        if buffer_rows is not None and buffer_rows <= 0:
            raise ValueError(f"buffer_rows must be positive, got {buffer_rows}")
        window = buffer_rows or max(1, BUFFER_BYTES // (4 * self.d))
        return self._pass(batch_size, seed, shuffle, drop_last, skip_rows, window)

    def _pass(
        self, batch_size: int, seed: int, shuffle: bool, drop_last: bool, skip_rows: int, window: int
    ) -> Iterator[Tensor]:
        carry: np.ndarray | None = None  # rows of a batch that spans two windows
        space = np.empty((0, self.d), dtype=np.float32)  # the window buffer, reused (batches are copies)
        for w, blocks in enumerate(self._windows(window, seed, shuffle)):
            n = sum(hi - lo for _, lo, hi in blocks)
            if skip_rows >= n:
                skip_rows -= n
                continue
            rng = np.random.default_rng([seed, w]) if shuffle else None
            if len(space) < n:
                space = np.empty((n, self.d), dtype=np.float32)
            buf = self._load(blocks, rng, space[:n])[skip_rows:]
            skip_rows, start = 0, 0
            if carry is not None:  # finish the batch the previous window started
                start = min(batch_size - len(carry), len(buf))
                carry = np.concatenate([carry, buf[:start]])
                if len(carry) < batch_size:
                    continue
                yield torch.from_numpy(carry)
                carry = None
            stop = start + (len(buf) - start) // batch_size * batch_size
            for i in range(start, stop, batch_size):
                yield torch.from_numpy(buf[i : i + batch_size].copy())  # a copy, so no batch pins the window
            carry = buf[stop:].copy() if stop < len(buf) else None
        if carry is not None and not drop_last:
            yield torch.from_numpy(carry)

    def _windows(self, window: int, seed: int, shuffle: bool) -> Iterator[list[tuple[int, int, int]]]:
        """Blocks `(file, lo, hi)` in read order, grouped into windows of at most `window` rows."""
        block = max(1, min(BLOCK_BYTES // (4 * self.d), window // MIN_BLOCKS_PER_WINDOW))
        sizes = [file.n_rows for file in self.files]
        blocks = [(f, lo, min(lo + block, n)) for f, n in enumerate(sizes) for lo in range(0, n, block)]
        if shuffle:
            blocks = [blocks[j] for j in np.random.default_rng(seed).permutation(len(blocks))]
        group: list[tuple[int, int, int]] = []
        rows = 0
        for b in blocks:
            if group and rows + b[2] - b[1] > window:
                yield group
                group, rows = [], 0
            group.append(b)
            rows += b[2] - b[1]
        if group:
            yield group

    def _load(self, blocks: list[tuple[int, int, int]], rng: np.random.Generator | None, buf: np.ndarray) -> np.ndarray:
        """Fill `buf` (float32 [rows, d]) with the blocks' rows, in a random order when `rng` is given."""
        dest = rng.permutation(len(buf)) if rng is not None else None
        at = 0
        for f, lo, hi in blocks:
            x = self.files[f].read(lo, hi)
            if not np.isfinite(x).all():
                raise UserError(f"{self.files[f].path}: NaN or inf in rows {lo}..{hi - 1}")
            if dest is None:
                buf[at : at + hi - lo] = x
            else:
                buf[dest[at : at + hi - lo]] = x
            at += hi - lo
        return buf


class ActivationStore(ActivationSource):
    """A harvested folder (harvest.py): its shards as one source, plus the row index and config."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: activations folder not found")
        self.folder = folder
        self.config: dict[str, Any] = read_config(folder / paths.CONFIG, KIND)
        try:
            shards = [(str(s["acts"]), str(s["rows"]), int(s["n_rows"])) for s in self.config["shards"]]
            d, dtype, n_rows = int(self.config["d"]), np.dtype(self.config["dtype"]), int(self.config["n_rows"])
            self.hook = str(self.config["hook"])
        except CONFIG_VALUE_ERRORS as e:
            raise UserError(f"{folder / paths.CONFIG}: corrupt activations config ({type(e).__name__}: {e})") from None
        if not shards or sum(n for _, _, n in shards) != n_rows:
            raise UserError(f"{folder / paths.CONFIG}: corrupt activations config (shard rows do not add up to n_rows)")
        files = []
        for acts, rows, n in shards:
            f = _NpyFile(folder / acts, what="shard")
            if f.array.shape != (n, d) or f.array.dtype != dtype:
                raise UserError(
                    f"{f.path}: shard is {f.array.dtype} {f.array.shape}, config.json says {dtype} {(n, d)}"
                )
            if not (folder / rows).is_file():
                raise UserError(f"{folder / rows}: shard index not found")
            files.append(f)
        self._row_files = [folder / rows for _, rows, _ in shards]
        super().__init__(files, folder)

    @property
    def n_shards(self) -> int:
        return len(self.files)

    def rows(self, shard: int | None = None) -> np.ndarray:
        """ROW_DTYPE `[rows]`: (doc, pos, token, ctx_pos) of each row, for one shard or all.

        With no `shard`, the shards' indexes are concatenated in file order, so entry i describes
        row i of `acts_0000.npy`, `acts_0001.npy`, ... read one after the other (`shuffle=False`).
        """
        parts = []
        for i in range(self.n_shards) if shard is None else [shard]:
            path, n = self._row_files[i], self.files[i].n_rows
            try:
                r = np.load(path)
            except (ValueError, OSError, EOFError) as e:
                raise UserError(f"{path}: not a readable .npy array ({e})") from None
            if r.dtype != ROW_DTYPE or r.shape != (n,):
                raise UserError(f"{path}: expected {n} rows of {ROW_DTYPE}, got {r.dtype} {r.shape}")
            parts.append(r)
        return np.concatenate(parts)


def open_activations(path: str | Path) -> ActivationSource:
    """A harvested folder, or a `(N, d)` float array in a `.npy` or `.safetensors` file.

    A `.safetensors` file holding several tensors must name the activations "activations" or
    "acts". Float16, bfloat16 and float64 data are read as float32.
    """
    path = Path(path)
    if path.is_dir():
        return ActivationStore(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.suffix == ".npy":
        return ActivationSource([_NpyFile(path)], path)
    if path.suffix == ".safetensors":
        return ActivationSource([_SafetensorsFile(path)], path)
    raise UserError(f"{path}: expected a harvested activations folder, a .npy or a .safetensors file")
