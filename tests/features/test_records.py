"""The streaming accumulators against brute force over the whole (small) array at once."""

import math

import pytest
import torch

from monosemantic.features.records import (
    BottomK,
    Stats,
    hist_bin,
    hist_edges,
    interval_index,
    sparse_windows,
    uniform_keys,
    windows_of,
)


def test_bottom_k_keeps_exactly_the_smallest_keys_per_group_across_batches(one_thread):
    g = torch.Generator().manual_seed(0)
    n_groups, k, n = 7, 4, 300
    group = torch.randint(0, n_groups, (n,), generator=g)
    group[group == 6] = 5  # group 6 never seen: stays empty
    group[:2] = 4  # group 4 sees exactly 2 (fewer than k)
    group[group == 4] = 3
    group[:2] = 4
    key = torch.rand(n, generator=g, dtype=torch.float64)
    token = torch.arange(n)
    keep = BottomK(n_groups, k, width=2)
    for lo in range(0, n, 37):  # uneven batches
        sl = slice(lo, lo + 37)
        keep.offer(group[sl], key[sl], token[sl], key[sl].float(), lambda sel, sl=sl: torch.stack(
            [token[sl][sel].float(), -token[sl][sel].float()], 1))  # fmt: skip
    for grp in range(n_groups):
        want = token[group == grp][torch.argsort(key[group == grp])][:k]
        got = keep.token[grp][keep.token[grp] >= 0]
        assert got.tolist() == want.tolist(), grp
        assert keep.window[grp, : len(got), 0].tolist() == got.float().tolist()  # payload follows its entry
    assert (keep.token[6] == -1).all() and math.isinf(keep.key[6, 0])
    assert (keep.token[4] >= 0).sum() == 2


def test_stats_match_brute_force(one_thread):
    g = torch.Generator().manual_seed(1)
    f = torch.relu(torch.randn(500, 6, generator=g) - 0.5)
    f[:, 5] = 0  # a dead feature
    src = torch.randint(0, 3, (500,), generator=g)
    st = Stats.zeros(6, 3)
    for lo in range(0, 500, 128):
        tok, feat = f[lo : lo + 128].nonzero(as_tuple=True)
        st.add(feat, f[lo : lo + 128][tok, feat], src[lo : lo + 128][tok])
    assert st.n_active.tolist() == (f > 0).sum(0).tolist()
    torch.testing.assert_close(st.total, f.double().sum(0))
    assert st.max.tolist() == f.amax(0).tolist()
    for j in range(5):
        assert st.min_nonzero[j] == f[:, j][f[:, j] > 0].min()
        for s in range(3):
            torch.testing.assert_close(st.by_source[j, s], f[src == s, j].double().sum())
    assert math.isinf(st.min_nonzero[5])


def test_histogram_bins_are_log_spaced_and_hold_each_value():
    mn, mx = torch.tensor([0.01, 1e-9, 0.0]), torch.tensor([10.0, 1.0, 0.0])
    edges = hist_edges(mn, mx, n_bins=6, decades=4.0)
    torch.testing.assert_close(edges[0, [0, -1]], torch.tensor([0.01, 10.0], dtype=torch.float64))
    ratios = edges[0, 1:] / edges[0, :-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1000 ** (1 / 6)))
    assert float(edges[1, 0]) == pytest.approx(1e-4)  # the tiny min is lumped: at most `decades` below the max
    assert (edges[2] == 0).all()  # never active
    v = torch.tensor([0.01, 0.05, 0.7, 3.0, 10.0, 1e-8, 0.5, 1.0])
    feat = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    b = hist_bin(v, feat, edges)
    for x, j, i in zip(v.double(), feat, b, strict=True):
        assert i == 0 or edges[j, i] <= x * (1 + 1e-9)
        assert i == 5 or x < edges[j, i + 1]
    assert b[5] == 0 and b[4] == 5 and b[7] == 5


