"""The fast SAE training step: a hand-written forward and backward over the active features only.

The trainer (`train.train_sae`) asks a `Stepper` for each step's gradients. The dense step's
reference is the recipe's autograd loss, `loss.backward()` (the paper's recipe takes it by hand,
`_dense_by_hand`: the same products without autograd's float32 copies). The sparse step computes the same loss
and the same gradients by hand, with every product after the encoder forward restricted to the
active entries of `f [batch, n_features]` (`sparse_ops`):

    x̄ = x − b_dec (paper.md §3.1; not for April)   pre = x̄ W_enc + b_enc   (dense: the one big product)
    F = active entries of relu(pre) or of relu(topk(pre))                              (CSR)
    x̂ = F W_dec + b_dec ,   e = x̂ − x ,   g = ∂L/∂x̂ = c·e   (c = 2/(B·d) for the paper's mean
                                                               MSE, 2/B for the summed 2024 ones)
    ∂L/∂F   = (g W_decᵀ)|F + λ·w / B        (w = 1, or ‖W_dec[i]‖ for April; 0 for TopK)
    G       = ∂L/∂F ⊙ [F > 0]               (ReLU's derivative, 0 at 0 as in autograd)
    ∂W_dec  = Fᵀ g  (+ April: λ/B · Σ_b F_bi · W_dec[i] / ‖W_dec[i]‖)
    ∂W_enc  = x̄ᵀ G ,  ∂b_enc = Σ_b G ,  ∂b_dec = Σ_b g − W_enc ∂b_enc   (the last term only with x̄)

What differs between recipes (c, the penalty and its gradients, TopK's AuxK term over the dead
features, Gao et al. §2.4) is the recipe's `sparse_terms` method, next to its dense `loss`
(train.py, april.py, topk.py, batchtopk.py, jumprelu_train.py): this file computes the shared
forward, asks the recipe for `SparseTerms`, and backpropagates them. A recipe whose active set is
neither ReLU's nor a per-row top k (BatchTopK's top k·B of the whole batch, JumpReLU's `pre > θ`)
picks it with `sparse_pattern`; `SparseTerms.param_grads` carries gradients of parameters beyond
the four (JumpReLU's threshold). The unit-norm constraint, clipping, Adam, resampling and
dead-feature tracking stay where they are; they see ordinary dense `.grad` tensors.

`dtype="bfloat16"` (the `--dtype` of every stage, `runtime.autocast`) runs the dense step under
bfloat16 autocast and makes `matmul_dtype="auto"` pick bfloat16; either way the weights, their
gradients and Adam stay float32 (mixed precision with float32 master weights).

`matmul_dtype="bfloat16"` runs the encoder product in bfloat16 (AMX / AVX-512 BF16 make it ~3.6×
faster here) only to *choose* the active set; the active values are then recomputed exactly in
float32 (`sampled_matmul`), so weights, gradients and Adam stay float32. What can change is only
which near-zero pre-activations count as active.

`step="auto"` starts dense (early in training about half the features fire and the sparse products
would cost more than dense ones) and switches to sparse once the measured L0 is below
`SPARSE_L0_FRACTION` of the features (`SPARSE_L0_FRACTION_BY_HAND` where the dense step runs by hand),
and back if it rises again. Under data parallelism the L0 it compares is the global batch's (summed
over the ranks), so every rank takes the path one process would. Resampling (paper.md §4) is such a
rise: each new feature starts with b_enc = 0 and fires on about half of all inputs, so when the
resampled count would lift L0 over the limit the next step is dense (`Stepper.resampled`) rather than
a sparse step over thousands of entries per input (2-5 s at 16,384 features against 0.7 s dense;
docs/decisions.md, "Dense right after a resampling").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from monosemantic import distributed
from monosemantic.runtime import autocast, native_bf16, resolve_dtype
from monosemantic.sae import sparse_ops as ops
from monosemantic.sae.loss import LossTerms
from monosemantic.sae.model import SparseAutoencoder

StepMode = Literal["auto", "dense", "sparse"]
MatmulDtype = Literal["float32", "bfloat16", "auto"]

SPARSE_L0_FRACTION = 1 / 16
"""`auto` uses the sparse step while L0 < n_features × this, beside the autograd dense step. Measured
(benchmarks/step_crossover.py, docs/benchmarks.md): at 1/16 the sparse step is 1.3–2.0× faster than the
dense one for 512 to 16,384 features, at 1/8 it is 0.6–1.2×, so 1/16 is the largest power of two where it
pays at every size."""
SPARSE_L0_FRACTION_BY_HAND = 1 / 32
"""The same beside the dense step by hand (`_dense_by_hand`, about 1.4× faster): at 1/32 the sparse step is
1.10–1.20× faster for 512 to 4,096 features, at 3/64 0.83–0.91×, at 1/16 0.65–0.73× (docs/benchmarks.md)."""
CHECK_EVERY = 10
"""While dense, `auto` measures L0 every this many steps (a pass over `[batch, n_features]`), and every step
once it was within NEAR_LIMIT times the limit: after a resampling, L0 fell from 2,100-4,100 to under 1,024
in 3-6 steps at 16,384 features, so checking every 10 kept the rest of them dense needlessly (2026-12-07)."""
NEAR_LIMIT = 4


def firing(f: Tensor) -> tuple[Tensor, Tensor]:
    """Which features fired and the mean L0 of a batch's activations, dense or CSR.

    Args:
        f: `[batch, n_features]` feature activations, a strided or a sparse CSR tensor.
    Returns:
        `(fired [n_features] bool, l0 scalar float)`.
    """
    if f.layout == torch.sparse_csr:
        values, cols = f.values(), f.col_indices()
        live = cols[values > 0]  # TopK's explicit zeros do not count
        fired = torch.zeros(f.shape[1], dtype=torch.bool, device=f.device)
        fired[live] = True
        return fired, torch.tensor(live.numel() / f.shape[0], device=f.device)
    active = f > 0  # (batch, n_features)
    return active.any(dim=0), active.sum(dim=-1).float().mean()


@dataclass(frozen=True)
class SparseForward:
    """The sparse step's forward pass, as a recipe's `sparse_terms` sees it."""

    x_bar: Tensor
    """`[batch, d_in]`: the encoder's input, x − b_dec (or x where the SAE has no pre-encoder bias)."""
    p: ops.Pattern
    """The active entries of f, `[batch, n_features]`."""
    f_vals: Tensor
    """`[nnz]`: f at those entries (ReLU'd, so ≥ 0)."""
    e: Tensor
    """`[batch, d_in]`: x̂ − x."""
    sse: Tensor
    """Scalar: Σ_j e², mean over the batch."""
    sse_rows: Tensor
    """`[batch]`: Σ_j e² of each input."""
    step: int
    """The step (1-based), for schedules such as April's λ warm-up."""
    dead: Tensor
    """`[n_features]` bool: dead before this step (TopK's AuxK)."""
    pre: Tensor | None = None
    """`[batch, n_features]`: the dense pre-activations (bfloat16 approximations under `matmul_dtype`
    bfloat16), given when the recipe picked the active set itself (`sparse_pattern`); else None."""


