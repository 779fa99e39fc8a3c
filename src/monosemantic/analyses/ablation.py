"""Feature ablations on each feature's top contexts (the paper's appendix "Feature Ablations", paper.md §8.4).

    monosemantic features ablate --run runs/default          # also writes pinned samples (pinned.py)

For every feature with top examples in the database: re-run each example's context (its
`ctx_offset` in the validation stream, up to the end of its display window), subtract the feature's
contribution f_i(x)·d_i from the *true* MLP activation x on every token (not the reconstruction:
the paper's choice, so the SAE's error term stays in), finish the forward, and store

- `examples.ablation_json`: for each window token, log p_ablated − log p_clean of that token
  (negative: the feature helped predict it; the paper's blue underline). The first token of a
  context has no prediction (null).
- `ablations.mean_loss_delta`: the mean change in next-token loss (nats) over the window tokens
  whose prediction the ablation touches (those after a token where the feature fires; every other
  token changes by exactly 0 in a one-layer model, `forward.py`). Positive: the feature helps.
- `ablations.promoted_json` / `suppressed_json`: the feature's effect on the next-token
  distribution at its max-activation tokens, mean of log p_clean − log p_ablated over the top
  examples, as `[[decoded token, value], ...]`.

Neurons are ablated the same way (f = the neuron, d = its basis vector: ablation zeroes it).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from tqdm import tqdm

from monosemantic.analyses import forward, pinned
from monosemantic.analyses.examples import Example, check_windows, read_examples, stream_slices
from monosemantic.analyses.loader import Dictionary, column_encoder, load_dictionaries
from monosemantic.data.tokenizer import EOT, load_tokenizer
from monosemantic.data.tokens import TokenSplit, TokenStore
from monosemantic.features import db
from monosemantic.paths import TOKENIZER_JSON, RunLayout
from monosemantic.transformer import hooks
from monosemantic.transformer.model import Transformer, load_transformer

log = logging.getLogger(__name__)

Forwards = tuple[Tensor, Tensor, Tensor, np.ndarray]
"""Contexts already run: tokens `[C, T]`, activations `[C, T, d_mlp]`, residual stream `[C, T, d_model]`
and, for each example, its context's row."""


