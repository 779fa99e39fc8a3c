"""Process-wide choices made in one place: seeds, device, dtype, logging (STYLE P10, P12)."""

from __future__ import annotations

import logging
import os
import random
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch

from monosemantic.errors import UserError

log = logging.getLogger("monosemantic")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Compute dtypes, by the name every stage's `--dtype` takes. bfloat16 always means autocast:
weights, optimizer state and accumulations stay float32, the matrix products run in bfloat16."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) with one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes CUDA, then MPS, then CPU; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return dev


def pick_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"--dtype {name}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def check_dtype(name: str, auto: bool = False) -> None:
    """For a config's `__post_init__`: a ValueError unless `name` is a compute dtype (DTYPES), or, with
    `auto`, the name `resolve_dtype` turns into one."""
    if name in DTYPES or (auto and name == "auto"):
        return
    raise ValueError(f"dtype must be {'auto, ' if auto else ''}float32 or bfloat16, got {name!r}")


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bfloat16 natively: a CUDA device with bf16, or a CPU with AVX-512 BF16 or
    AMX (Linux's /proc/cpuinfo; oneDNN's own check also accepts plain AVX-512). Elsewhere bfloat16 is
    emulated: the LM step ran 15-26 s instead of about 0.5 s in float32 on an AVX2-only CPU (2026-12-07)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device | str) -> str:
    """A compute dtype, with `auto` → bfloat16 where `device` has it natively (`native_bf16`), else float32."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16(device) else "float32"


SUBJECT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The subject model's weight dtypes, by the name `--subject-dtype` takes. Unlike `--dtype` (autocast, float32
weights), the subject's weights themselves are cast: half the memory, and the whole forward in that precision.
The SAEs keep their own dtype; activations cross over as float32."""


def check_subject_dtype(name: str) -> None:
    """For a config's `__post_init__`: a ValueError unless `name` is a subject dtype (SUBJECT_DTYPES)."""
    if name not in SUBJECT_DTYPES:
        raise ValueError(f"subject_dtype must be one of {', '.join(SUBJECT_DTYPES)}, got {name!r}")


def autocast(device: torch.device | str, dtype: str) -> AbstractContextManager:
    """The compute precision of a forward (and its backward), for every stage alike: bfloat16 autocast
    on `device`'s type, or a no-op for float32. Autocast keeps float32 weights and runs the matrix
    products in bfloat16 (2-4x faster on GPUs and on CPUs with AVX-512 BF16 / AMX)."""
    d = pick_dtype(dtype)
    return torch.autocast(torch.device(device).type, dtype=d, enabled=d != torch.float32)


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s")
    log.setLevel(level)


def tune_allocator() -> bool:
    """Keep freed memory for reuse instead of returning it to the OS (glibc only).

    PyTorch's CPU tensors of more than 32 MB (the LM's logits, an SAE's [batch, n_features]
    activations) are each a fresh mmap under glibc's defaults, so every step pays page faults to
    zero new pages and munmap to give them back. With mmap off and trimming off, freed blocks stay
    in the heap and the next step reuses them: measured 1.4x faster LM training in float32 and 1.9x
    in bfloat16 on the 2-core machine (benchmarks/lm_throughput.py, docs/benchmarks.md). The cost is
    that the process keeps its peak memory until it exits. Returns whether the settings took.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("MONOSEMANTIC_DEFAULT_MALLOC"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    return all(
        mallopt(param, value) == 1
        for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 256 << 20))
    )