@dataclass
class SparseTerms:
    """A recipe's loss on the sparse step, with its gradients beyond the reconstruction's Fᵀg.

    The sparse step adds them as follows: ∂L/∂x̂ = `grad_scale` · e; ∂L/∂F = (g W_decᵀ)|F + `grad_f`;
    ∂W_dec = Fᵀ g + `grad_W_dec`; each (pattern, ∂L/∂pre there) in `grad_pre` reaches the encoder
    through x̄ like the main pattern's (TopK's AuxK).
    """

    loss: Tensor
    """Scalar: the same loss as the recipe's dense `loss`."""
    parts: dict[str, Tensor]
    """Scalars to log, with the same keys as the dense `loss` gives."""
    grad_scale: float
    """c in ∂L/∂x̂ = c·e: 2 / (batch·d_in) for a mean MSE, 2 / batch for a summed one."""
    grad_f: Tensor | None = None
    """`[nnz]`: the penalty's gradient at the active entries, or None without one."""
    grad_W_dec: Tensor | None = None
    """`[n_features, d_in]`: a decoder gradient besides the reconstruction's, or None."""
    grad_pre: list[tuple[ops.Pattern, Tensor]] = field(default_factory=list)
    """More encoder gradients: (pattern in `[batch, n_features]`, ∂L/∂pre at it `[nnz']`)."""
    grad_enc_cols: tuple[Tensor, Tensor, Tensor] | None = None
    """Dense encoder gradients for a few features: (features `[n']`, ∂W_encᵀ rows `[n', d_in]`, ∂b_enc `[n']`),
    for a term that touches most inputs of those features (JumpReLU's pre-activation loss on the dead ones)."""
    param_grads: dict[str, Tensor] = field(default_factory=dict)
    """Gradients of the SAE's other parameters by name (JumpReLU: `threshold`)."""
    per_input: Tensor | None = None
    """`[batch]`: each input's loss, where the recipe gives it (`LossTerms.per_input`)."""