def test_intervals_split_zero_to_max_evenly():
    mx = torch.tensor([8.0])
    v = torch.tensor([1e-6, 1.0, 1.5, 4.0, 7.99, 8.0])
    assert interval_index(v, torch.zeros(6, dtype=torch.long), mx, 8).tolist() == [0, 0, 1, 3, 7, 7]
    # values on the float32 grid near the edges of a max that does not divide evenly
    mx = torch.tensor([0.7])
    v = torch.linspace(1e-4, 0.7, 1001)
    i = interval_index(v, torch.zeros(1001, dtype=torch.long), mx, 10)
    m = float(mx[0])
    assert all(m * j / 10 < float(x) <= m * (j + 1) / 10 for x, j in zip(v, i.tolist(), strict=True))


def test_windows_are_cut_at_the_context_edges():
    f3 = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    w = windows_of(f3, torch.tensor([0, 1]), torch.tensor([1, 4]), torch.tensor([2, 0]), before=2, after=1)
    assert w[0].tolist() == [0, f3[0, 0, 2], f3[0, 1, 2], f3[0, 2, 2]]
    assert w[1].tolist() == [f3[1, 2, 0], f3[1, 3, 0], f3[1, 4, 0], 0]


def test_sparse_windows_equal_dense_windows(one_thread):
    g = torch.Generator().manual_seed(2)
    f3 = torch.relu(torch.randn(3, 7, 5, generator=g))
    tok, feat = f3.reshape(-1, 5).nonzero(as_tuple=True)
    val = f3.reshape(-1, 5)[tok, feat]
    sel = torch.arange(len(tok))
    dense = windows_of(f3, tok // 7, tok % 7, feat, before=3, after=2)
    assert torch.equal(sparse_windows(tok, feat, val, sel, 7, 5, before=3, after=2), dense)


def _offer_all(keep, group, key, token, lo, hi, step=29):
    for a in range(lo, hi, step):
        sl = slice(a, min(a + step, hi))
        keep.offer(group[sl], key[sl], token[sl], key[sl].float(), lambda sel, sl=sl: token[sl][sel, None].float())


def test_merging_the_keepers_of_consecutive_shards_gives_the_whole_streams_keeper(one_thread):
    """What `features build` does across torchrun ranks (merge.py), ties included: with many equal
    keys, the earlier tokens must win in both."""
    g = torch.Generator().manual_seed(3)
    n_groups, k, n = 5, 6, 400
    group = torch.randint(0, n_groups, (n,), generator=g)
    key = torch.randint(0, 8, (n,), generator=g).double()  # few distinct keys: ties everywhere
    token = torch.arange(n)
    whole = BottomK(n_groups, k, width=1)
    _offer_all(whole, group, key, token, 0, n)
    for cuts in ([0, 130, n], [0, 1, 250, 251, n]):
        parts = []
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            parts.append(BottomK(n_groups, k, width=1))
            _offer_all(parts[-1], group, key, token, lo, hi)
        merged = BottomK.from_state(parts[0].state())
        for p in parts[1:]:
            merged.merge(p)
        for a, b in zip(whole.state(), merged.state(), strict=True):
            assert torch.equal(a, b)


def test_uniform_keys_are_uniform_and_a_pure_function_of_the_entry():
    tok = torch.arange(200_000) // 7
    feat = torch.arange(200_000) % 7
    u = uniform_keys(0, 1, tok, feat)
    assert u.dtype == torch.float64 and float(u.min()) >= 0 and float(u.max()) < 1
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert ((counts - 20_000).abs() < 600).all()  # ~4.5 sigma of a binomial(200000, 0.1)
    assert torch.equal(uniform_keys(0, 1, tok[5:9], feat[5:9]), u[5:9])  # the same entry, the same key
    assert abs(float(torch.corrcoef(torch.stack([u, uniform_keys(0, 2, tok, feat)]))[0, 1])) < 0.01  # salts
    assert abs(float(torch.corrcoef(torch.stack([u, uniform_keys(1, 1, tok, feat)]))[0, 1])) < 0.01  # seeds
    assert len(torch.unique(u)) == len(u)