@dataclass(frozen=True)
class AblationConfig:
    """Which dictionaries and features to ablate and pin, and how."""

    model: str = "A"
    """Model whose dictionaries are analysed (the folder under RUN/transformer)."""
    hook: str = hooks.MLP_POST
    """Hook the dictionaries read."""
    dictionaries: tuple[str, ...] = ()
    """Dictionary names (as in the database); empty = all of the model's at the hook."""
    example_kinds: tuple[str, ...] = ("top",)
    """Example kinds to ablate ('top', 'interval', 'random')."""
    n_logit_tokens: int = 10
    """How many promoted and suppressed next tokens to store per feature."""
    batch_contexts: int = 64
    """Contexts per batch (whole features at a time; memory about batch_contexts × 256 × (d_mlp + d_model) floats)."""
    cache_mb: int = 2048
    """Run every distinct example context once and keep its activations for all batches and
    dictionaries when that takes at most this many MB (float32); beyond it, each batch runs its own
    contexts. 0 disables the cache."""
    pinned: bool = True
    """Also write pinned samples (`pinned` table, paper.md §8.4: the feature held at its max while sampling)."""
    prompt: str = "1,2,3,4,5,6,7,8,9,10"
    """Pinned-sampling prompt (the paper's: the Arabic feature turns it into Arabic-like text)."""
    n_samples: int = 3
    """Pinned samples per feature."""
    n_new_tokens: int = 24
    """Tokens sampled per pinned sample."""
    temperature: float = 1.0
    """Sampling temperature."""
    seed: int = 0
    """Seed of the pinned samples' random numbers (one stream per feature, so batching does not matter), and of a
    deep subject's feature sample."""
    max_features: int = 8
    """A Hugging Face (deep) subject only: features ablated per dictionary, a seeded sample of those with examples
    (each costs two whole forwards per example, ablation_deep.py); 0 = all. A run model ablates every feature."""
    n_examples: int = 3
    """A Hugging Face subject only: top examples ablated per sampled feature; 0 = all."""
    ctx_len: int | None = None
    """Context length of a Hugging Face subject: the build's (default 256)."""

    def __post_init__(self) -> None:
        for name in ("n_logit_tokens", "batch_contexts", "n_samples", "n_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {self.cache_mb}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        bad = set(self.example_kinds) - {"top", "interval", "random"}
        if bad:
            raise ValueError(f"example_kinds: unknown kind {', '.join(sorted(bad))}")


@dataclass(frozen=True)
class FeatureAblation:
    """What `ablate_features` finds for one feature."""

    window_deltas: dict[int, list[float | None]]
    """examples rowid → Δ log p of each window token (None: the context's first token)."""
    mean_loss_delta: float
    """Mean next-token loss change (nats) over the window tokens the ablation touches; 0 if none."""
    mean_effect: Tensor
    """`[vocab]` mean of log p_clean − log p_ablated at the max tokens (what the feature promotes)."""


@torch.inference_mode()
def ablate_features(
    model: Transformer,
    dictionary: Dictionary,
    examples: list[Example],
    contexts: np.ndarray | None,
    hook: str = hooks.MLP_POST,
    forwards: Forwards | None = None,
) -> dict[int, FeatureAblation]:
    """Ablate each example's feature on its context (one forward for all of them).

    Args:
        examples: examples of any features of `dictionary`; `examples[k]` reads `contexts[k]`.
        contexts: int64 `[len(examples), T]` tokens of each example's context, T ≥ every window end.
        forwards: the contexts already run (`ContextCache.forwards`); then `contexts` is not read.

    Returns: feature → its `FeatureAblation`.
    """
    if forwards is None:
        if contexts is None:
            raise ValueError("ablate_features needs the contexts or their forwards")
        uniq, row_of = np.unique(contexts, axis=0, return_inverse=True)
        row_of = row_of.reshape(-1)
        ends = [0] * len(uniq)  # each context runs up to the end of its last window
        for k, e in enumerate(examples):
            ends[row_of[k]] = max(ends[row_of[k]], e.start + e.length)
        tokens = torch.from_numpy(uniq)
        acts, resid = _forward_by_length(model, tokens, ends, hook)  # [C, T, d_mlp], [C, T, d_model]
    else:
        tokens, acts, resid, row_of = forwards
    feats = sorted({e.feature for e in examples})
    col = {f: k for k, f in enumerate(feats)}
    fi = torch.tensor(feats)
    flat = acts.reshape(-1, acts.shape[-1]).float()
    encode = column_encoder(dictionary, fi)  # only the batch's features
    f_sel = torch.cat([encode(flat[r : r + 4096]) for r in range(0, len(flat), 4096)])
    f_sel = f_sel.view(*acts.shape[:2], len(feats))  # [C, T, k]
    f_np = f_sel.numpy()  # the loops below index it element by element
    writes = forward.mlp_out_directions(model, dictionary.W_dec[fi].float())  # [k, d_model]

    # Every (feature, context, position) whose logits the ablation changes: active positions that
    # predict a window token, plus each example's max token (for the promoted/suppressed tokens).
    need: dict[tuple[int, int, int], None] = {}
    at_max: dict[tuple[int, int, int], int] = {}  # max-token key -> how many examples have it
    for k, e in enumerate(examples):
        c, j = int(row_of[k]), col[e.feature]
        for q in range(max(e.start - 1, 0), e.start + e.length - 1):
            if f_np[c, q, j] > 0:
                need[(j, c, q)] = None
        need[(j, c, e.ctx_pos)] = None
        at_max[(j, c, e.ctx_pos)] = at_max.get((j, c, e.ctx_pos), 0) + 1
    keys = list(need)
    delta_next: dict[tuple[int, int, int], float] = {}
    effect_sum = torch.zeros(len(feats), model.cfg.vocab_size)  # Σ over max tokens of log p_clean − log p_ablated
    T = tokens.shape[1]
    for lo in range(0, len(keys), 512):
        chunk = keys[lo : lo + 512]
        js, cs, qs = (torch.tensor(v) for v in zip(*chunk, strict=True))  # [P] each: feature column, context, position
        clean = resid[cs, qs]  # [P, d_model]
        ablated = clean - f_sel[cs, qs, js][:, None] * writes[js]  # forward.py: resid' = resid − f·(d @ W_out)
        lp_clean, lp_abl = forward.log_probs(model, clean), forward.log_probs(model, ablated)
        nxt = tokens[cs, torch.clamp(qs + 1, max=T - 1)]
        d = (lp_abl.gather(1, nxt[:, None]) - lp_clean.gather(1, nxt[:, None]))[:, 0]
        delta_next.update(zip(chunk, d.tolist(), strict=True))
        rows = [p for p, key in enumerate(chunk) if key in at_max]
        mult = torch.tensor([float(at_max[chunk[p]]) for p in rows])
        effect_sum.index_add_(0, js[rows], (lp_clean[rows] - lp_abl[rows]) * mult[:, None])

    out: dict[int, FeatureAblation] = {}
    for f in feats:
        j = col[f]
        mine = [(k, e) for k, e in enumerate(examples) if e.feature == f]
        windows: dict[int, list[float | None]] = {}
        touched: dict[tuple[int, int], float] = {}
        for k, e in mine:
            c = int(row_of[k])
            vals: list[float | None] = []
            for p in range(e.start, e.start + e.length):
                if p == 0:
                    vals.append(None)
                elif f_np[c, p - 1, j] > 0:
                    vals.append(delta_next[(j, c, p - 1)])
                    touched[(c, p - 1)] = delta_next[(j, c, p - 1)]
                else:
                    vals.append(0.0)
            windows[e.rowid] = vals
        mean_loss = -float(np.mean(list(touched.values()))) if touched else 0.0
        out[f] = FeatureAblation(windows, mean_loss, effect_sum[j] / len(mine))
    return out


class ContextCache:
    """Each distinct example context run once, shared by every batch and dictionary.

    A dictionary's top examples come from a few contexts (the demo's 262,144 held-out tokens are
    1,024 contexts, read by 20 examples of each of 8,192 features), so running the contexts per
    batch repeats the same forwards many times over. The model is causal, so a context run to the
    end of its last window gives the same activations as the shorter runs a batch would make.
    """

    def __init__(self, model: Transformer, split: TokenSplit, examples: list[Example], hook: str):
        ends: dict[int, int] = {}
        for e in examples:
            ends[e.ctx_offset] = max(ends.get(e.ctx_offset, 0), e.start + e.length)
        self.offsets = sorted(ends)
        self.row = {off: r for r, off in enumerate(self.offsets)}
        T = max(ends.values())
        self.tokens = torch.from_numpy(stream_slices(split, np.array(self.offsets, dtype=np.int64), T))
        self.acts, self.resid = _forward_by_length(model, self.tokens, [ends[o] for o in self.offsets], hook)

    @staticmethod
    def nbytes(model: Transformer, examples: list[Example]) -> int:
        """What the cache of `examples`' contexts holds, in bytes (float32 activations and residuals)."""
        n = len({e.ctx_offset for e in examples})
        T = max((e.start + e.length for e in examples), default=0)
        return n * T * (model.cfg.d_mlp + model.cfg.d_model) * 4

    def forwards(self, examples: list[Example]) -> Forwards:
        """`(tokens, acts, resid, row_of)` of the contexts `examples` read, for `ablate_features`."""
        rows = sorted({self.row[e.ctx_offset] for e in examples})
        local = {r: k for k, r in enumerate(rows)}
        row_of = np.array([local[self.row[e.ctx_offset]] for e in examples])
        idx, T = torch.tensor(rows), max(e.start + e.length for e in examples)  # as a batch of its own would
        return self.tokens[idx, :T], self.acts[idx, :T], self.resid[idx, :T], row_of


def _forward_by_length(
    model: Transformer, tokens: Tensor, ends: list[int], hook: str, group: int = 32
) -> tuple[Tensor, Tensor]:
    """`forward.to_resid` of `tokens [C, T]`, each context only up to its `ends[c]` (zeros after).

    Contexts are run in groups of similar length, so a batch whose windows mostly end early does
    not pay for the longest one (the top examples' max tokens sit anywhere in the context).
    """
    C, T = tokens.shape
    acts = torch.zeros(C, T, model.cfg.d_mlp)
    resid = torch.zeros(C, T, model.cfg.d_model)
    order = np.argsort(ends, kind="stable")
    for lo in range(0, C, group):
        rows = torch.from_numpy(order[lo : lo + group].copy())
        t = max(ends[int(r)] for r in rows)
        a, r_ = forward.to_resid(model, tokens[rows, :t], hook)
        acts[rows, :t], resid[rows, :t] = a.float(), r_.float()
    return acts, resid


def _batches(examples: list[Example], batch_contexts: int) -> list[list[Example]]:
    """Whole features' examples grouped so each batch holds at most ~batch_contexts contexts."""
    by_feature: dict[int, list[Example]] = {}
    for e in examples:
        by_feature.setdefault(e.feature, []).append(e)
    batches: list[list[Example]] = []
    cur: list[Example] = []
    for group in by_feature.values():
        if cur and len(cur) + len(group) > batch_contexts:
            batches.append(cur)
            cur = []
        cur = cur + group
    if cur:
        batches.append(cur)
    return batches


def token_list(decode: list[str], values: Tensor, k: int, largest: bool) -> list[list[str | float]]:
    """The `k` largest (or smallest) entries of `values [vocab]` as `[[decoded token, value], ...]`."""
    top = torch.topk(values, k=min(k, len(values)), largest=largest)
    return [[decode[int(i)], round(float(v), 4)] for v, i in zip(top.values, top.indices, strict=True)]


def ablate_dictionary(
    conn: sqlite3.Connection,
    model: Transformer,
    dictionary: Dictionary,
    examples: list[Example],
    split: TokenSplit,
    vocab: list[str],
    cfg: AblationConfig,
    progress: bool = True,
    cache: ContextCache | None = None,
) -> int:
    """Ablate every feature of `dictionary` that has `examples` (its `read_examples`, windows checked
    by `check_windows`); write its `ablations` rows and `examples.ablation_json`, replacing earlier
    ones. Returns the number of features ablated. With `cache` (holding every context the examples
    read), no context is run again."""
    if not examples:
        log.warning("%s: no examples in the feature database; nothing to ablate", dictionary.name)
        return 0
    conn.execute("DELETE FROM ablations WHERE dictionary_id = ?", (dictionary.id,))
    conn.execute("UPDATE examples SET ablation_json = NULL WHERE dictionary_id = ?", (dictionary.id,))
    n = 0
    batches = _batches(examples, cfg.batch_contexts)
    for batch in tqdm(batches, desc=f"ablate {dictionary.name}", unit="batch", disable=not progress):
        if cache is not None:
            results = ablate_features(model, dictionary, batch, None, cfg.hook, cache.forwards(batch))
        else:
            T = max(e.start + e.length for e in batch)
            contexts = stream_slices(split, np.array([e.ctx_offset for e in batch]), T)
            results = ablate_features(model, dictionary, batch, contexts, cfg.hook)
        n += write_ablations(conn, dictionary.id, results, vocab, cfg.n_logit_tokens)
    conn.commit()
    return n


def write_ablations(
    conn: sqlite3.Connection, dictionary_id: int, results: dict[int, FeatureAblation], vocab: list[str], n_tokens: int
) -> int:
    """The `ablations` rows of `results` and their examples' `ablation_json`; returns the row count."""
    rows, updates = [], []
    for f, r in results.items():
        rows.append(
            {
                "dictionary_id": dictionary_id,
                "feature": f,
                "mean_loss_delta": r.mean_loss_delta,
                "promoted_json": token_list(vocab, r.mean_effect, n_tokens, largest=True),
                "suppressed_json": token_list(vocab, r.mean_effect, n_tokens, largest=False),
            }
        )
        for rowid, vals in r.window_deltas.items():
            rounded = [None if v is None else round(v, 4) for v in vals]
            updates.append((json.dumps(rounded), rowid))
    db.insert_rows(conn, "ablations", rows)
    conn.executemany("UPDATE examples SET ablation_json = ? WHERE rowid = ?", updates)
    return len(rows)


def pin_dictionary(
    conn: sqlite3.Connection,
    model: Transformer,
    dictionary: Dictionary,
    prompt: Tensor,
    decode: Callable[[list[int]], str],
    cfg: AblationConfig,
    progress: bool = True,
) -> int:
    """Pinned samples of every feature of `dictionary` that ever fired (`features.max_act` > 0);
    replaces its `pinned` rows. Returns the number of features sampled."""
    rows = conn.execute(
        "SELECT feature, max_act FROM features WHERE dictionary_id = ? AND max_act > 0 ORDER BY feature",
        (dictionary.id,),
    ).fetchall()
    conn.execute("DELETE FROM pinned WHERE dictionary_id = ?", (dictionary.id,))
    per_batch = max(1, 256 // cfg.n_samples)  # ~256 sequences per forward
    for lo in tqdm(range(0, len(rows), per_batch), desc=f"pin {dictionary.name}", disable=not progress):
        chunk = rows[lo : lo + per_batch]
        feats = torch.tensor([f for f, _ in chunk]).repeat_interleave(cfg.n_samples)
        vals = torch.tensor([v for _, v in chunk]).repeat_interleave(cfg.n_samples)
        u = torch.cat([pinned.uniforms(cfg.seed, f, cfg.n_samples, cfg.n_new_tokens) for f, _ in chunk])
        edit = pinned.pin_edit(dictionary, feats, vals.float(), last_only=True)
        out = pinned.sample(model, prompt, u, cfg.temperature, edit, cfg.hook)
        db.insert_rows(
            conn,
            "pinned",
            (
                {
                    "dictionary_id": dictionary.id,
                    "feature": int(feats[b]),
                    "rank": b % cfg.n_samples,
                    "value": float(vals[b]),
                    "prompt": cfg.prompt,
                    "sample": decode(out[b].tolist()),
                }
                for b in range(len(feats))
            ),
        )
    conn.commit()
    return len(rows)


def prompt_ids(tok: Tokenizer, prompt: str) -> Tensor:
    """The prompt as the model sees a document start: EOT (the separator before every document) + its tokens."""
    return torch.tensor([tok.token_to_id(EOT), *tok.encode(prompt).ids], dtype=torch.int64)


def run_ablation(conn: sqlite3.Connection, layout: RunLayout, cfg: AblationConfig, progress: bool = True) -> dict:
    """Ablations (and, with `cfg.pinned`, pinned samples) for the database's dictionaries of
    `cfg.model` at `cfg.hook`; writes `ablations`, `examples.ablation_json`, `pinned`, and the
    unpinned baseline samples as summary `pinned_baseline`. Returns counts per dictionary. For a Hugging Face
    subject see `ablation_deep.run_deep_ablation`."""
    model = load_transformer(layout.transformer(cfg.model)).eval()
    tok = load_tokenizer(layout.tokenizer / TOKENIZER_JSON)
    vocab = [tok.decode([i], skip_special_tokens=False) for i in range(model.cfg.vocab_size)]
    split = TokenStore(layout.tokens).val
    dicts = load_dictionaries(conn, layout, cfg.model, cfg.hook, names=cfg.dictionaries)
    prompt = prompt_ids(tok, cfg.prompt)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False)

    examples = {d.id: read_examples(conn, d.id, cfg.example_kinds) for d in dicts}
    every = [e for ex in examples.values() for e in ex]
    check_windows(every, model.cfg.ctx_len)
    cache = None
    if every and ContextCache.nbytes(model, every) <= cfg.cache_mb * 1e6:
        cache = ContextCache(model, split, every, cfg.hook)
    elif every and cfg.cache_mb > 0:
        log.info("ablations: the contexts' activations exceed --cache-mb %d; each batch runs its own", cfg.cache_mb)
    out: dict[str, dict[str, int]] = {}
    for d in dicts:
        ablated = ablate_dictionary(conn, model, d, examples[d.id], split, vocab, cfg, progress, cache)
        out[d.name] = {"ablated": ablated}
        if cfg.pinned:
            out[d.name]["pinned"] = pin_dictionary(conn, model, d, prompt, decode, cfg, progress)
    if cfg.pinned:
        u = pinned.uniforms(cfg.seed, -1, cfg.n_samples, cfg.n_new_tokens)
        base = pinned.sample(model, prompt, u, cfg.temperature, None, cfg.hook)
        db.set_summary(conn, "pinned_baseline", {"prompt": cfg.prompt, "samples": [decode(s.tolist()) for s in base]})
        conn.commit()
    return out
