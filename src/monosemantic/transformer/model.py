"""The paper's one-layer transformer, read top to bottom (nanoGPT order: parts, then the whole).

[TM] appendix "Transformer Training and Preprocessing": one attention block and one MLP block,
residual width 128, MLP width 512, ReLU. Choices the paper leaves open (paper.md §13), recorded
in docs/decisions.md (2026-11-25):
- pre-LN blocks with a final LayerNorm before the unembedding (the paper's logit analysis
  linearises a final LN, so there is one);
- 4 heads of 32 dimensions; learned absolute positions; context 256 (the paper samples 250
  tokens per context, so contexts hold at least that many);
- biases on every linear map; untied embedding and unembedding (`W_U` is read on its own by the
  logit-effect analysis); GPT-2 initialisation.

Forward math, with x the residual stream [batch, pos, d_model]:
    x = W_E[tokens] + W_pos[positions]
    x = x + attn(ln1(x))
    h = relu(ln2(x) @ W_in + b_in)          # the 512 neurons, hook MLP_POST
    x = x + h @ W_out + b_out
    logits = ln_f(x) @ W_U + b_U
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic import paths
from monosemantic.errors import CONFIG_VALUE_ERRORS, UserError
from monosemantic.io import load_tensors, read_config
from monosemantic.transformer import hooks
from monosemantic.transformer.hooks import HookPoint


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the subject model; the defaults are the paper's (residual 128, 512 neurons)."""

    vocab_size: int = 8192
    """Tokenizer vocabulary size (set from the tokenizer)."""
    d_model: int = 128
    """Residual stream width ([TM]: 128)."""
    d_mlp: int = 512
    """MLP neurons ([TM]: 512)."""
    n_heads: int = 4
    """Attention heads (not stated in [TM]; 4 heads of 32)."""
    ctx_len: int = 256
    """Context length in tokens (not stated in [TM]; at least the 250 positions it samples)."""
    ln_eps: float = 1e-5
    """LayerNorm epsilon."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        for name in ("vocab_size", "d_model", "d_mlp", "n_heads", "ctx_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        nh, hs = self.cfg.n_heads, self.cfg.d_head
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    """The 512 ReLU neurons; `W_in [d_model, d_mlp]` and `W_out [d_mlp, d_model]` as in [TM]."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)  # (B, T, d_mlp)
        post = self.hook_post(F.relu(pre))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class Transformer(nn.Module):
    """One-layer transformer with named hook points (see `hooks`)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.W_pos = nn.Embedding(cfg.ctx_len, cfg.d_model)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([Block(cfg)])
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2 init: N(0, 0.02), with the residual-writing maps scaled by 1/sqrt(2 * n_layers).
        std, n_layers = 0.02, len(self.blocks)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                if name.endswith("weight"):  # LayerNorm gains
                    nn.init.ones_(p)
                else:
                    nn.init.zeros_(p)
            elif name.endswith(("out.weight", "W_out")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def block(self, i: int) -> Block:
        """`blocks[i]` typed as a `Block` (indexing an `nn.ModuleList` gives a bare `nn.Module`)."""
        block = self.blocks[i]
        assert isinstance(block, Block)
        return block

    @property
    def W_U(self) -> Tensor:
        """Unembedding as [d_model, vocab] (the layout the logit-effect analysis multiplies by)."""
        return self.unembed.weight.T

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens int64 [batch, pos] -> logits [batch, pos, vocab]."""
        B, T = tokens.shape
        if self.cfg.ctx_len < T:
            raise ValueError(f"sequence of {T} tokens is longer than ctx_len {self.cfg.ctx_len}")
        pos = torch.arange(T, device=tokens.device)
        x = self.hook_embed(self.W_E(tokens)) + self.hook_pos_embed(self.W_pos(pos).expand(B, T, -1))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))

    def loss(self, tokens: Tensor) -> Tensor:
        """Mean next-token cross-entropy (nats) of `tokens [batch, pos+1]`."""
        logits = self(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())

    def hook_point(self, name: str) -> HookPoint:
        """The `HookPoint` registered under a canonical name from `hooks`."""
        if name not in hooks.ALL:
            raise KeyError(f"unknown hook {name!r}; known: {', '.join(hooks.ALL)}")
        module = self.get_submodule(name)
        assert isinstance(module, HookPoint)
        return module

    def run_with_cache(self, tokens: Tensor, names: tuple[str, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits plus the activations at `names` (each [batch, pos, d])."""
        cache: dict[str, Tensor] = {}
        handles = [
            self.hook_point(n).register_forward_hook(lambda _m, _i, out, n=n: cache.__setitem__(n, out)) for n in names
        ]
        try:
            logits = self(tokens)
        finally:
            for h in handles:
                h.remove()
        return logits, cache


KIND = "monosemantic.transformer"
"""The `kind` of a trained model's config.json (`lm train` writes it)."""


def load_transformer(folder: str | Path, device: str = "cpu") -> Transformer:
    """The one loader of a trained model's stage folder (`RUN/transformer/<model>/`).

    Every missing or corrupt file is a one-line UserError naming it; the weights are checked for NaN/inf.
    """
    folder = Path(folder)
    cfg_path = folder / paths.CONFIG
    if not cfg_path.is_file():
        raise UserError(f"{folder}: no trained model here (run `monosemantic lm train`)")
    cfg = read_config(cfg_path, KIND)
    try:
        model = Transformer(TransformerConfig(**cfg["model"]))
    except CONFIG_VALUE_ERRORS as e:
        raise UserError(f"{cfg_path}: bad model shape ({type(e).__name__}: {e})") from None
    weights = folder / paths.MODEL_WEIGHTS
    tensors = load_tensors(weights)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"{weights}: does not match {cfg_path} ({str(e).splitlines()[0]}...)") from None
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{weights}: NaN or inf in {', '.join(bad[:3])}")
    return model.to(device)
