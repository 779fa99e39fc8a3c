"""Feature ablations through a deep subject (a Hugging Face model): the whole forward, edited at the hook.

    cfg = AblationConfig(model=str(folder), hook="model.layers.0.mlp.down_proj:input")
    run_deep_ablation(conn, RunLayout(run), cfg)

ablation.py's shortcut finishes the forward only at the positions an edit touches, which holds for
the paper's one-layer model alone: in a deep model an edit at position p reaches every later position
through the later layers' attention. Here each example's context runs twice through the whole model,
clean and with the feature's contribution f_i(x)·d_i subtracted from the true activation at every
position (the paper's ablation, paper.md §8.4; for a neuron: zeroing it), and the two are compared:

- `examples.ablation_json`: log p_ablated − log p_clean of each window token (predicted at the token
  before it; the context's first token has no prediction: null);
- `ablations.mean_loss_delta`: the mean next-token loss change over the window tokens predicted at or
  after the first position where the feature fires in that context (before it nothing can change:
  the model is causal). Positive: the feature helps;
- promoted / suppressed tokens: the mean over the examples of log p_clean − log p_ablated of the next
  token at the max-activation token.

Two whole forwards per example is the cost (about 1 s each for SmolLM2-135M on 2 cores), so a deep
subject ablates a seeded sample of each dictionary's features (`AblationConfig.max_features`) on their
first top examples (`n_examples`); the others keep no ablation rows. Pinned samples (sampling with a
feature held at its max) are not drawn for a deep subject.
"""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from monosemantic.analyses.ablation import AblationConfig, FeatureAblation, write_ablations
from monosemantic.analyses.examples import Example, check_windows, read_examples, stream_slices
from monosemantic.analyses.loader import Dictionary, column_encoder, load_dictionaries
from monosemantic.data.tokens import TokenSplit, TokenStore
from monosemantic.eval.splice import replaced
from monosemantic.features.rows import display_tokens
from monosemantic.paths import RunLayout
from monosemantic.transformer.subject import ensure_tokens, load_subject

log = logging.getLogger(__name__)


def sample_examples(examples: list[Example], max_features: int, n_examples: int, seed: int) -> list[Example]:
    """The examples of a seeded sample of `max_features` features (0: all), the first `n_examples` of each."""
    feats = sorted({e.feature for e in examples})
    if max_features and len(feats) > max_features:
        feats = sorted(np.random.default_rng(seed).choice(feats, max_features, replace=False).tolist())
    keep, seen = set(feats), dict.fromkeys(feats, 0)
    out = []
    for e in examples:  # read_examples orders them by feature, then rank
        if e.feature in keep and (not n_examples or seen[e.feature] < n_examples):
            out.append(e)
            seen[e.feature] += 1
    return out


