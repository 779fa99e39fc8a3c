"""Step schedules as pure functions of the 1-based step (paper.md §10.5; STYLE P4).

    λ(step)  = λ  · linear_warmup(step, n_steps, 0.05)       April 2024: λ from 0 over the first 5 %
    lr(step) = lr · linear_decay_tail(step, n_steps, 0.2)     April 2024: lr to 0 over the last 20 %
    lr(step) = lr · cosine_warmup(step, 1000, 0.1)            Gemma Scope: 0.1·lr to lr over 1,000 steps

Both round the fraction to whole steps; a fraction that rounds to 0 steps gives a constant 1.
"""

from __future__ import annotations

import math


def linear_warmup(step: int, n_steps: int, fraction: float) -> float:
    """Factor rising linearly from 0 to 1 over the first `fraction` of `n_steps`, then 1.

    With W = round(fraction · n_steps): `min(1, step / W)`, so step 1 gets 1/W and step W gets 1.
    """
    warmup = round(fraction * n_steps)
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


def linear_decay_tail(step: int, n_steps: int, fraction: float) -> float:
    """Factor 1 until the last `fraction` of `n_steps`, then falling linearly to 0 at `n_steps`.

    With D = round(fraction · n_steps): `clamp((n_steps − step) / D, 0, 1)`, so step n_steps − D
    gets 1, each later step D⁻¹ less, and the last step 0.
    """
    decay = round(fraction * n_steps)
    return 1.0 if decay <= 0 else min(1.0, max(0.0, (n_steps - step) / decay))


def cosine_warmup(step: int, warmup_steps: int, start: float) -> float:
    """Factor rising from `start` to 1 along half a cosine over the first `warmup_steps`, then 1.

    `start + (1 − start) · (1 − cos(π · step / W)) / 2` for step < W; 0 warm-up steps give a constant 1.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * (1.0 - math.cos(math.pi * step / warmup_steps)) / 2
