"""Dead-feature resampling exactly as in the 2023 paper (the paper's appendix "Neuron Resampling", paper.md §4).

The paper's procedure, and where each step lives:

1. At steps 25k, 50k, 75k and 100k of 1M, find features that have "not fired in any of the
   previous 12,500 training steps". → `resample_schedule` (scaled to the run) and `dead_mask`;
   the trainer keeps `last_fired` (the model's forward has no side effects).
2. "Compute the loss for the current model on a random subset of 819,200 inputs" (100 batches of
   8192). → the trainer peeks `resample_n_batches` batches of the (shuffled) stream, computes
   `loss.per_example_loss` with the current SAE (`resample_losses`, over the active features),
   and then trains on those batches as usual, so no input is dropped or repeated. Or, with
   `resample_scores="training"` (the default preset), no scoring pass: the last batches trained on,
   with the losses their steps computed, and each drawn seed handed back in one of the next
   batches (`Kept`), which keeps the paper's dead fraction (docs/decisions.md).
3. "Assign each input vector a probability of being picked that is proportional to the square of
   the autoencoder's loss on that input." → `sample_by_loss`.
4. "For each dead neuron sample an input according to these probabilities. Renormalize the input
   vector to have unit L2 norm and set this to be the dictionary vector". → `resample_dead_`.
5. Encoder column = that input "renormalized to equal the average norm of the encoder weights for
   alive neurons × 0.2"; encoder bias element = 0. → `resample_dead_`.
6. "Reset the Adam optimizer parameters for every modified weight and bias term." → `reset_adam_`.

Choices the paper leaves open (paper.md §4 table, §13), taken here:
- the loss squared in step 3 is the training loss, MSE + λ·L1 per input (the paper says "the
  autoencoder's loss"; ai-safety-foundation does the same). λ = 0 in the call gives MSE only.
- the new direction is the raw input x ("the input vector"), as ai-safety-foundation does;
  `direction="centered"` uses x − b_dec instead.
- inputs are sampled without replacement across dead features (with replacement only when there
  are fewer eligible inputs than dead features); inputs with zero norm are never picked.
- "alive" = fired within the window; with no alive feature the encoder norm averages all features.
- Adam state is reset only for the touched slices: columns of W_enc, elements of b_enc, rows of
  W_dec. PyTorch keeps one `step` per tensor, so bias correction is ~1 by then and the first
  updates of a reset slice are about lr·√(1−β2)/(1−β1) ≈ 3·lr in size: the paper's "sudden loss
  spikes" after resampling are expected.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from monosemantic.sae.constraints import EPS
from monosemantic.sae.loss import per_example_loss
from monosemantic.sae.model import SparseAutoencoder
from monosemantic.sae.sparse_step import MatmulDtype, sparse_encode

log = logging.getLogger(__name__)

# paper.md §4: resample at 25k/50k/75k/100k of 1M steps; dead = no firing in the previous 12,500 steps.
PAPER_RESAMPLE_EVERY_FRACTION = 0.025
PAPER_N_RESAMPLES = 4
PAPER_DEAD_WINDOW_FRACTION = 0.0125
PAPER_ENCODER_SCALE = 0.2

Direction = Literal["input", "centered"]


def resample_schedule(
    n_steps: int,
    every_fraction: float = PAPER_RESAMPLE_EVERY_FRACTION,
    n_resamples: int = PAPER_N_RESAMPLES,
    window_fraction: float = PAPER_DEAD_WINDOW_FRACTION,
) -> tuple[list[int], int]:
    """Scale the paper's schedule to a run of `n_steps` steps.

    The paper resamples every 25,000 of its 1M steps (fraction 0.025), 4 times, with a dead window
    of 12,500 steps (0.0125); we keep those proportions. A run of 20,000 steps resamples at 500,
    1000, 1500 and 2000 with a 250-step window.

    Returns:
        (sorted distinct steps in [1, n_steps] at which to resample, window in steps ≥ 1).
    """
    steps = {round(k * every_fraction * n_steps) for k in range(1, n_resamples + 1)}
    window = max(1, round(window_fraction * n_steps))
    return sorted(s for s in steps if 1 <= s <= n_steps), window


def dead_mask(last_fired: Tensor, step: int, window: int) -> Tensor:
    """Features that did not fire on steps `step − window + 1 … step` (paper.md §4).

    Args:
        last_fired: `[n_features]` int, last step on which the feature was > 0 on any input
            (0 = never, with steps counted from 1).
    Returns:
        `[n_features]` bool.
    """
    return (step - last_fired) >= window


def _dense_loss(sae: SparseAutoencoder, x: Tensor, l1_coeff: float) -> Tensor:
    """`per_example_loss` of the plain forward (the reference the sparse path below matches)."""
    x_hat, f = sae(x)
    return per_example_loss(x, x_hat, f, l1_coeff)


@torch.no_grad()
def resample_losses(
    sae: SparseAutoencoder, x: Tensor, l1_coeff: float, matmul_dtype: MatmulDtype = "float32"
) -> Tensor:
    """`per_example_loss(x, *sae(x))`, with the decoder product over the active features only.

    Resampling scores 100 batches per SAE each time (paper.md §4): with dense products that was about
    half of the demo ladder's time. As in the sparse step, `matmul_dtype="bfloat16"` picks the
    active set with a bfloat16 encoder product and recomputes those values exactly, so the loss
    differs only by the features within bfloat16 rounding of 0 (it only weights a random draw).
    """
    if sae.architecture != "tm2023" or x.device.type != "cpu":
        return _dense_loss(sae, x, l1_coeff)
    x_bar = x - sae.b_dec  # paper.md §3.1: the pre-encoder bias
    p, vals, xw = sparse_encode(x_bar, sae.W_enc, sae.b_enc, None, matmul_dtype)
    if p.col.numel() > p.shape[0] * p.shape[1] // 8:  # dense early in training: the sparse product would not pay
        if matmul_dtype == "bfloat16":  # xw is approximate (and has b_enc added): encode again exactly
            return _dense_loss(sae, x, l1_coeff)
        f = torch.relu(xw + sae.b_enc)  # float32: reuse the exact encoder product
        return per_example_loss(x, sae.decode(f), f, l1_coeff)
    vals = vals.clamp(min=0)  # a bfloat16 pick can be a float32 -0.0001: ReLU's 0
    e = torch.addmm(x_bar, p.csr(vals), sae.W_dec, beta=-1)  # x̂ − x = F W_dec − x̄: one pass (sparse_step.py)
    mse = torch.linalg.vector_norm(e, dim=1).square_().div_(x.shape[1])
    l1 = torch.zeros(x.shape[0], dtype=vals.dtype, device=x.device).index_add_(0, p.row, vals)
    return mse + l1_coeff * l1


@dataclass
class Kept:
    """Resampling scored from the training steps (`resample_scores="training"`) for one SAE: its last `size`
    batches, its per-input loss on each as the training step computed it, and its seed inputs waiting to
    be handed back, one slot for each coming step (docs/decisions.md, "Resampling scored from the
    training steps"). Inputs are kept raw (before the SAE's input scale)."""

    size: int
    batches: deque[tuple[Tensor, Tensor]] = field(default_factory=deque)
    """(the stream's batch, this SAE's own rows added to it), oldest first; at most `size`."""
    losses: deque[Tensor] = field(default_factory=deque)
    """`[rows]` the per-input loss of each kept batch, its added rows last."""
    pending: list[Tensor] = field(default_factory=list)
    """Seed inputs to add to each coming batch, the next step's first."""

    def next_rows(self, like: Tensor) -> Tensor:
        """The rows to add to this step's batch (`[0, d]` when none)."""
        return self.pending.pop(0) if self.pending else like.new_zeros((0, like.shape[1]))

    def keep(self, batch: Tensor, added: Tensor, loss: Tensor) -> None:
        self.batches.append((batch, added))
        self.losses.append(loss)
        while len(self.batches) > self.size:
            self.batches.popleft()
            self.losses.popleft()

    def ready(self, n_batches: int) -> bool:
        return len(self.batches) >= n_batches

    def scored(self, n_batches: int) -> tuple[Tensor, Tensor]:
        """The last `n_batches` batches' inputs `[N, d]` (raw) and their losses `[N]`."""
        rows = [t for batch, added in list(self.batches)[-n_batches:] for t in (batch, added)]
        return torch.cat(rows), torch.cat(list(self.losses)[-n_batches:])

    def hand_back(self, seeds: Tensor, generator: torch.Generator | None) -> None:
        """Add each seed to one of the next `size` batches, drawn uniformly, as a peek of `size` batches
        would have trained on it: the new features meet their seeds while they sparsify."""
        slot = torch.randint(0, self.size, (seeds.shape[0],), generator=generator, device=seeds.device)
        while len(self.pending) < self.size:
            self.pending.append(seeds.new_zeros((0, seeds.shape[1])))
        for k in range(self.size):
            self.pending[k] = torch.cat([self.pending[k], seeds[slot == k]])


def sample_by_loss(loss: Tensor, n: int, generator: torch.Generator | None, eligible: Tensor | None = None) -> Tensor:
    """Pick `n` indices with probability ∝ loss² (paper.md §4 step 3).

    Args:
        loss: `[N]` per-input loss (≥ 0).
        eligible: `[N]` bool, inputs that may be picked (default all).
    Returns:
        `[n]` long indices; without replacement when enough eligible inputs have nonzero weight.
    """
    p = loss.double().pow(2)
    if eligible is not None:
        p = p * eligible
    if p.sum() <= 0:  # a perfect fit everywhere: fall back to uniform over eligible inputs
        p = torch.ones_like(p) if eligible is None else eligible.double()
        if p.sum() <= 0:
            raise ValueError("sample_by_loss: no eligible input")
    replacement = n > int((p > 0).sum())
    return torch.multinomial(p, n, replacement=replacement, generator=generator)


@torch.no_grad()
def reset_adam_(optimizer: torch.optim.Optimizer, param: Tensor, index: tuple[slice | Tensor, ...]) -> None:
    """Zero Adam's moment estimates (`exp_avg`, `exp_avg_sq`) on `param[index]` (paper.md §4 step 6)."""
    state = optimizer.state.get(param)
    if not state:  # no step taken yet: nothing to reset
        return
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if key in state:
            state[key][index] = 0


@torch.no_grad()
def resample_dead_(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer | None,
    dead: Tensor,
    x: Tensor,
    loss: Tensor,
    *,
    generator: torch.Generator | None = None,
    encoder_scale: float = PAPER_ENCODER_SCALE,
    direction: Direction = "input",
) -> Tensor:
    """Re-initialise the dead features of `sae` from high-loss inputs, in place (paper.md §4 steps 3–6).

    Args:
        sae: the autoencoder; its W_enc, b_enc, W_dec are modified for the dead features only.
        optimizer: Adam over the SAE's parameters (its moments for the touched slices are zeroed),
            or None.
        dead: `[n_features]` bool.
        x: `[N, d_in]` inputs the loss was computed on.
        loss: `[N]` per-input loss of the current model on `x`.
        encoder_scale: the paper's 0.2.
        direction: "input" (raw x, the paper's words) or "centered" (x − b_dec).
    Returns:
        `[n_dead]` long, the index into `x` of the input that seeded each dead feature, in order.
    """
    dead_idx = dead.nonzero().squeeze(1)  # (n_dead,)
    n_dead = dead_idx.numel()
    if n_dead == 0:
        return dead_idx
    v = x if direction == "input" else x - sae.b_dec
    norms = v.norm(dim=1)  # (N,)
    picked = sample_by_loss(loss, n_dead, generator, eligible=norms > EPS)
    v = v[picked] / norms[picked, None]  # (n_dead, d_in), unit rows

    alive = ~dead
    enc_norms = sae.W_enc.norm(dim=0)  # (n_features,), norm of each feature's encoder column
    enc_norm = enc_norms[alive].mean() if alive.any() else enc_norms.mean()

    sae.W_dec[dead_idx] = v.to(sae.W_dec.dtype)  # new dictionary directions
    sae.W_enc[:, dead_idx] = (v * (encoder_scale * enc_norm)).T.to(sae.W_enc.dtype)
    sae.b_enc[dead_idx] = 0
    if optimizer is not None:
        reset_adam_(optimizer, sae.W_enc, (slice(None), dead_idx))
        reset_adam_(optimizer, sae.b_enc, (dead_idx,))
        reset_adam_(optimizer, sae.W_dec, (dead_idx,))
    return picked
