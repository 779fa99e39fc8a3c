"""Random held-out contexts re-run through a run model: the scoring windows the database lacks (paper §8.8).

    pool = load_pool(layout, "A", hook, n_tokens=131072, n_contexts=64, seed=0)
    acts = pool.columns(dictionary, cols)                  # [P, len(cols)] on the pool's P tokens
    windows = pool.windows(acts[:, j], exclude, n_random=20, top=[" the"], n_out_of_context=5, ...)

The build stores only examples where a feature fires. The paper also scores the simulator on random
tokens, where the feature is mostly zero, so an explanation that predicts activity where there is
none scores low; and on the feature's top tokens in other contexts, which tells a feature of a
token from a feature of a token in some context. Both need the feature's activation on arbitrary
held-out tokens, so the explain step runs the model once over `n_contexts` contexts drawn (seeded)
from the held-out contexts the build streamed, keeps the hook's activations (the neurons), and
encodes only the columns of the features being scored (`loader.column_encoder`).

Any subject can be re-run (`transformer.subject.load_subject`): a run model by its name, a Hugging Face
model by the path or hf:NAME it was built from (`AutoInterpConfig.subjects`). Without a way to run it
`load_pool` returns None and the score uses the stored examples alone (their windows still hold the
zeros around each example).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from monosemantic import paths
from monosemantic.analyses.loader import Dictionary, column_encoder
from monosemantic.analyses.sampling import ScoringWindow
from monosemantic.analyses.scoring import stratum
from monosemantic.data.tokens import TokenStore
from monosemantic.errors import UserError
from monosemantic.features.rows import display_tokens
from monosemantic.features.stream import dictionary_activations, held_out_contexts
from monosemantic.io import is_complete
from monosemantic.runtime import pick_device
from monosemantic.transformer.subject import HF_PREFIX, is_run_model, load_subject

log = logging.getLogger(__name__)


@dataclass
class HeldOutPool:
    """Held-out contexts of one model with its activations at one hook."""

    tokens: np.ndarray
    """int64 [n_ctx, T] token ids."""
    offsets: np.ndarray
    """int64 [n_ctx]: each context's first token in the held-out stream (examples.ctx_offset)."""
    acts: Tensor
    """float32 [n_ctx * T, d]: the hook's activations, row-major over (context, position)."""
    strings: list[str]
    """Every token id as the database writes it (features/rows.py `display_tokens`)."""

    def __post_init__(self) -> None:
        self._ids: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.strings):
            self._ids[s].append(i)

    def columns(self, dictionary: Dictionary, cols: Sequence[int], chunk: int = 8192) -> np.ndarray:
        """`[P, len(cols)]`: the activations of features `cols` of `dictionary` on every pool token."""
        enc = column_encoder(dictionary, torch.as_tensor(list(cols), dtype=torch.long))
        with torch.inference_mode():
            parts = [enc(self.acts[lo : lo + chunk]).float() for lo in range(0, len(self.acts), chunk)]
        return torch.cat(parts).numpy() if parts else np.zeros((0, len(cols)), dtype=np.float32)

    def windows(
        self,
        col: np.ndarray,
        exclude: set[int],
        n_random: int,
        top: Sequence[str],
        n_out_of_context: int,
        window: int,
        max_act: float,
        n_intervals: int,
        rng: np.random.Generator,
    ) -> list[ScoringWindow]:
        """Test windows of one feature (`col [P]` its activations), in contexts whose offset is not in `exclude`.

        `n_random` centres uniform over those contexts' tokens (zeros included: 'heldout' windows,
        importance-weighted by the stratum of their centre), and up to `n_out_of_context` centres
        uniform over the occurrences of the tokens `top` there ('out_of_context', unweighted).
        """
        T = self.tokens.shape[1]
        rows = np.flatnonzero(~np.isin(self.offsets, np.fromiter(exclude, dtype=np.int64, count=len(exclude))))
        if len(rows) == 0:
            return []
        n = len(rows) * T
        picks = rng.choice(n, min(n_random, n), replace=False)
        centres = [(int(rows[i // T]), int(i % T), "heldout") for i in np.sort(picks)]
        ids = [i for s in top for i in self._ids.get(s, [])]
        if ids and n_out_of_context > 0:
            hits = np.flatnonzero(np.isin(self.tokens[rows], ids).reshape(-1))
            chosen = rng.choice(hits, min(n_out_of_context, len(hits)), replace=False) if len(hits) else hits
            centres += [(int(rows[i // T]), int(i % T), "out_of_context") for i in np.sort(chosen)]
        out = []
        for r, p, kind in centres:
            lo, hi = max(0, p - window), min(T, p + window + 1)
            acts = col[r * T + lo : r * T + hi].astype(np.float64)
            centre = float(col[r * T + p])
            s = stratum(centre, max_act, n_intervals) if kind == "heldout" else None
            toks = [self.strings[t] for t in self.tokens[r, lo:hi].tolist()]
            out.append(ScoringWindow(toks, acts.round(4).tolist(), kind, p - lo, centre, s, int(self.offsets[r])))
        return out


def vocab_strings(tok: Tokenizer, vocab_size: int) -> list[str]:
    """Every token id of the subject's tokenizer as the build writes it into `examples.tokens_json`."""
    return display_tokens(
        tok.decode_batch([[i] for i in range(vocab_size)], skip_special_tokens=False),
        [tok.id_to_token(i) for i in range(vocab_size)],
    )


def load_pool(
    layout: paths.RunLayout,
    model: str,
    hook: str,
    n_tokens: int,
    n_contexts: int,
    seed: int,
    device: str = "cpu",
    batch_size: int = 16,
    ctx_len: int | None = None,
) -> HeldOutPool | None:
    """`n_contexts` random contexts of the first `n_tokens` held-out tokens (those the build streamed),
    through `model` (a run model's name, or a Hugging Face model's path or hf:NAME, with `ctx_len` as the
    build's) to `hook`; None when it cannot be run here (a database name with no model, no tokens)."""
    run_model = is_run_model(layout, model)
    if run_model and not (is_complete(layout.tokens) and (layout.transformer(model) / paths.CONFIG).is_file()):
        log.info("explain: %s at %s is not a run model with tokens here: stored examples only", model, hook)
        return None
    if not run_model and not Path(model.removeprefix(HF_PREFIX)).exists() and not model.startswith(HF_PREFIX):
        log.info("explain: no model to run for %s: stored examples only", model)
        return None
    device = str(pick_device(device))
    try:
        s = load_subject(layout, model, hook, device, ctx_len)
    except UserError as e:
        log.info("explain: cannot run %s (%s): stored examples only", model, e)
        return None
    store = TokenStore(s.tokens)
    if s.tokenizer is None or not is_complete(s.tokens):
        log.info("explain: %s has no tokenizer or tokens here: stored examples only", model)
        return None
    s.model.eval()
    ctx = held_out_contexts(store, s.ctx_len, max(n_tokens, s.ctx_len))
    rng = np.random.default_rng([seed, 8])  # the same contexts for every model of the run (A and its control)
    rows = np.sort(rng.choice(len(ctx.tokens), min(n_contexts, len(ctx.tokens)), replace=False))
    tokens = ctx.tokens[rows]
    parts = []
    for lo in range(0, len(tokens), batch_size):
        ids = torch.from_numpy(tokens[lo : lo + batch_size]).to(device)
        acts, _ = dictionary_activations(s.model, s.site.module, {}, ids, s.site.which)
        parts.append(acts.reshape(-1, acts.shape[-1]).cpu())
    return HeldOutPool(tokens, ctx.offsets[rows], torch.cat(parts), vocab_strings(s.tokenizer, store.vocab_size))
