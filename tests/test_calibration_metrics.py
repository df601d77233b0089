"""Calibration metrics: checked against the tarp package, a direct rank count, and a
Gaussian toy problem whose posteriors are known to be calibrated, overconfident or biased."""

import numpy as np
import pytest

from diffinfer.calibration import metrics
from diffinfer.errors import InputError

M, L = 300, 400


def gaussian_toy(kind: str, seed: int = 0):
    """theta ~ N(0, I_2), x ~ N(theta, s^2 I): posterior N(x / (1 + s^2), s^2 / (1 + s^2))."""
    rng = np.random.default_rng(seed)
    s2 = 0.25
    truths = rng.normal(size=(M, 2))
    x = truths + np.sqrt(s2) * rng.normal(size=(M, 2))
    mean, std = x / (1 + s2), np.full((M, 2), np.sqrt(s2 / (1 + s2)))
    if kind == "overconfident":
        std = 0.6 * std
    elif kind == "biased":
        mean = mean + 1.0 * std
    draws = mean[:, None, :] + std[:, None, :] * rng.normal(size=(M, L, 2))
    return draws, truths, mean, std


def test_ranks_match_a_direct_count():
    draws, truths, _, _ = gaussian_toy("calibrated")
    ranks = metrics.sbc_ranks(draws, truths)
    for i in (0, 17, 299):
        for j in (0, 1):
            assert ranks[i, j] == sum(1 for v in draws[i, :, j] if v < truths[i, j])


def test_tarp_matches_the_tarp_package():
    tarp = pytest.importorskip("tarp")
    draws, truths, _, _ = gaussian_toy("overconfident")
    low, high = np.full(2, -4.0), np.full(2, 4.0)
    f = metrics.tarp_statistics(draws, truths, low, high, seed=3, jitter=False)
    # the same reference points, handed to tarp in the unit box
    ref = np.random.default_rng(3).random(truths.shape)
    ecp, alpha = tarp.get_tarp_coverage(
        np.swapaxes((draws - low) / (high - low), 0, 1), (truths - low) / (high - low),
        references=ref, num_alpha_bins=30, norm=False,
    )
    # tarp bins the statistic over its observed range with half-open bins [a_k, a_k+1);
    # its curve at the interior edges is the fraction strictly below each edge
    below = np.array([np.mean(f < a) for a in alpha[1:-1]])
    np.testing.assert_allclose(below, ecp[1:-1], atol=1e-9)
    assert ecp[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["calibrated", "overconfident", "biased"])
def test_gaussian_toy_is_diagnosed(kind):
    draws, truths, mean, std = gaussian_toy(kind)
    ranks = metrics.sbc_ranks(draws, truths)
    rank_tests = metrics.rank_uniformity(ranks, L)
    hpd = metrics.uniformity_check(metrics.hpd_credibility(draws, truths))
    tarp = metrics.uniformity_check(metrics.tarp_statistics(draws, truths, [-4, -4], [4, 4]))
    z = metrics.z_score_summary(metrics.z_scores(mean, std, truths))
    if kind == "calibrated":
        assert all(t["ks_pvalue"] > 0.01 and t["chi2_pvalue"] > 0.01 for t in rank_tests)
        assert hpd["inside_band"] and tarp["inside_band"]
        assert hpd["max_deviation"] < 0.1
        for zj in z:
            assert abs(zj["mean"]) < 3 * zj["mean_se"] and abs(zj["std"] - 1) < 3 * zj["std_se"]
    elif kind == "overconfident":
        # truths fall outside too often: coverage below the diagonal, ranks U-shaped
        assert not hpd["inside_band"] and hpd["signed_area"] < -0.05
        assert not tarp["inside_band"]
        assert all(t["chi2_pvalue"] < 1e-3 for t in rank_tests)
        assert all(zj["std"] > 1 + 5 * zj["std_se"] for zj in z)
    else:
        # shifted posteriors: ranks pile up at one end, z-scores have non-zero mean
        assert all(t["ks_pvalue"] < 1e-3 for t in rank_tests)
        assert all(zj["mean"] > 5 * zj["mean_se"] for zj in z)
        assert not hpd["inside_band"]


def test_ecdf_band_has_its_simultaneous_coverage():
    z, lo, hi = metrics.ecdf_band(100, alpha=0.1, seed=1)
    rng = np.random.default_rng(2)
    inside = []
    for _ in range(400):
        c = metrics.ecdf(rng.random(100), z)
        inside.append(np.all((c >= lo) & (c <= hi)))
    # 90 % nominal; 400 trials give a standard error of 1.5 %
    assert 0.85 < np.mean(inside) < 0.95


def test_thinning_removes_autocorrelation():
    rng = np.random.default_rng(0)
    # AR(1) chains with rho = 0.9: tau = 19
    c = np.zeros((4, 5000, 2))
    for t in range(1, 5000):
        c[:, t] = 0.9 * c[:, t - 1] + rng.normal(size=(4, 2))
    flat = metrics.thin_to_independent(c, 400)
    assert len(flat) == 400
    lag1 = np.corrcoef(flat[:-1, 0], flat[1:, 0])[0, 1]
    assert abs(lag1) < 0.2


def test_bad_input():
    with pytest.raises(InputError, match="shape"):
        metrics.sbc_ranks(np.zeros((3, 10)), np.zeros((3, 2)))
    with pytest.raises(InputError, match="finite"):
        metrics.sbc_ranks(np.full((3, 10, 2), np.nan), np.zeros((3, 2)))