class SparseRecipe(Protocol):
    """A train config with a hand-written sparse step (`Stepper` uses the dense step for any other)."""

    def sparse_terms(self, sae: SparseAutoencoder, fwd: SparseForward) -> SparseTerms: ...


def dense_gradients(
    sae: SparseAutoencoder, cfg: Any, x: Tensor, step: int, dead: Tensor, dtype: str = "float32", by_hand: bool = True
) -> LossTerms:
    """The dense step; leaves `.grad` on every parameter.

    The reference is the recipe's loss and autograd (`by_hand=False`, and every recipe without
    `dense_terms`). `dtype="bfloat16"` runs it under autocast (`runtime.autocast`): the encoder and
    decoder products, and their backward, in bfloat16; the parameters and their `.grad` stay float32.
    The paper's recipe on a ReLU SAE takes the same step by hand (`_dense_by_hand`)."""
    if by_hand and _by_hand(sae, cfg):
        return _dense_by_hand(sae, cfg, x, dtype)
    with autocast(x.device, dtype):
        terms = cfg.loss(sae, x, step, dead)
    for p in sae.parameters():
        p.grad = None
    terms.loss.backward()
    return terms


def _by_hand(sae: SparseAutoencoder, cfg: Any) -> bool:
    """Whether the dense step runs by hand: a ReLU SAE under a recipe that gives `dense_terms`."""
    return type(sae).activation is SparseAutoencoder.activation and getattr(cfg, "dense_terms", None) is not None


@torch.no_grad()
def _dense_by_hand(sae: SparseAutoencoder, cfg: Any, x: Tensor, dtype: str) -> LossTerms:
    """`dense_gradients` for a ReLU SAE whose recipe gives `dense_terms` (the paper's), without autograd.

    The same five products autocast runs, in the same dtype (bfloat16 in, bfloat16 out), with every
    `[batch, n_features]` tensor kept in that dtype: autocast's float32 copies of them and its sixth
    product (∂L/∂x̄, needed only for ∂b_dec = Σg − W_enc ∂b_enc, as in the sparse step) are what it
    saves, about a quarter of the step at 4,096 features (docs/benchmarks.md, "The dense step by
    hand"). b_enc is added in float32, as autocast adds it. In bfloat16 the sums over f and ∂L/∂pre
    (each input's L1, ∂b_enc) come out rounded to bfloat16, as the products' outputs do, and Σg sums
    the bfloat16 g the products take: the step's result moves within bfloat16's rounding, not beyond.
    """
    dt = torch.bfloat16 if dtype == "bfloat16" else x.dtype
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    x_bar = x - b_dec if sae.pre_encoder_bias else x  # (batch, d_in)
    x_low, W_dec_low = x_bar.to(dt), W_dec.to(dt)
    f = (x_low @ W_enc.to(dt)).add_(b_enc).relu_()  # (batch, n_features)
    residual = x_bar if sae.pre_encoder_bias else x - b_dec
    e = (f @ W_dec_low).to(x.dtype).sub_(residual)  # x̂ − x
    terms = cfg.dense_terms(sae, f, e, e.square().mean(dim=-1))
    g = e.mul_(terms.grad_scale).to(dt)  # ∂L/∂x̂
    grad_f = (g @ W_dec_low.T).add_(terms.grad_f)  # (batch, n_features)
    grad_pre = torch.ops.aten.threshold_backward(grad_f, f, 0)  # where f > 0 (ReLU's derivative), in one pass
    W_dec.grad = (f.T @ g).to(W_dec.dtype)
    W_enc.grad = (x_low.T @ grad_pre).to(W_enc.dtype)
    b_enc.grad = grad_pre.sum(dim=0).to(b_enc.dtype)
    b_dec.grad = g.sum(dim=0, dtype=b_dec.dtype)
    if sae.pre_encoder_bias:
        b_dec.grad -= W_enc @ b_enc.grad
    return LossTerms(terms.loss, f, terms.parts, terms.per_input)


