"""The sparse step's building blocks against their plain references: the TopK pre-filter
(`sparse_ops.topk_columns`) against `torch.topk`, on random and adversarial rows; the transpose
against the dense one.

Parity means the same column set in every row, ties included: rows whose k-th value is tied are
redone with `torch.topk`, so they must come out exactly as `torch.topk` picks them.
"""

from __future__ import annotations

import pytest
import torch

from monosemantic.sae import sparse_ops as ops


def _same_as_torch(pre: torch.Tensor, k: int) -> None:
    got, want = ops.topk_columns(pre, k), ops.plain_topk_columns(pre, k)
    assert got.dtype == torch.int64 and got.shape == want.shape
    bad = (got != want).any(1).nonzero().squeeze(1).tolist()
    assert not bad, f"rows {bad[:5]} differ: {got[bad[0]].tolist()} vs {want[bad[0]].tolist()}"


@pytest.mark.parametrize(
    ("batch", "n", "k"), [(64, 1024, 8), (33, 4096, 32), (50, 1000, 7), (16, 2051, 16), (8, 300, 4)]
)
def test_random_rows_match_torch_topk(batch: int, n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(n + k)
    scale = torch.rand(batch, 1, generator=gen) * 3 + 0.1  # rows of different spread, as inputs of different norm
    bias = torch.randn(n, generator=gen) * 0.5  # some features fire more often than others
    _same_as_torch(torch.randn(batch, n, generator=gen) * scale + bias, k)


def test_the_prefilter_path_runs_without_torch_topk(monkeypatch: pytest.MonkeyPatch) -> None:
    """On untied rows no row is redone: the answer comes from the pre-filter alone."""
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(64, 2048, generator=gen)
    want = ops.plain_topk_columns(pre, 16)

    def no_topk(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.topk was called")

    monkeypatch.setattr(torch.Tensor, "topk", no_topk)
    assert torch.equal(ops.topk_columns(pre, 16), want)


@pytest.mark.parametrize("levels", [2, 3, 5, 50])
def test_heavily_tied_rows_match_torch_topk(levels: int) -> None:
    """Values from a few levels: the k-th value is tied in most rows, and group maxima tie at τ."""
    gen = torch.Generator().manual_seed(levels)
    pre = torch.randint(0, levels, (40, 1024), generator=gen).float()
    _same_as_torch(pre, 8)
    _same_as_torch(-pre, 8)


def test_a_tie_at_the_kth_value_inside_one_group_matches_torch_topk() -> None:
    """Distinct group maxima, but the k-th value appears twice in one group: only the k-th-value check sees it."""
    n, k = 1024, 8  # groups of 32 columns
    gen = torch.Generator().manual_seed(6)
    pre = torch.randn(64, n, generator=gen)
    kth = pre.topk(k, dim=-1).indices[:, -1]  # (64,) the column of each row's k-th largest
    twin = kth ^ 1  # its neighbour, in the same group
    pre[torch.arange(64), twin] = pre[torch.arange(64), kth]  # now k + 1 entries ≥ the k-th value
    _same_as_torch(pre, k)


def test_adversarial_rows_match_torch_topk() -> None:
    n, k = 1024, 8
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(16, n, generator=gen)
    rows[0] = 0.0  # all equal
    rows[1, :k] = 10.0  # the whole top k in one group
    rows[2] = torch.arange(n, dtype=torch.float32)  # increasing: the top k in the last group
    rows[3] = -torch.arange(n, dtype=torch.float32)  # decreasing: in the first group
    rows[4, 5] = float("nan")  # torch.topk ranks NaN highest
    rows[5, ::7] = float("nan")  # more NaN than k
    rows[6, :3] = float("inf")
    rows[7] = float("-inf")
    rows[7, 100:103] = 1.0  # fewer than k finite entries
    rows[8] = -0.0
    rows[8, ::2] = 0.0  # −0 and +0 compare equal: one big tie
    rows[9, torch.arange(0, n, 64)] = 5.0  # every group's maximum is the same value (τ tie)
    rows[10, torch.arange(0, n, 64)[: k + 1]] = 5.0  # k + 1 equal largest values
    rows[11, torch.arange(0, n, 64)[: k - 1]] = 5.0  # k − 1 equal largest, then the usual values
    rows[12] = torch.randn(n, generator=gen) * 1e-30  # subnormal-sized values
    rows[13] = 3.0  # constant but for one row-wide tie broken below
    rows[13, 17] = 4.0
    _same_as_torch(rows, k)


def test_small_rows_and_other_tensors_take_plain_topk() -> None:
    """Where the pre-filter does not pay (few columns per selected entry, bfloat16) it is torch.topk itself."""
    gen = torch.Generator().manual_seed(4)
    for pre, k in [
        (torch.randn(10, 40, generator=gen), 8),
        (torch.randn(10, 1024, generator=gen).bfloat16(), 8),
        (torch.randn(10, 1024, generator=gen).t().contiguous().t(), 4),  # not contiguous
        (torch.randn(0, 1024), 4),
    ]:
        _same_as_torch(pre, k)


def test_topk_pattern_is_csr_of_the_top_k() -> None:
    gen = torch.Generator().manual_seed(5)
    pre = torch.randn(20, 512, generator=gen)
    p = ops.topk_pattern(pre, 4)
    dense = torch.zeros_like(pre).scatter(1, pre.topk(4, dim=-1).indices, 1.0)
    assert torch.equal(p.csr(torch.ones(p.col.numel())).to_dense(), dense)
    assert torch.equal(p.row, torch.arange(20).repeat_interleave(4))


@pytest.mark.parametrize("n", [7, 300, 70_000])  # the last: over 16-bit feature indices, the int64-key sort
def test_transpose_is_the_dense_transpose(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    batch = 33
    dense = torch.rand(batch, n, generator=gen) * (torch.rand(batch, n, generator=gen) < 20 / n)
    p = ops.positive_pattern(dense)
    values = ops.gather(dense, p)
    t = ops.transpose(p)
    want = dense.T.contiguous()
    want_p = ops.positive_pattern(want)
    assert torch.equal(t.pattern.crow, want_p.crow) and torch.equal(t.pattern.col, want_p.col)
    assert torch.equal(t.pattern.row, want_p.row)
    assert torch.equal(values[t.order], ops.gather(want, want_p))
    other = torch.randn(batch, 5, generator=gen)
    assert torch.allclose(ops.spmm_t(t, values, other), want @ other, atol=1e-5)
