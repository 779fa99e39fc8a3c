"""Each metric against hand-computed values (STYLE P4, P11), and streaming == one-shot."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from monosemantic.errors import UserError
from monosemantic.eval.metrics import (
    DensityHistogram,
    FeatureStats,
    ReconstructionStats,
    density_histogram,
    density_summary,
    feature_density,
    fvu,
    l0,
    l1,
    mse,
    normalized_mse,
    plot_density_histogram,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A 2×3 example: errors (0, 0, 1) and (0, 2, 0), so Σ‖x − x̂‖² = 1 + 4 = 5.
X = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
X_HAT = torch.tensor([[1.0, 2.0, 2.0], [3.0, 0.0, 1.0]])


def test_mse_is_the_mean_over_all_elements():
    assert mse(X, X_HAT).item() == pytest.approx(5 / 6)


def test_normalized_mse_divides_by_the_squared_norm():
    # Σ‖x‖² = (1 + 4 + 9) + (9 + 4 + 1) = 28
    assert normalized_mse(X, X_HAT).item() == pytest.approx(5 / 28)


def test_fvu_divides_by_the_variance_around_the_mean():
    # mean row (2, 2, 2); centred rows (−1, 0, 1) and (1, 0, −1): Σ‖x − x̄‖² = 4
    assert fvu(X, X_HAT).item() == pytest.approx(5 / 4)
    assert fvu(X, X).item() == 0.0
    assert fvu(X, X.mean(dim=0).expand_as(X)).item() == pytest.approx(1.0)


def test_l0_and_l1_per_row():
    f = torch.tensor([[0.0, 2.0, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert l0(f).item() == pytest.approx((2 + 0 + 3) / 3)
    assert l1(f).item() == pytest.approx((2.5 + 0 + 3) / 3)


def test_feature_density_is_the_fraction_of_rows_where_f_is_positive():
    f = torch.tensor([[0.0, 2.0, 0.5], [0.0, 0.0, 0.1], [0.0, 3.0, 0.2], [0.0, 0.0, 0.3]])
    assert feature_density(f).tolist() == [0.0, 0.5, 1.0]


def test_density_summary_counts_dead_dense_and_ultralow_disjointly():
    density = torch.tensor([0.0, 0.5, 5e-7, 1e-3, 0.2, 0.1], dtype=torch.float64)
    s = density_summary(density)
    assert (s["n_dead"], s["n_dense"], s["n_ultralow"]) == (1, 2, 1)  # 0.1 itself is not dense
    assert s["dead_frac"] == pytest.approx(1 / 6) and s["dense_frac"] == pytest.approx(2 / 6)
    assert density_summary(density, dense_threshold=0.01)["n_dense"] == 3


def crafted_features(n_rows: int = 2_000_000) -> torch.Tensor:
    """Feature 0 dead, feature 1 dense (every other row), feature 2 ultralow (once: 5e-7)."""
    f = torch.zeros(n_rows, 3)
    f[::2, 1] = 2.0
    f[123_456, 2] = 7.0
    return f


def test_feature_stats_over_batches_equals_the_one_shot_computation():
    f = crafted_features()
    stats = FeatureStats(3)
    for batch in f.split(300_000):  # uneven last batch
        stats.update(batch)
    assert stats.n_rows == len(f)
    assert torch.equal(stats.density, feature_density(f))
    assert stats.density.tolist() == [0.0, 0.5, 5e-7]
    assert stats.l0 == pytest.approx(l0(f).item())
    assert stats.l1 == pytest.approx(l1(f).item())
    s = stats.summary()
    assert (s["n_dead"], s["n_dense"], s["n_ultralow"], s["n_rows"]) == (1, 1, 1, len(f))


def test_feature_stats_rejects_the_wrong_width():
    with pytest.raises(ValueError, match="features"):
        FeatureStats(3).update(torch.zeros(2, 4))


def test_reconstruction_stats_over_batches_equals_the_one_shot_functions():
    x = torch.randn(100, 6) + 3.0  # a large mean, like post-ReLU activations
    x_hat = x + 0.3 * torch.randn_like(x)
    stats = ReconstructionStats()
    for a, b in zip(x.split(17), x_hat.split(17), strict=True):
        stats.update(a, b)
    r = stats.result()
    assert r["mse"] == pytest.approx(mse(x, x_hat).item(), rel=1e-5)
    assert r["normalized_mse"] == pytest.approx(normalized_mse(x, x_hat).item(), rel=1e-5)
    assert r["fvu"] == pytest.approx(fvu(x, x_hat).item(), rel=1e-5)
    stats2 = ReconstructionStats()
    stats2.update(X, X_HAT)
    assert stats2.result() == pytest.approx({"mse": 5 / 6, "normalized_mse": 5 / 28, "fvu": 5 / 4})


def test_reconstruction_stats_needs_a_batch():
    with pytest.raises(ValueError):
        ReconstructionStats().result()


def test_density_histogram_counts_by_hand():
    # log10: dead, dead, −9 (clamped into the first bin), −4.7, −3.5, −0.3, 0 (last bin is closed)
    density = torch.tensor([0.0, 0.0, 1e-9, 2e-5, 3e-4, 0.5, 1.0])
    h = density_histogram(density, bins=6, log10_min=-6.0)
    assert h.log10_edges == [-6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0]
    assert h.counts == [1, 1, 1, 0, 0, 2]
    assert h.n_dead == 2
    assert sum(h.counts) + h.n_dead == len(density)


def test_density_histogram_of_all_dead_features():
    h = density_histogram(torch.zeros(5), bins=3, log10_min=-3.0)
    assert h.counts == [0, 0, 0] and h.n_dead == 5


def test_density_histogram_rejects_a_bad_range():
    with pytest.raises(ValueError):
        density_histogram(torch.ones(2), bins=3, log10_min=0.0)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    h = DensityHistogram(log10_edges=[-3.0, -2.0, -1.0, 0.0], counts=[4, 0, 2], n_dead=1)
    path = plot_density_histogram(h, tmp_path / "sub" / "density.png", title="t")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["density.png"]  # no temporary left behind


def test_plot_without_matplotlib_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    h = DensityHistogram(log10_edges=[-1.0, 0.0], counts=[1], n_dead=0)
    with pytest.raises(UserError, match="matplotlib"):
        plot_density_histogram(h, tmp_path / "density.png")
    assert not (tmp_path / "density.png").exists()


def test_ratio_is_nan_for_constant_input():
    stats = ReconstructionStats()
    stats.update(torch.ones(4, 2), torch.ones(4, 2))
    assert math.isnan(stats.result()["fvu"])
