"""Unigram and bigram baselines: what the transformer must beat to have learned anything.

Both are estimated from training tokens and scored on exactly the validation targets the
transformer is scored on (each target with its preceding token), in nats per token.
- unigram: add-one (Laplace) smoothed token frequencies;
- bigram: interpolated absolute discounting (d = 0.75, the Kneser-Ney discount), backing off to
  the unigram, so an unseen pair never gets probability zero.
"""

from __future__ import annotations

import numpy as np

DISCOUNT = 0.75


def unigram_logprobs(train: np.ndarray, vocab_size: int) -> np.ndarray:
    """log p(w), add-one smoothed. `train` int64 [n] -> float64 [vocab]."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    return np.log((counts + 1.0) / (counts.sum() + vocab_size))


def bigram_nll(
    train: np.ndarray, prev: np.ndarray, target: np.ndarray, vocab_size: int, discount: float = DISCOUNT
) -> float:
    """Mean -log p(target | prev) under interpolated absolute discounting.

    p(w | v) = max(c(v, w) - d, 0) / c(v) + d * N1+(v, .) / c(v) * p_uni(w), and p_uni(w) when c(v) = 0.
    """
    V = vocab_size
    p_uni = np.exp(unigram_logprobs(train, V))
    pair_keys, pair_counts = np.unique(train[:-1] * V + train[1:], return_counts=True)
    ctx_counts = np.bincount(train[:-1], minlength=V).astype(np.float64)
    ctx_types = np.bincount(pair_keys // V, minlength=V).astype(np.float64)  # N1+(v, .)

    keys = prev * V + target
    i = np.clip(np.searchsorted(pair_keys, keys), 0, len(pair_keys) - 1)
    c_vw = np.where(pair_keys[i] == keys, pair_counts[i], 0).astype(np.float64)
    c_v = ctx_counts[prev]
    seen = c_v > 0
    c_safe = np.where(seen, c_v, 1.0)
    p = np.where(
        seen,
        np.maximum(c_vw - discount, 0.0) / c_safe + discount * ctx_types[prev] / c_safe * p_uni[target],
        p_uni[target],
    )
    return float(-np.log(p).mean())


def baselines(train: np.ndarray, windows: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Unigram and bigram loss (nats/token) on the targets of `windows [n, ctx+1]`."""
    prev, target = windows[:, :-1].ravel(), windows[:, 1:].ravel()
    uni = float(-unigram_logprobs(train, vocab_size)[target].mean())
    return {"unigram_loss": uni, "bigram_loss": bigram_nll(train, prev, target, vocab_size)}