@torch.no_grad()
def sparse_gradients(
    sae: SparseAutoencoder,
    cfg: SparseRecipe,
    x: Tensor,
    step: int,
    dead: Tensor,
    matmul_dtype: MatmulDtype = "float32",
) -> LossTerms:
    """The same loss and gradients as `dense_gradients`, computed over the active features only.

    The recipe's loss terms come from `cfg.sparse_terms` (tm2023: mean MSE + λ·L1, paper.md §3.2;
    april2024: summed MSE + λ(step)·Σ f‖W_dec‖; topk: summed MSE + α·AuxK). Returns `LossTerms`
    whose `f` is a sparse CSR tensor `[batch, n_features]` (use `firing` on it).
    """
    batch, d_in = x.shape
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    x_bar = x - b_dec if sae.pre_encoder_bias else x  # (batch, d_in)

    # encoder forward (the one dense product), then the active set (the recipe's own, if it has one)
    own = getattr(cfg, "sparse_pattern", None)
    select = (lambda pre: own(sae, pre)) if own is not None else None
    p, pre_vals, xw = sparse_encode(x_bar, W_enc, b_enc, sae.top_k, matmul_dtype, select)
    f_vals = pre_vals.relu()  # (nnz,)

    # decoder forward and the recipe's loss. Each pass over a [batch, d_in] tensor costs about as much as
    # the 512-feature encoder product, so e = F W_dec − x̄ comes out of one addmm (x̂ − x = F W_dec + b_dec − x)
    # and g = c·e is never formed: c goes into the nnz-sized factors below.
    residual = x_bar if sae.pre_encoder_bias else x - b_dec  # x − b_dec
    e = torch.addmm(residual, p.csr(f_vals), W_dec, beta=-1) if f_vals.numel() else -residual  # (batch, d_in)
    sse_rows = torch.linalg.vector_norm(e, dim=1).square_()  # (batch,): one read of e, as a dot would be
    fwd = SparseForward(x_bar, p, f_vals, e, sse_rows.sum() / batch, sse_rows, step, dead, xw if select else None)
    terms = cfg.sparse_terms(sae, fwd)

    # backward through the decoder and the ReLU, at the active entries only; ∂L/∂x̂ = g = c·e
    c = terms.grad_scale
    grad_f = ops.sampled_matmul(p, e, W_dec.T, terms.grad_f, alpha=c)  # (nnz,)
    grad_pre = grad_f * (pre_vals > 0)
    pt = ops.transpose(p)
    grad_W_dec = ops.spmm_t(pt, f_vals * c, e)  # (n_features, d_in)
    if terms.grad_W_dec is not None:
        grad_W_dec += terms.grad_W_dec
    grad_b_dec = e.sum(dim=0).mul_(c)

    # backward through the encoder
    grad_b_enc = ops.column_sums(p, grad_pre)  # (n_features,)
    grad_W_enc_t = ops.spmm_t(pt, grad_pre, x_bar)  # (n_features, d_in)
    for pa, grad_pa in terms.grad_pre:
        grad_b_enc += ops.column_sums(pa, grad_pa)
        grad_W_enc_t += ops.spmm_t(ops.transpose(pa), grad_pa, x_bar)
    if terms.grad_enc_cols is not None:
        cols, grad_rows, grad_bias = terms.grad_enc_cols
        grad_W_enc_t.index_add_(0, cols, grad_rows)
        grad_b_enc.index_add_(0, cols, grad_bias)
    if sae.pre_encoder_bias:
        grad_b_dec -= W_enc @ grad_b_enc  # x̄ = x − b_dec feeds the encoder too (paper.md §3.1)

    W_enc.grad = grad_W_enc_t.T.contiguous()  # contiguous: Adam(fused=True) mishandles transposed grads
    b_enc.grad, W_dec.grad, b_dec.grad = grad_b_enc, grad_W_dec, grad_b_dec
    for name, grad in terms.param_grads.items():
        getattr(sae, name).grad = grad
    return LossTerms(terms.loss, p.csr(f_vals), terms.parts, terms.per_input)


