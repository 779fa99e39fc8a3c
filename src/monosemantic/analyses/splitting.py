"""Feature splitting across a ladder of dictionary sizes (paper.md §8.11 "Feature Splitting", paper.md §8.11).

    monosemantic features split --run runs/default          # also writes logit_links (automata.py)

Features of two dictionaries trained on the same activations are matched by the paper's masked
activation cosine (footnote 32): the cosine of the two features' activations over the tokens where
one of them fires, and again over the tokens where the other fires; the larger of the two. A link
above ~0.4 joins a parent (smaller dictionary) to a child (larger one). Ultralow-density features
(`features.density` below `min_density`) are left out, as in the paper.

Exact and memory-bounded: with S_a = {t : f_a(t) > 0} and f_a = 0 off S_a,

    Σ_{S_a} f_a f_b = Σ_t f_a f_b                       = G[a, b]
    Σ_{S_a} f_a²    = Σ_t f_a²                          = q_a[a]
    Σ_{S_a} f_b²    = Σ_t [f_a > 0] f_b²                = M1[a, b]
    cos over S_a    = G / sqrt(q_a · M1);   over S_b: G / sqrt(M2 · q_b),  M2 = Σ_t f_a² [f_b > 0]

so three dense `[n_small, n_large]` accumulators suffice. Features are sparse (L0 ~ 10–30), so each
batch adds only the pairs that fire on the same token (`pair_products`), not a dense matmul.
The decoder cosine of every stored link is written beside it.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from monosemantic.activations.capture import capture
from monosemantic.analyses import automata
from monosemantic.analyses.loader import Dictionary, column_encoder, load_dictionaries
from monosemantic.data.tokens import TokenStore
from monosemantic.features import db
from monosemantic.features.stream import held_out_contexts
from monosemantic.paths import RunLayout
from monosemantic.transformer import hooks
from monosemantic.transformer.subject import ensure_tokens, load_subject, subject_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """Which ladder to match, on how many held-out tokens, and where to draw a link."""

    model: str = "A"
    """Model whose dictionaries are matched: a run model, or a Hugging Face one (path or hf:NAME, as --model)."""
    hook: str = hooks.MLP_POST
    """Hook the dictionaries read."""
    dictionaries: tuple[str, ...] = ()
    """SAE names forming the ladder; empty = every SAE of the model at the hook."""
    n_tokens: int = 1_000_000
    """Held-out tokens the masked cosines are computed on."""
    ctx_len: int = 256
    """Context length of the held-out contexts (at most the model's)."""
    batch_contexts: int = 32
    """Contexts per forward pass."""
    threshold: float = 0.4
    """Draw a link when the masked activation cosine exceeds this (TM footnote 32: ~0.4)."""
    min_density: float = 1e-6
    """Leave out features with density below this (the paper omits ultralow-density features)."""
    n_links: int = 10
    """Automata: how many target features to store per feature (`logit_links`)."""

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        for name in ("n_tokens", "ctx_len", "batch_contexts", "n_links"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


# -- the math -----------------------------------------------------------------------------------


def pair_sums_dense(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Plain version: `a [N, n_a]`, `b [N, n_b]` → (G, M1, M2), each `[n_a, n_b]` (module docstring)."""
    a, b = a.double(), b.double()
    return a.T @ b, (a > 0).double().T @ b**2, (a**2).T @ (b > 0).double()


def pair_products(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (i, j, t) with a[t, i] > 0 and b[t, j] > 0: returns `(i, j, a[t, i], b[t, j])`, each `[P]`.

    A join on t of the two sparsity patterns: each nonzero of `a` is repeated once per nonzero of `b`
    on the same row.
    """
    ta, ia = a.nonzero(as_tuple=True)
    tb, ib = b.nonzero(as_tuple=True)  # row-major: each row's nonzeros are contiguous
    nb = torch.bincount(tb, minlength=a.shape[0])
    start_b = torch.cumsum(nb, 0) - nb
    cnt = nb[ta]
    rep = torch.repeat_interleave(torch.arange(len(ta)), cnt)
    first = torch.cumsum(cnt, 0) - cnt
    jb = start_b[ta[rep]] + torch.arange(len(rep)) - torch.repeat_interleave(first, cnt)
    return ia[rep], ib[jb], a[ta, ia][rep], b[tb, ib][jb]


class PairSums:
    """Running G, M1, M2 (flattened, float64) and q_a, q_b over batches of two dictionaries' activations."""

    def __init__(self, n_a: int, n_b: int, max_pairs: int = 4_000_000):
        self.n_a, self.n_b, self.max_pairs = n_a, n_b, max_pairs
        self.sums = torch.zeros(n_a * n_b, 3, dtype=torch.float64)  # columns: G, M1, M2
        self.q_a = torch.zeros(n_a, dtype=torch.float64)
        self.q_b = torch.zeros(n_b, dtype=torch.float64)

    def update(self, a: Tensor, b: Tensor) -> None:
        """Add `a [N, n_a]`, `b [N, n_b]` (same tokens, f ≥ 0), in row chunks of bounded pair count."""
        self.q_a += (a.double() ** 2).sum(0)
        self.q_b += (b.double() ** 2).sum(0)
        per_row = max(1, int(((a > 0).sum(1) * (b > 0).sum(1)).max()) if len(a) else 1)
        step = max(1, self.max_pairs // per_row)
        for lo in range(0, len(a), step):
            i, j, va, vb = pair_products(a[lo : lo + step], b[lo : lo + step])
            va, vb = va.double(), vb.double()
            self.sums.index_add_(0, i * self.n_b + j, torch.stack([va * vb, vb**2, va**2], 1))

    def matrices(self) -> tuple[Tensor, Tensor, Tensor]:
        """(G, M1, M2), each `[n_a, n_b]`."""
        s = self.sums.view(self.n_a, self.n_b, 3)
        return s[..., 0], s[..., 1], s[..., 2]


def masked_cosine(G: Tensor, M1: Tensor, M2: Tensor, q_a: Tensor, q_b: Tensor) -> Tensor:
    """The paper's similarity `[n_a, n_b]`: max(cos over S_a, cos over S_b); 0 where neither is defined."""
    cos_a = G / torch.sqrt(q_a[:, None] * M1)
    cos_b = G / torch.sqrt(M2 * q_b[None, :])
    return torch.maximum(cos_a.nan_to_num(0.0), cos_b.nan_to_num(0.0))


def decoder_cosine(W_a: Tensor, W_b: Tensor) -> Tensor:
    """`[n_a, d]`, `[n_b, d]` → cosine of every pair of rows `[n_a, n_b]`."""
    return torch.nn.functional.normalize(W_a.float(), dim=1) @ torch.nn.functional.normalize(W_b.float(), dim=1).T


def row_cosine(A: Tensor, B: Tensor) -> Tensor:
    """`[P, d]`, `[P, d]` → cosine of each row pair `[P]`."""
    return (torch.nn.functional.normalize(A.float(), dim=1) * torch.nn.functional.normalize(B.float(), dim=1)).sum(1)


# -- the stage ----------------------------------------------------------------------------------


def ladder_pairs(sizes: list[int]) -> list[tuple[int, int]]:
    """Index pairs to match: consecutive sizes, plus smallest → largest (when that is not consecutive)."""
    pairs = [(k, k + 1) for k in range(len(sizes) - 1)]
    if len(sizes) > 2:
        pairs.append((0, len(sizes) - 1))
    return pairs


def kept_features(conn: sqlite3.Connection, dictionary_id: int, min_density: float) -> Tensor:
    """Feature indices of a dictionary with density ≥ min_density (and > 0)."""
    rows = conn.execute(
        "SELECT feature FROM features WHERE dictionary_id = ? AND density >= ? AND density > 0 ORDER BY feature",
        (dictionary_id, min_density),
    ).fetchall()
    return torch.tensor([r[0] for r in rows], dtype=torch.int64)


def match_ladder(
    conn: sqlite3.Connection, layout: RunLayout, dicts: list[Dictionary], cfg: SplitConfig, progress: bool = True
) -> int:
    """Stream held-out tokens once, accumulate every ladder pair, write `splits`. Returns the link count."""
    subj = load_subject(layout, cfg.model, cfg.hook)
    subj.model.eval()
    kept = [kept_features(conn, d.id, cfg.min_density) for d in dicts]
    encoders = [column_encoder(d, k) for d, k in zip(dicts, kept, strict=True)]
    pairs = ladder_pairs([d.n_features for d in dicts])
    sums = {(p, c): PairSums(len(kept[p]), len(kept[c])) for p, c in pairs}
    ctx_len = min(cfg.ctx_len, subj.ctx_len)
    ctx = held_out_contexts(TokenStore(ensure_tokens(layout, subj, progress=progress)), ctx_len, cfg.n_tokens)
    device, site = next(subj.model.parameters()).device, subj.site
    with torch.inference_mode():
        for lo, hi in tqdm(list(ctx.batches(cfg.batch_contexts)), desc="split", unit="batch", disable=not progress):
            acts = capture(subj.model, torch.from_numpy(ctx.tokens[lo:hi]).to(device), site.module, site.which)
            flat = acts.reshape(-1, acts.shape[-1]).float().cpu()
            f = [enc(flat) for enc in encoders]
            for (p, c), s in sums.items():
                s.update(f[p], f[c])
    for d in dicts:
        conn.execute("DELETE FROM splits WHERE parent_dictionary_id = ? OR child_dictionary_id = ?", (d.id, d.id))
    n = 0
    for (p, c), s in sums.items():
        sim = masked_cosine(*s.matrices(), s.q_a, s.q_b)
        ia, ib = torch.nonzero(sim > cfg.threshold, as_tuple=True)
        dec = row_cosine(dicts[p].W_dec[kept[p][ia]], dicts[c].W_dec[kept[c][ib]])
        n += db.insert_rows(
            conn,
            "splits",
            (
                {
                    "parent_dictionary_id": dicts[p].id,
                    "parent_feature": int(kept[p][a]),
                    "child_dictionary_id": dicts[c].id,
                    "child_feature": int(kept[c][b]),
                    "act_cosine": round(float(sim[a, b]), 5),
                    "dec_cosine": round(float(dec[k]), 5),
                }
                for k, (a, b) in enumerate(zip(ia.tolist(), ib.tolist(), strict=True))
            ),
        )
        log.info("%s -> %s: %d links", dicts[p].name, dicts[c].name, len(ia))
    conn.commit()
    return n


def run_split(conn: sqlite3.Connection, layout: RunLayout, cfg: SplitConfig, progress: bool = True) -> dict:
    """Splits across the ladder of SAEs, and the automata links of every dictionary; returns counts."""
    key = subject_key(layout, cfg.model)  # the database's name of the model (hf-<name> for a HF model)
    saes = load_dictionaries(conn, layout, key, cfg.hook, kinds=("sae",), names=cfg.dictionaries)
    out = {"splits": match_ladder(conn, layout, saes, cfg, progress) if len(saes) > 1 else 0}
    if len(saes) < 2:
        log.warning("feature splitting needs two dictionaries or more; found %d", len(saes))
    every = load_dictionaries(conn, layout, key, cfg.hook)
    out["logit_links"] = automata.run_automata(conn, layout, cfg.model, every, cfg.n_links, progress, cfg.hook)
    return out
