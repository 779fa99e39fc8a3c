"""Shared fixtures for the eval tests: one CPU thread, a tiny transformer, random windows, tiny SAEs.

The seed comes from the autouse fixture in tests/conftest.py. Everything is built in-process and is
tiny, so one thread is faster than two on the shared 2-core machine (see tests/sae/conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from monosemantic.sae.model import SAEConfig, SparseAutoencoder
from monosemantic.transformer.model import Transformer, TransformerConfig

TINY_MODEL = TransformerConfig(vocab_size=50, d_model=16, d_mlp=32, n_heads=2, ctx_len=8)


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one thread (tests/conftest.py `one_thread`)."""


def tiny_model(std: float = 0.3) -> Transformer:
    """The tiny transformer with weights large enough that the MLP matters (GPT-2 init barely uses it)."""
    model = Transformer(TINY_MODEL)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
            elif "b_" in name or name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def random_windows(n: int = 12, vocab: int = TINY_MODEL.vocab_size, ctx: int = TINY_MODEL.ctx_len) -> torch.Tensor:
    """`[n, ctx+1]` int64 token windows."""
    return torch.randint(0, vocab, (n, ctx + 1))


def tiny_sae(n_features: int = 64, d_in: int = TINY_MODEL.d_mlp) -> SparseAutoencoder:
    return SparseAutoencoder(SAEConfig(d_in=d_in, n_features=n_features))


@pytest.fixture
def model() -> Transformer:
    return tiny_model()


@pytest.fixture
def windows() -> torch.Tensor:
    return random_windows()