def resolve_matmul_dtype(name: MatmulDtype, device: torch.device, dtype: str = "float32") -> MatmulDtype:
    """`auto` → bfloat16 when the run's compute `dtype` is bfloat16, or where the hardware multiplies it
    natively (AVX-512 BF16 or AMX on a CPU, a CUDA device with bf16), else float32: emulated bfloat16
    would make the selection slower, not faster. An explicit float32 or bfloat16 is kept."""
    if name != "auto":
        return name
    if dtype == "bfloat16":
        return "bfloat16"
    return "bfloat16" if native_bf16(device) else "float32"


def sparse_encode(
    x_bar: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int | None,
    matmul_dtype: MatmulDtype,
    select: Callable[[Tensor], ops.Pattern] | None = None,
) -> tuple[ops.Pattern, Tensor, Tensor]:
    """Encoder forward → (active pattern, exact float32 pre-activations there `[nnz]`, the dense product).

    `select(pre [batch, n_features]) → pattern` picks the active set instead of ReLU or per-row top k;
    the dense product returned is then the pre-activations (b_enc added in place)."""
    # without b_enc: addmm would first copy the broadcast bias into the [batch, n_features] output
    if matmul_dtype == "bfloat16":
        bf = torch.bfloat16
        xw = x_bar.to(bf) @ W_enc.to(bf)  # (batch, n_features), approximate
        p = _pattern(xw, b_enc.to(bf), k, select)
        exact = ops.sampled_matmul(p, x_bar, W_enc, b_enc[p.col])  # recompute in float32
        return p, exact, xw
    xw = x_bar @ W_enc  # (batch, n_features)
    p = _pattern(xw, b_enc, k, select)
    if k is not None or select is not None:
        return p, ops.gather(xw, p), xw  # b_enc already added in place
    return p, ops.gather(xw, p) + b_enc[p.col], xw


def _pattern(xw: Tensor, b_enc: Tensor, k: int | None, select: Callable[[Tensor], ops.Pattern] | None) -> ops.Pattern:
    """Active set of `xw + b_enc`: `select`'s, its positive entries, or each row's top k."""
    if select is not None:
        xw.add_(b_enc)
        return select(xw)
    if k is not None or xw.dtype == torch.bfloat16:
        xw.add_(b_enc)  # in place: xw is ours (bfloat16: half the bytes, then an int16 compare)
        return ops.topk_pattern(xw, k) if k is not None else ops.positive_pattern(xw)
    return ops.positive_pattern(xw, -b_enc)