@torch.inference_mode()
def ablate_deep(
    model: nn.Module, hook: str, dictionary: Dictionary, examples: list[Example], split: TokenSplit, batch: int = 8
) -> dict[int, FeatureAblation]:
    """Ablate each example's feature in its own context, through the whole model; feature → `FeatureAblation`.

    `examples` may mix features; each is one row of a batch (`batch` rows, similar lengths together), edited
    with its own feature. The contexts run from their start to the end of the example's window.
    """
    device = next(model.parameters()).device
    feats = sorted({e.feature for e in examples})
    col = {f: k for k, f in enumerate(feats)}
    encode = column_encoder(dictionary, torch.tensor(feats))  # only these features' columns
    W = dictionary.W_dec[torch.tensor(feats)].float()  # [k, d]
    windows: dict[int, dict[int, list[float | None]]] = {f: {} for f in feats}
    touched: dict[int, dict[tuple[int, int], float]] = {f: {} for f in feats}
    effect: dict[int, Tensor] = {}
    count = dict.fromkeys(feats, 0)
    order = sorted(examples, key=lambda e: e.start + e.length)
    for lo in range(0, len(order), batch):
        rows = order[lo : lo + batch]
        T = max(e.start + e.length for e in rows)
        tokens = torch.from_numpy(stream_slices(split, np.array([e.ctx_offset for e in rows]), T)).to(device)
        k = torch.tensor([col[e.feature] for e in rows])
        fired: list[Tensor] = []

        def ablate(a: Tensor, k: Tensor = k, fired: list[Tensor] = fired) -> Tensor:  # [B, T, d]
            f = encode(a.reshape(-1, a.shape[-1]).float().cpu()).view(a.shape[0], a.shape[1], -1)  # [B, T, k']
            f_row = f.gather(2, k[:, None, None].expand(-1, a.shape[1], 1))  # [B, T, 1]: each row's own feature
            fired.append(f_row[..., 0] > 0)
            return a - (f_row * W[k][:, None, :]).to(a.device, a.dtype)

        clean = F.log_softmax(model(tokens).float(), dim=-1)  # [B, T, vocab]
        with replaced(model, hook, ablate):
            abl = F.log_softmax(model(tokens).float(), dim=-1)
        nxt = tokens[:, 1:, None]
        delta = (abl[:, :-1].gather(2, nxt) - clean[:, :-1].gather(2, nxt))[..., 0].cpu()  # [B, T-1]: at p-1 for p
        for r, e in enumerate(rows):
            active = fired[0][r].nonzero()
            first = int(active[0]) if len(active) else T  # the edit changes nothing before it
            vals: list[float | None] = []
            for p in range(e.start, e.start + e.length):
                vals.append(None if p == 0 else float(delta[r, p - 1]))
                if p > 0 and p - 1 >= first:
                    touched[e.feature][(e.ctx_offset, p - 1)] = float(delta[r, p - 1])
            windows[e.feature][e.rowid] = vals
            diff = (clean[r, e.ctx_pos] - abl[r, e.ctx_pos]).cpu()  # [vocab]: what the feature promotes there
            effect[e.feature] = effect[e.feature] + diff if e.feature in effect else diff
            count[e.feature] += 1
    return {
        f: FeatureAblation(
            windows[f],
            -float(np.mean(list(touched[f].values()))) if touched[f] else 0.0,
            effect[f] / count[f],
        )
        for f in feats
    }


def run_deep_ablation(
    conn: sqlite3.Connection, layout: RunLayout, cfg: AblationConfig, progress: bool = True
) -> dict[str, dict[str, int]]:
    """Ablations of a sample of each dictionary's features of Hugging Face subject `cfg.model` at `cfg.hook`;
    writes `ablations` and `examples.ablation_json` for them (replacing earlier rows). Counts per dictionary."""
    s = load_subject(layout, cfg.model, cfg.hook, ctx_len=cfg.ctx_len)
    s.model.eval()
    assert s.tokenizer is not None  # a Hugging Face subject always has its tokenizer
    store = TokenStore(ensure_tokens(layout, s, progress=progress))
    vocab = display_tokens(
        s.tokenizer.decode_batch([[i] for i in range(store.vocab_size)], skip_special_tokens=False),
        [s.tokenizer.id_to_token(i) for i in range(store.vocab_size)],
    )
    out = {}
    for d in load_dictionaries(conn, layout, s.key, cfg.hook, names=cfg.dictionaries):
        every = read_examples(conn, d.id, cfg.example_kinds)
        check_windows(every, s.ctx_len)
        chosen = sample_examples(every, cfg.max_features, cfg.n_examples, cfg.seed + d.id)
        conn.execute("DELETE FROM ablations WHERE dictionary_id = ?", (d.id,))
        conn.execute("UPDATE examples SET ablation_json = NULL WHERE dictionary_id = ?", (d.id,))
        results: dict[int, FeatureAblation] = {}
        feats = sorted({e.feature for e in chosen})
        for lo in tqdm(range(0, len(feats), 4), desc=f"ablate {d.name}", unit="feature", disable=not progress):
            part = set(feats[lo : lo + 4])
            # at most 4 contexts a forward: the logits alone are rows × 256 × vocabulary floats (200 MB for SmolLM2)
            results |= ablate_deep(s.model, cfg.hook, d, [e for e in chosen if e.feature in part], store.val,
                                   min(cfg.batch_contexts, 4))  # fmt: skip
        n = write_ablations(conn, d.id, results, vocab, cfg.n_logit_tokens)
        conn.commit()
        log.info("ablations: %s: %d of %d features, %d examples, through the whole model", d.name, n,
                 len({e.feature for e in every}), len(chosen))  # fmt: skip
        out[d.name] = {"ablated": n}
    return out
