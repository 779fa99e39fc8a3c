"""Case-study statistics by hand on tiny inputs, and the streamed moments against plain numpy."""

import numpy as np
import pytest
import torch

from monosemantic.analyses.casestudy import Levels, Moments, best_columns, decoder_in_neurons, families
from monosemantic.analyses.correlate import PearsonAccumulator


def corrcoef(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[F, P] Pearson r by numpy, NaN for a constant column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(x.T, y.T)[: x.shape[1], x.shape[1] :]


def test_moments_match_numpy_per_slice_over_batches():
    rng = np.random.default_rng(0)
    N, F, P = 700, 9, 3
    f = np.maximum(rng.normal(size=(N, F)) - 1.2, 0).astype(np.float32)  # sparse, like SAE features
    f[:, 4] = 0  # dead: NaN
    y = np.maximum(rng.normal(size=(N, P)) - 1.0, 0)  # proxies thresholded at 0: mostly zero
    y[:, 2] = (rng.random(N) < 0.05).astype(float)  # a binarized one
    member = np.stack([np.ones(N, bool), rng.random(N) < 0.8, rng.random(N) < 0.3])  # all, most, few
    m = Moments({"f": F, "twice": F}, P, 3)
    scratch = torch.empty(128 * F)
    for lo in range(0, N, 128):
        m.batch(torch.from_numpy(y[lo : lo + 128]), torch.from_numpy(member[:, lo : lo + 128]))
        m.add("f", torch.from_numpy(f[lo : lo + 128]), scratch if lo else None)
        m.add("twice", torch.from_numpy(2 * f[lo : lo + 128]))
    r = m.corr("f")
    np.testing.assert_allclose(np.nan_to_num(m.corr("twice")), np.nan_to_num(r), atol=1e-6)  # r is scale-free
    for s in range(3):
        keep = member[s]
        fs, ys = f[keep].astype(np.float64), y[keep]
        assert m.n[s] == keep.sum()
        # float32 sums within a batch: relative error ~1e-7.
        np.testing.assert_allclose(m.sx["f"][s], fs.sum(0), rtol=1e-6)
        np.testing.assert_allclose(m.sxx["f"][s], (fs * fs).sum(0), rtol=1e-6)
        np.testing.assert_allclose(m.sxy["f"][:, s, :], fs.T @ ys, rtol=1e-6)
        want = corrcoef(fs, ys)
        assert np.isnan(r[s, 4]).all() and not np.isnan(np.delete(r[s], 4, 0)).any()
        np.testing.assert_allclose(np.delete(r[s], 4, 0), np.delete(want, 4, 0), atol=1e-6)
    np.testing.assert_array_equal(m.max["f"].numpy(), f.max(0))
    # The same numbers as the general accumulator the other analyses use.
    acc = PearsonAccumulator(F, P)
    acc.update(torch.from_numpy(f), torch.from_numpy(y))
    np.testing.assert_allclose(np.nan_to_num(r[0]), np.nan_to_num(acc.corr()), atol=1e-6)


def test_levels_by_hand():
    # max 10, 5 levels: (0, 2], (2, 4], (4, 6], (6, 8], (8, 10].
    act = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 5.0, 5.5, 9.0, 10.0, 7.0])
    val = np.array([0.0, 3.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0, 0.5, 0.0])  # proxy holds where > 0
    llr = np.where(val > 0, val, -1.0)
    lv = Levels(act_max=10.0, llr_max=4.0, n_levels=5, n_bins=2)
    lv.add(act[:5], val[:5], llr[:5])  # two batches
    lv.add(act[5:], val[5:], llr[5:])
    j = lv.to_json()
    assert j["tokens"] == [2, 1, 2, 1, 2]  # 1, 2 | 3 | 5, 5.5 | 7 | 9, 10
    assert j["proxy_tokens"] == [1, 0, 1, 0, 2]  # 2 | - | 5.5 | - | 9, 10
    np.testing.assert_allclose(j["act"], [3, 3, 10.5, 7, 19])
    np.testing.assert_allclose(j["proxy_act"], [2, 0, 5.5, 0, 19])
    # Above half the max (> 5): 5.5, 9, 10, 7; the proxy holds on 5.5, 9, 10.
    assert j["half_max"] == {"tokens": 4, "proxy_tokens": 3} and j["specificity"] == pytest.approx(3 / 4)
    assert j["mass_specificity"] == pytest.approx(26.5 / 42.5)
    # Sensitivity: proxy tokens (values 3, 1, 2, 1, 0.5), of which the column fires on 1, 2, 1, 0.5.
    sens = lv.sensitivity_json()
    assert sens["sensitivity"] == pytest.approx(4.5 / 7.5)
    assert sens["tokens"] == [4, 1] and sens["fires"] == [4, 0]  # LLR bins (0, 2]: 1, 2, 1, 0.5; (2, 4]: 3
    assert Levels(0.0, 1.0, 5, 2).specificity() != Levels(0.0, 1.0, 5, 2).specificity()  # NaN: nothing seen