@dataclass
class Stepper:
    """Chooses the dense or the sparse step for one SAE and remembers the last L0 it measured."""

    mode: StepMode = "auto"
    matmul_dtype: MatmulDtype = "float32"
    sparse: bool = False
    dtype: str = "float32"  # the dense step's compute dtype (autocast)
    steps_since_check: int = 0
    check_every: int = CHECK_EVERY
    nnz: int = -1  # active entries of the last batch where measured (-1: not yet)
    fraction: float = SPARSE_L0_FRACTION  # sparse while L0 < n_features × this

    @classmethod
    def for_recipe(cls, sae: SparseAutoencoder, cfg: Any) -> Stepper:
        mode: StepMode = getattr(cfg, "step", "dense")
        if not callable(getattr(cfg, "sparse_terms", None)):
            mode = "dense"  # a recipe without a hand-written backward (not a SparseRecipe)
        sparse = mode == "sparse"
        fraction = SPARSE_L0_FRACTION_BY_HAND if _by_hand(sae, cfg) else SPARSE_L0_FRACTION
        k = sae.top_k if sae.top_k is not None else getattr(sae.cfg, "k", None)  # BatchTopK: k on average
        if mode == "auto" and k is not None:  # L0 ≤ k from the first step
            sparse = k <= fraction * sae.cfg.n_features
        density = getattr(cfg, "init_b_enc_density", None)
        if mode == "auto" and density is not None:  # the sparse start (data_init.py): L0 ≈ density × n at step 1
            sparse = density <= fraction
        # a ReLU SAE's L0 is first measured after step 1, then every CHECK_EVERY dense steps
        dtype = resolve_dtype(getattr(cfg, "dtype", "float32"), sae.W_enc.device)
        matmul = resolve_matmul_dtype(getattr(cfg, "matmul_dtype", "float32"), sae.W_enc.device, dtype)
        return cls(mode, matmul, sparse, dtype, steps_since_check=CHECK_EVERY - 1, fraction=fraction)

    def gradients(self, sae: SparseAutoencoder, cfg: Any, x: Tensor, step: int, dead: Tensor) -> LossTerms:
        """One step's loss terms, with `.grad` set on every parameter of `sae`."""
        if self.sparse:
            terms = sparse_gradients(sae, cfg, x, step, dead, self.matmul_dtype)
            if self.mode == "auto":
                self.nnz, rows = _whole_batch(terms.f.values().numel(), x.shape[0])
                if self.nnz > self._limit(sae, rows):
                    self._go_dense()  # L0 rose again
            return terms
        terms = dense_gradients(sae, cfg, x, step, dead, self.dtype)
        self.steps_since_check += 1
        if self.mode == "auto" and self.steps_since_check >= self.check_every:
            self.steps_since_check = 0
            self.nnz, rows = _whole_batch(int((terms.f > 0).sum()), x.shape[0])
            limit = self._limit(sae, rows)
            self.sparse = self.nnz <= limit
            self.check_every = 1 if self.nnz <= NEAR_LIMIT * limit else CHECK_EVERY
        return terms

    def resampled(self, sae: SparseAutoencoder, n_new: int, batch: int) -> None:
        """`n_new` features were just resampled: go dense if they would lift L0 over the limit (each fires on
        about half of the inputs at first, module docstring), and measure L0 after every dense step."""
        if self.mode != "auto" or not self.sparse or self.nnz < 0:
            return
        if self.nnz + n_new * batch / 2 > self._limit(sae, batch):
            self._go_dense()

    def _go_dense(self) -> None:
        """Dense from the next step, with L0 measured after each dense step until it is low again."""
        self.sparse = False
        self.steps_since_check, self.check_every = 0, 1

    def _limit(self, sae: SparseAutoencoder, batch: int) -> float:
        """The most active entries of a batch of `batch` inputs that the sparse step takes."""
        return self.fraction * sae.cfg.n_features * batch


def _whole_batch(nnz: int, rows: int) -> tuple[int, int]:
    """Active entries and rows of the whole global batch: this rank's, summed over the data-parallel ranks
    (one all-reduce), so that every rank takes the step path one process would."""
    if not distributed.is_enabled():
        return nnz, rows
    counts = torch.tensor([nnz, rows], dtype=torch.float64)
    distributed.sum_([counts])
    return int(counts[0]), int(counts[1])
