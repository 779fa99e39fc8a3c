"""Forward passes with an edited MLP activation: the plain versions, and the one-layer shortcut.

The paper's ablation (the paper's appendix "Feature Ablations", paper.md §8.4) runs the model up to the
MLP, replaces the activation x with x − f_i(x)·d_i on every token, and finishes the forward.
`edited_logits` does exactly that with a forward hook; it is the reference implementation.

Our subject model has one layer, and the MLP is its last block: the MLP output at position p
enters the residual stream at p and nothing after it mixes positions (only ln_f and the
unembedding, both per position). So an edit at position p changes the logits at p and nowhere else,
and the edited residual is linear in the edit:

    resid_post' = resid_post − f_i(x_p) · (d_i @ W_out)          [d_model]

`to_resid` + `log_probs` use this to finish the forward only at the positions that change, which is
what makes ablating every feature of a 4,096-feature dictionary affordable on a CPU
(tests/analyses/test_ablation.py checks it against `edited_logits`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.activations.capture import capture
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer


@torch.inference_mode()
def edited_logits(model: Transformer, tokens: Tensor, edit: Callable[[Tensor], Tensor], hook: str) -> Tensor:
    """Logits `[B, T, vocab]` of `tokens [B, T]` with `hook`'s activation replaced by `edit(acts)`.

    `edit` maps the activation `[B, T, d]` to its replacement of the same shape.
    """
    handle = model.hook_point(hook).register_forward_hook(lambda _m, _i, out: edit(out))
    try:
        return model(tokens)
    finally:
        handle.remove()


@torch.inference_mode()
def to_resid(
    model: Transformer, tokens: Tensor, hook: str = hooks.MLP_POST, edit: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Run `tokens [B, T]` up to the residual stream after the MLP, never computing logits.

    Returns `(acts [B, T, d_mlp], resid_post [B, T, d_model])`: the (unedited) activation at `hook`
    and the residual stream that ln_f reads; with `edit`, the activation is replaced by
    `edit(acts)` before the rest of the block runs (and `acts` is still the clean one).
    """
    seen: list[Tensor] = []

    def keep(_m: object, _i: object, out: Tensor) -> Tensor:
        seen.append(out)
        return out if edit is None else edit(out)

    handle = model.hook_point(hook).register_forward_hook(keep)
    try:
        resid = capture(model, tokens, model.hook_point(hooks.RESID_POST))
    finally:
        handle.remove()
    return seen[0], resid


@torch.inference_mode()
def log_probs(model: Transformer, resid: Tensor) -> Tensor:
    """`resid [P, d_model]` (the stream after the last block) → next-token log-probs `[P, vocab]`."""
    return F.log_softmax(model.unembed(model.ln_f(resid)).float(), dim=-1)


def mlp_out_directions(model: Transformer, W_dec: Tensor) -> Tensor:
    """`W_dec [n, d_mlp]` → each direction's write into the residual stream, `[n, d_model]` (d_i @ W_out)."""
    return W_dec @ model.block(0).mlp.W_out.detach()
