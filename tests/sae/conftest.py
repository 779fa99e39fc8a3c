"""Shared fixtures for the SAE tests: one CPU thread and config builders (STYLE P11).

The seed comes from the autouse fixture in tests/conftest.py.

The SAEs here are tiny (d_in ≤ 32), so a second thread only adds synchronisation; on a shared,
busy 2-core machine OpenMP spin-waits made a 1-second test take 30 seconds. We therefore run these
tests on one thread and restore the previous setting afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from monosemantic.sae import SAEConfig, SAETrainConfig


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread (tests/conftest.py `one_thread`)."""


@pytest.fixture
def tiny_sae_cfg() -> Callable[..., SAEConfig]:
    """`tiny_sae_cfg(n_features=64)`: an 8 → 16 SAE unless overridden."""

    def build(**overrides: Any) -> SAEConfig:
        return SAEConfig(**{"d_in": 8, "n_features": 16, **overrides})

    return build


@pytest.fixture
def tiny_train_cfg() -> Callable[..., SAETrainConfig]:
    """`tiny_train_cfg(l1_coeff=0.1)`: 40 steps of 32 inputs, paper schedule scaled, unless overridden."""

    def build(**overrides: Any) -> SAETrainConfig:
        base = {
            "l1_coeff": 0.01,
            "lr": 1e-3,
            "batch_size": 32,
            "n_steps": 40,
            "b_dec_init_n_inputs": 64,
            "resample_n_batches": 4,
            "log_every": 10,
        }
        return SAETrainConfig(**{**base, **overrides})

    return build
