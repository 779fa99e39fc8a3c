"""Pinned feature sampling (TM §4 "pinned feature sampling", reference §8.5).

Hold one feature at its maximum observed activation v (`features.max_act`) while sampling from the
model. The paper does not give the mechanics (reference §13); we use the additive shift the
reference calls natural, applied to the *true* MLP activation at every position:

    x ← x + (v − f_i(x)) · d_i

so the feature reads v (for the paper's SAE, whose f_i is linear in x along d_i only up to the
encoder, "reads v" means: its contribution to the reconstruction is v·d_i) while everything the
SAE does not explain stays. With the paper's prompt `1,2,3,4,5,6,7,8,9,10`, samples normally go on
counting; pinning the Arabic feature gives Arabic-looking text.

One-layer shortcut (`forward.py`): the MLP output at position p reaches only the logits at p, so
the next-token distribution after a sequence depends on the edit at its last position alone. Each
step therefore edits only the last position; that is the same as editing every position of the
prompt and the generated tokens (tests/interp/test_pinned.py checks it with the plain every-position
hook).

Sampling is reproducible and independent of batching: each feature gets its own uniform numbers
from a generator seeded by (seed, feature), and a token is drawn by inverse CDF. The unpinned
baseline uses the same numbers, so a difference between the two is the pin's doing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from monosemantic.interp import forward
from monosemantic.interp.loaded import Dictionary
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer


def uniforms(seed: int, feature: int, n_samples: int, n_new: int) -> Tensor:
    """`[n_samples, n_new]` uniform numbers in [0, 1) of one feature (feature −1: the baseline)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + feature + 1)
    return torch.rand(n_samples, n_new, generator=g, dtype=torch.float64)


def draw(logits: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Inverse-CDF sample: `logits [B, vocab]`, `u [B]` in [0, 1) → token ids `[B]`."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    return idx.clamp_(max=logits.shape[-1] - 1)


def pin_edit(dictionary: Dictionary, features: Tensor, values: Tensor, last_only: bool):
    """An edit for `forward.to_resid`: row b of the batch gets feature `features[b]` pinned at `values[b]`.

    `last_only` edits the last position (exact for our one-layer model, see the module docstring);
    otherwise every position (the plain version).
    """

    def edit(acts: Tensor) -> Tensor:  # [B, T, d]
        x = acts[:, -1:] if last_only else acts
        B, T, d = x.shape
        f = dictionary.encode(x.reshape(-1, d).float()).view(B, T, -1)
        f_i = f.gather(2, features.view(B, 1, 1).expand(B, T, 1))  # [B, T, 1]
        shift = (values.view(B, 1, 1) - f_i) * dictionary.W_dec[features].view(B, 1, d)
        if last_only:
            return torch.cat([acts[:, :-1], acts[:, -1:] + shift.to(acts.dtype)], dim=1)
        return acts + shift.to(acts.dtype)

    return edit


@torch.inference_mode()
def sample(
    model: Transformer,
    prompt: Tensor,
    u: Tensor,
    temperature: float = 1.0,
    edit=None,
    hook: str = hooks.MLP_POST,
) -> Tensor:
    """Sample `u.shape[1]` tokens after `prompt [P]` for each row of `u [B, n_new]`.

    Returns the generated ids `[B, n_new]`. `edit` (from `pin_edit`, or None for plain sampling)
    edits the activation at `hook` at every step. Contexts longer than the model's keep the last
    `ctx_len` tokens.
    """
    B, n_new = u.shape
    seq = prompt.view(1, -1).expand(B, -1)
    for s in range(n_new):
        window = seq[:, -model.cfg.ctx_len :]
        _, resid = forward.to_resid(model, window, hook, edit)
        logits = model.unembed(model.ln_f(resid[:, -1]))
        seq = torch.cat([seq, draw(logits, u[:, s], temperature)[:, None]], dim=1)
    return seq[:, prompt.numel() :]
