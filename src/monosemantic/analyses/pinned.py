"""Pinned feature sampling (paper.md §8.5 "pinned feature sampling", paper.md §8.5).

Hold one feature at its maximum observed activation v (`features.max_act`) while sampling from the
model. The paper does not give the mechanics (paper.md §13); we use the additive shift the
reference calls natural, applied to the *true* MLP activation at every position:

    x ← x + (v − f_i(x)) · d_i

so the feature reads v (for the paper's SAE, whose f_i is linear in x along d_i only up to the
encoder, "reads v" means: its contribution to the reconstruction is v·d_i) while everything the
SAE does not explain stays. With the paper's prompt `1,2,3,4,5,6,7,8,9,10`, samples normally go on
counting; pinning the Arabic feature gives Arabic-looking text.

One-layer shortcut (`forward.py`): the MLP output at position p reaches only the logits at p, so
the next-token distribution after a sequence depends on the edit at its last position alone. Each
step therefore edits only the last position; that is the same as editing every position of the
prompt and the generated tokens (tests/analyses/test_ablation.py checks it with the plain every-position
hook).

For the same reason keys and values can be cached: attention reads the residual stream before the
MLP, so an edit at the MLP never reaches them, and each new token needs a forward over itself alone
(`sample`; with `cache=False` it re-runs the whole window at every step, the reference it is
checked against in tests/analyses/test_ablation.py). Other hooks, other models and windows longer than
the context take the plain path.

Sampling is reproducible and independent of batching: each feature gets its own uniform numbers
from a generator seeded by (seed, feature), and a token is drawn by inverse CDF. The unpinned
baseline uses the same numbers, so a difference between the two is the pin's doing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.analyses import forward
from monosemantic.analyses.loader import Dictionary
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
    cache: bool = True,
) -> Tensor:
    """Sample `u.shape[1]` tokens after `prompt [P]` for each row of `u [B, n_new]`.

    Returns the generated ids `[B, n_new]`. `edit` (from `pin_edit`, or None for plain sampling)
    edits the activation at `hook` at every step. Contexts longer than the model's keep the last
    `ctx_len` tokens. With `cache`, where that is exact (module docstring), each new token runs
    alone against cached keys and values; otherwise the whole window runs again at every step
    (the reference the cached path is tested against).
    """
    B, n_new = u.shape
    exact = hook in _AFTER_ATTENTION and len(model.blocks) == 1 and prompt.numel() + n_new <= model.cfg.ctx_len
    step = _KVCache(model, hook, edit) if cache and exact else _rerun_window(model, hook, edit)
    new = prompt.view(1, -1).expand(B, -1)
    out = []
    for s in range(n_new):
        resid = step(new)  # [B, d_model]: the residual stream after the block at the newest position
        new = draw(model.unembed(model.ln_f(resid)), u[:, s], temperature)[:, None]
        out.append(new)
    return torch.cat(out, dim=1)


_AFTER_ATTENTION = (hooks.MLP_PRE, hooks.MLP_POST)
"""Hooks whose edits never reach the attention's keys and values (the MLP's own activations)."""


def _rerun_window(model: Transformer, hook: str, edit) -> Callable[[Tensor], Tensor]:
    """A step that appends the new tokens and runs the whole window (the last `ctx_len` tokens) again."""
    seq: Tensor | None = None

    def step(new: Tensor) -> Tensor:
        nonlocal seq
        seq = new if seq is None else torch.cat([seq, new], dim=1)
        return forward.to_resid(model, seq[:, -model.cfg.ctx_len :], hook, edit)[1][:, -1]

    return step


class _KVCache:
    """A step of the one block's forward over the new tokens only, with the keys and values so far."""

    def __init__(self, model: Transformer, hook: str, edit):
        self.model, self.block, self.hook, self.edit = model, model.block(0), hook, edit
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __call__(self, tokens: Tensor) -> Tensor:
        """Append `tokens [B, t]` (the prompt, then one token at a time); returns the residual stream
        after the block at the last of them. The edit sees the hook's activation of the new positions
        only (`pin_edit` edits the last)."""
        m, blk, attn = self.model, self.block, self.block.attn
        B, t = tokens.shape
        start = 0 if self.k is None else self.k.shape[2]
        if start and t > 1:
            raise ValueError("after the prompt, extend by one token at a time")
        x = m.W_E(tokens) + m.W_pos(torch.arange(start, start + t, device=tokens.device))
        nh, hs, D = attn.cfg.n_heads, attn.cfg.d_head, attn.cfg.d_model
        q, k, v = (z.view(B, t, nh, hs).transpose(1, 2) for z in attn.qkv(blk.ln1(x)).split(D, dim=2))
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        # the new queries see every cached position and, causally, each other
        y = F.scaled_dot_product_attention(q, self.k, self.v, is_causal=start == 0)
        x = x + attn.out(y.transpose(1, 2).reshape(B, t, D))
        handle = None
        if self.edit is not None:
            handle = m.hook_point(self.hook).register_forward_hook(lambda _m, _i, out: self.edit(out))
        try:
            return (x + blk.mlp(blk.ln2(x)))[:, -1]
        finally:
            if handle is not None:
                handle.remove()
