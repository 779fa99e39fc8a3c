"""Read one module's output (or input) and stop the forward there.

    acts = capture(model, tokens, model.hook_point("blocks.0.mlp.hook_post"))   # [batch, pos, d_mlp]

A forward hook stores the activation and raises a private exception, so nothing after the module
runs. For our one-layer model that skips the final LayerNorm and the unembedding, the most
expensive part of the forward (8,192 × 128 against the MLP's 128 × 512, docs/decisions.md 2026-11-25).

Generic over `nn.Module`: it imports nothing from `monosemantic.transformer`, so the same
function serves any model whose forward takes one positional argument (a Hugging Face model's
module found by path, for example).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn


class _Stop(Exception):
    """Raised by the capture hook to end the forward once the activation is stored."""


def capture(
    model: nn.Module,
    tokens: Tensor,
    module: nn.Module,
    which: Literal["output", "input"] = "output",
) -> Tensor:
    """Run `model(tokens)` until `module` runs; return its output (or first positional input).

    Args:
        model: any module; called as `model(tokens)`.
        tokens: the model's input, e.g. int64 `[batch, pos]` token ids.
        module: a submodule of `model` that the forward calls (once; the first call is taken).
        which: "output" returns what `module` returns (the first element when it returns a
            tuple, as Hugging Face blocks do); "input" returns its first positional argument,
            and `module` itself never runs.

    Returns:
        The activation, e.g. `[batch, pos, d]`, on the model's device with autograd state as the
        caller set it (wrap in `torch.inference_mode()` to harvest).

    Raises:
        RuntimeError: the forward finished without calling `module`.
    """
    if which not in ("output", "input"):
        raise ValueError(f"which must be 'output' or 'input', got {which!r}")
    found: list[Tensor] = []

    def keep(x: object) -> None:
        if isinstance(x, tuple):
            x = x[0] if x else None
        if not isinstance(x, Tensor):
            raise TypeError(f"capture: the module's {which} is {type(x).__name__}, not a Tensor")
        found.append(x)
        raise _Stop

    if which == "output":
        handle = module.register_forward_hook(lambda _m, _args, out: keep(out))
    else:
        handle = module.register_forward_pre_hook(lambda _m, args: keep(args))
    try:
        model(tokens)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not found:
        raise RuntimeError(f"capture: the forward never called the module {type(module).__name__}")
    return found[0]
