"""Calibration metrics: checked against the tarp package, a direct rank count, and a
Gaussian toy problem whose posteriors are known to be calibrated, overconfident or biased."""

import numpy as np
import pytest

from diffinfer.calibration import metrics, report
from diffinfer.cli.calibrate import report_table
from diffinfer.errors import InputError
from diffinfer.parameters import PriorBox

M, L = 300, 400


def gaussian_toy(kind: str, seed: int = 0, m: int = M, n_draws: int = L):
    """theta ~ N(0, I_2), x ~ N(theta, s^2 I): posterior N(x / (1 + s^2), s^2 / (1 + s^2)),
    for m maps with n_draws draws each."""
    rng = np.random.default_rng(seed)
    s2 = 0.25
    truths = rng.normal(size=(m, 2))
    x = truths + np.sqrt(s2) * rng.normal(size=(m, 2))
    mean, std = x / (1 + s2), np.full((m, 2), np.sqrt(s2 / (1 + s2)))
    if kind == "overconfident":
        std = 0.6 * std
    elif kind == "biased":
        mean = mean + 1.0 * std
    draws = mean[:, None, :] + std[:, None, :] * rng.normal(size=(m, n_draws, 2))
    return draws, truths, mean, std


def toy_results(kind: str, m: int, seed: int = 0) -> list[dict]:
    """The Gaussian toy as the per-map results of a coverage study (``analysis_metrics``);
    the truth's HPD level of a 2-d Gaussian is exact: 1 - exp(-d^2 / 2)."""
    draws, truths, mean, std = gaussian_toy(kind, seed=seed, m=m, n_draws=100)
    d2 = np.sum(((truths - mean) / std) ** 2, axis=1)
    return [{"index": i, "truth": truths[i], "draws": draws[i], "mean": mean[i],
             "cov": np.diag(std[i] ** 2), "credibility": 1 - np.exp(-d2[i] / 2),
             "log_pdf_truth": -d2[i] / 2, "n_evaluations": 1, "seconds": 0.0,
             "edge_mass": 0.0} for i in range(m)]  # fmt: skip


TOY_BOX = PriorBox(low=(-4.0, -4.0), high=(4.0, 4.0))


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
        np.swapaxes((draws - low) / (high - low), 0, 1),
        (truths - low) / (high - low),
        references=ref,
        num_alpha_bins=30,
        norm=False,
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


@pytest.mark.parametrize(("kind", "m", "expected"), [
    ("calibrated", 8, "not enough maps"),  # passes every check, but the bands are too wide
    ("calibrated", 400, "calibrated"),  # 400 maps resolve 0.1 (0.0875)
    ("overconfident", 400, "miscalibrated"),
    ("overconfident", 8, "not enough maps"),  # 8 maps cannot tell
])  # fmt: skip
def test_three_state_verdict(kind, m, expected):
    rep = report.analysis_metrics(toy_results(kind, m), TOY_BOX)
    assert rep["verdict"] == expected
    assert rep["calibrated"] == (expected == "calibrated")
    assert rep["min_detectable_deviation"] == report.min_detectable_deviation(m)
    assert rep["verdict_resolution"] == report.VERDICT_RESOLUTION == 0.1
    if expected == "not enough maps":
        # every check passed: the coverage curves lie inside bands wider than 0.5
        assert rep["hpd_coverage"]["inside_band_99"] and rep["tarp"]["inside_band_99"]
        assert rep["min_detectable_deviation"] > 0.5
        assert rep["maps_needed"] > m
    if expected == "calibrated":
        assert rep["min_detectable_deviation"] <= 0.1 and rep["maps_needed"] <= m
    if expected == "miscalibrated":
        assert not rep["hpd_coverage"]["inside_band_99"]
    # the table `diffinfer calibrate` prints: the verdict and the minimum detectable deviation
    row = report_table({"analyses": {"toy": rep}}).splitlines()[1]
    assert row.endswith(
        f"{rep['min_detectable_deviation']:.3f} {expected}"
        + (f" (about {rep['maps_needed']} needed)" if m == 8 else "")
    )


def test_min_detectable_deviation_shrinks_as_one_over_sqrt_n():
    ns = (8, 25, 100, 200, 500)
    mdd = np.array([report.min_detectable_deviation(n) for n in ns])
    assert np.all(np.diff(mdd) < 0)
    # the farthest band edge from the diagonal: it is the deviation a curve must exceed to
    # be flagged, so it matches the band: upper - z or z - lower at its widest level
    z, lo, hi = metrics.ecdf_band(100, alpha=0.01)
    assert mdd[2] == pytest.approx(np.max(np.maximum(hi - z, z - lo)[1:-1]))
    # large n: the 99 % Kolmogorov band has half-width 1.63 / sqrt(n); this band, equal
    # pointwise levels at 101 levels, is wider in the middle, measured 1.70-1.77 / sqrt(n)
    # for n from 100 to 1000 (edges move in steps of 1 / n and the band is simulated)
    c = mdd * np.sqrt(ns)
    assert np.all((c[2:] > 1.63) & (c[2:] < 1.8)), c
    # few maps: relatively narrower (1.60 at n = 8), and above 0.5 (the curve cannot be
    # judged at all)
    assert 1.5 < c[0] < 1.7 and mdd[0] > 0.5
    # about (1.73 / 0.1)^2 = 300 maps resolve 0.1; each answer does, by construction
    for n in (8, 100, 500):
        needed = report.maps_needed(n)
        assert 280 < needed < 320
        assert report.resolves(needed) and (needed <= n) == report.resolves(n)
    with pytest.raises(InputError, match="resolution"):
        report.maps_needed(10, resolution=0)


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


def test_the_quartile_lean_is_zero_when_calibrated_and_signed_when_means_shrink() -> None:
    """Gaussian posteriors with a known truth: means drawn about the truths with the
    posterior's own sd (calibrated: E[theta | map] = mean) give mean z 0 in every quartile of
    the posterior mean; means pulled halfway to the prior's centre give + in the lowest
    quartile and - in the highest."""
    from diffinfer.calibration.metrics import z_by_mean_quartile

    rng = np.random.default_rng(3)
    n, sd = 4000, 0.05
    # calibrated: theta | x ~ N(x, sd^2) with x the posterior mean
    x = rng.uniform(0.2, 0.8, (n, 2))
    truths = x + sd * rng.normal(size=(n, 2))
    std = np.full((n, 2), sd)
    good = z_by_mean_quartile(x, std, truths, ("a", "b"))
    for q in good.values():
        assert len(q) == 4 and sum(e["n_maps"] for e in q) == n
        for e in q:
            assert abs(e["z_mean"]) < 3 * e["z_mean_se"], e
    shrunk = 0.5 + 0.5 * (x - 0.5)
    lean = z_by_mean_quartile(shrunk, std, truths, ("a", "b"))["a"]
    assert lean[0]["z_mean"] > 10 * lean[0]["z_mean_se"]
    assert lean[-1]["z_mean"] < -10 * lean[-1]["z_mean_se"]
    assert lean[0]["posterior_mean"][0] < lean[-1]["posterior_mean"][0]
