"""The configuration of the `features build` stage, and the shape of a later analysis step.

Kept apart from build.py so that the passes (passes.py) and the analyses (monosemantic.analyses)
can name it without importing the stage.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from monosemantic import paths
from monosemantic.errors import UserError
from monosemantic.runtime import check_dtype, check_subject_dtype
from monosemantic.transformer import hooks
from monosemantic.transformer.subject import parse_hook


@dataclass(frozen=True)
class FeaturesConfig:
    """What the feature database holds and how it is computed (paper.md §9)."""

    n_tokens: int = 1_048_576
    """Held-out (validation) tokens streamed through the model, in whole contexts."""
    top_k: int = 20
    """Top activating examples kept per feature."""
    window_before: int = 10
    """Tokens shown before an example's max token."""
    window_after: int = 4
    """Tokens shown after an example's max token."""
    n_intervals: int = 10
    """The activation range (0, max] is split into this many equal intervals."""
    interval_samples: int = 5
    """Uniform samples kept from each interval."""
    random_samples: int = 10
    """Uniform samples kept from all of a feature's non-zero activations."""
    hist_bins: int = 40
    """Bins of the log-spaced activation histogram."""
    hist_decades: float = 4.0
    """The histogram spans at most this many powers of ten below the max (lower values go to bin 0)."""
    logit_top: int = 10
    """Top and bottom tokens kept per feature's logit weights."""
    logit_bins: int = 40
    """Bins of the logit-weight histogram."""
    logit_min_count: int = 10
    """Tokens seen fewer times than this in the training split are left out of the logit weights."""
    batch_size: int = 16
    """Contexts per forward pass; memory grows with batch_size × ctx_len × features."""
    model: str = "A"
    """Model name under RUN/transformer, or a Hugging Face causal LM (a save_pretrained folder, a .gguf file,
    or hf:NAME from the local cache), whose SAEs are under RUN/sae/hf-<name>/."""
    hook: str = hooks.MLP_POST
    """Activation site of the dictionaries (the neurons are the activations at this hook). For a Hugging Face
    model: MODULE.PATH[:input|:output], e.g. transformer.h.1.mlp.c_proj:input (GPT-2's neurons)."""
    ctx_len: int | None = None
    """Context length of a Hugging Face model (default 256, at most the model's); a run model uses its own."""
    saes: tuple[str, ...] = ()
    """SAE folder names under RUN/sae/MODEL/HOOK to include; empty = all."""
    neurons: bool = True
    """Also write the same records for the model's neurons (dictionary 'neurons')."""
    seed: int = 0
    """Seed of the interval and random samples."""
    device: str = "cpu"
    """Device of the forward and encoders (cpu, cuda, mps, auto); records are kept on the CPU."""
    dtype: str = "float32"
    """Compute dtype of the forward and encoders: float32, or bfloat16 (autocast, runtime.autocast; faster on
    GPUs, activations then carry bfloat16 rounding). Records are float32 / float64 either way."""
    subject_dtype: str = "float32"
    """The subject model's weight dtype: float32, bfloat16 or float16 (the weights themselves are cast, unlike
    --dtype's autocast; half the memory and the fastest forward on a GPU). The SAEs keep their own dtype."""
    device_map: str = ""
    """A Hugging Face subject larger than one device: accelerate's device_map (auto, balanced, sequential)
    spreads its layers over every GPU, then the CPU; empty puts the whole model on --device."""
    analyses: tuple[str, ...] = ("all",)
    """The analyses to run after the core records (analyses/steps.py): all, none, or a subset such as
    ablations,split,map."""
    spill: bool = True
    """Keep pass 1's SAE non-zeros in a temporary file (about 12 bytes each) so pass 2 need not
    encode again; --no-spill re-encodes instead (no extra disk)."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "top_k", "n_intervals", "hist_bins", "logit_bins", "batch_size", "logit_top"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeaturesConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("window_before", "window_after", "interval_samples", "random_samples", "logit_min_count"):
            if getattr(self, name) < 0:
                raise ValueError(f"FeaturesConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.hist_decades <= 0:
            raise ValueError(f"FeaturesConfig.hist_decades must be positive, got {self.hist_decades}")
        if self.ctx_len is not None and self.ctx_len <= 0:
            raise ValueError(f"FeaturesConfig.ctx_len must be positive, got {self.ctx_len}")
        try:  # a hook name or MODULE.PATH[:input|:output]; found in the model at run time
            parse_hook(self.hook)
        except UserError as e:
            raise ValueError(f"FeaturesConfig.hook: {e}") from None
        check_dtype(self.dtype)
        check_subject_dtype(self.subject_dtype)

    @property
    def width(self) -> int:
        return self.window_before + 1 + self.window_after


StepFn = Callable[[sqlite3.Connection, paths.RunLayout, FeaturesConfig, bool], None]
"""`run(conn, layout, cfg, progress)`: reads and writes the open database before finalize."""


@dataclass(frozen=True)
class Step:
    """A later analysis (ablations, proxies, ...) that `build_features` runs after the core records."""

    name: str
    run: StepFn
    any_subject: bool = False
    """True when it reads only the database and the SAEs, so it runs on a Hugging Face subject too; the
    others re-run the run's own one-layer transformer (edited forwards, its tokenizer, model B)."""