def test_decoder_in_neurons_by_hand():
    w = np.zeros(16)
    w[[3, 7, 9, 11, 12]] = [0.6, -0.8, 0.2, 0.1999, -0.05]
    w *= 2.5  # any norm: coefficients are of the unit row
    out = decoder_in_neurons(w, min_abs=0.1)
    unit = w / np.linalg.norm(w)
    assert out["n_ge"] == int((np.abs(unit) >= 0.1).sum()) == 4
    assert [i for i, _ in out["top"]] == [7, 3, 9]
    assert out["top"][0][1] == pytest.approx(unit[7], abs=1e-4) and out["top"][0][1] < 0
    assert out["norm"] == pytest.approx(np.linalg.norm(w))


def test_best_columns_and_families():
    r = np.array([[0.1, np.nan], [0.5, np.nan], [0.3, np.nan], [0.2, np.nan]])
    idx, val = best_columns(r)
    assert idx.tolist() == [1, -1] and val[0] == 0.5 and np.isnan(val[1])
    idx, val = best_columns(np.stack([r, r[::-1]]))  # [S, F, P]
    assert idx[:, 0].tolist() == [1, 2]
    assert families(r, 0.2) == [[(1, 0.5), (2, 0.3), (3, 0.2)], []]


def test_family_sum_r_by_moments_of_the_summed_columns():
    rng = np.random.default_rng(1)
    f = np.maximum(rng.normal(size=(400, 5)), 0).astype(np.float32)
    y = (rng.random((400, 2)) < 0.1).astype(float)
    fam = [0, 3]
    M = torch.zeros(5, 1)
    M[fam, 0] = 1
    m = Moments({"family": 1}, 2, 1)
    m.batch(torch.from_numpy(y), torch.ones(1, 400, dtype=torch.bool))
    m.add("family", torch.from_numpy(f) @ M)
    want = np.corrcoef(f[:, fam].astype(np.float64).sum(1), y[:, 1])[0, 1]
    assert m.corr("family")[0, 0, 1] == pytest.approx(want, abs=1e-6)


def test_moments_at_batch_scale_match_float64_within_1e_5():
    # A batch as the pass makes it (thousands of tokens, float32 sums inside it) against float64 numpy.
    rng = np.random.default_rng(2)
    N, F = 8192, 256
    f = (np.maximum(rng.normal(size=(N, F)) - 2.0, 0) * rng.uniform(0.5, 20, size=F)).astype(np.float32)
    y = np.maximum(rng.normal(size=(N, 2)) * 3 - 4, 0)
    member = np.stack([np.ones(N, bool), rng.random(N) < 0.9])
    m = Moments({"f": F}, 2, 2)
    for lo in range(0, N, 4096):
        m.batch(torch.from_numpy(y[lo : lo + 4096]), torch.from_numpy(member[:, lo : lo + 4096]))
        m.add("f", torch.from_numpy(f[lo : lo + 4096]))
    r = m.corr("f")
    for s in range(2):
        want = corrcoef(f[member[s]].astype(np.float64), y[member[s]])
        np.testing.assert_allclose(r[s], want, atol=1e-5)


def test_a_summary_of_an_older_version_is_named_not_a_traceback():
    from monosemantic.analyses.casestudy_report import format_case_study

    assert "older version" in format_case_study([{"proxy": "arabic", "feature_corr": 0.8}])
    assert "older version" in format_case_study({"model": "A", "rows": []})
