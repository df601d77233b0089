"""Power spectrum and one-point PDF estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2, norm

from diffinfer.errors import InputError
from diffinfer.fields.stats import bin_modes, default_bins, one_point_pdf, power_spectrum


def _chi2_against_model(sim, theta_maps, theta_model, n_maps=300, seed=0):
    g = np.log(sim.simulate(np.asarray(theta_maps), n_maps, seed=seed))
    ps = power_spectrum(g, sim.config.box_size)
    lam = sim.eigenvalues(torch.tensor([theta_model], dtype=torch.float64))[0].numpy()
    model = bin_modes(lam * sim.config.pixel_area, sim.config.box_size).power
    mean = ps.power.mean(axis=0)
    err = ps.power.std(axis=0, ddof=1) / np.sqrt(n_maps)
    return np.sum(((mean - model) / err) ** 2), ps.power.shape[1]


@pytest.mark.parametrize("theta", [(0.15, 0.65), (0.3, 0.8), (0.45, 0.95)])
def test_simulated_maps_reproduce_the_input_spectrum(sim, theta):
    stat, n_bins = _chi2_against_model(sim, theta, theta)
    assert stat < chi2.ppf(0.999, n_bins)
    # the test has power: a 3 % change of sigma_8 (6 % in P) is rejected
    wrong = (theta[0], theta[1] * 1.03)
    stat_wrong, _ = _chi2_against_model(sim, theta, wrong)
    assert stat_wrong > chi2.ppf(0.999, n_bins)


def test_agrees_with_powerbox(sim):
    from powerbox import get_power

    g = np.log(sim.simulate(np.array([0.3, 0.8]), 1, seed=3)[0])
    edges = default_bins(64, 500.0)
    ours = power_spectrum(g, 500.0, edges=edges)
    ref = get_power(g, 500.0, bins=edges, dimensionless=False)
    ref_power = ref.power if hasattr(ref, "power") else ref[0]
    assert np.allclose(ours.power, ref_power, rtol=1e-10)
    if hasattr(ref, "nsamples"):
        assert np.array_equal(ours.n_modes, np.asarray(ref.nsamples).astype(int))


def test_mode_counts_and_units():
    ps = power_spectrum(np.random.default_rng(0).standard_normal((2, 16, 16)), 100.0)
    assert ps.power.shape == (2, 8) and ps.n_modes.sum() <= 16 * 16 - 1
    assert ps.n_modes[0] == 8  # (+-1, 0), (0, +-1) and (+-1, +-1): |k| = sqrt(2) k_f < 1.5 k_f
    assert ps.k[0] == pytest.approx(2 * np.pi / 100.0 * (1 + np.sqrt(2)) / 2)
    # white noise of unit pixel variance has P = A_pix everywhere
    white = np.random.default_rng(1).standard_normal((400, 32, 32))
    p = power_spectrum(white, 64.0).power.mean(axis=0)
    assert np.allclose(p[:-1], (64.0 / 32) ** 2, rtol=0.05)


def test_one_point_pdf_of_log_density(sim):
    theta = np.array([0.3, 0.8])
    rho = sim.simulate(theta, 200, seed=1)
    s2 = sim.log_variance(theta).item()
    centres, pdf = one_point_pdf(rho, bins=40, value_range=(-3, 2))
    assert np.sum(pdf * np.diff(np.linspace(-3, 2, 41))) == pytest.approx(1.0, abs=1e-3)
    expected = norm(loc=-s2 / 2, scale=np.sqrt(s2)).pdf(centres)
    assert np.max(np.abs(pdf - expected)) < 0.05 * expected.max()
    with pytest.raises(InputError, match="positive"):
        one_point_pdf(np.zeros((4, 4)))


def test_bad_bins_raise():
    with pytest.raises(InputError, match="increasing"):
        power_spectrum(np.zeros((8, 8)), 10.0, edges=np.array([1.0, 0.5]))
