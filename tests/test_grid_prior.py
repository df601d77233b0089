"""Adaptive grid marginaliser and priors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffinfer.inference.gridding import grid_posterior
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox
from diffinfer.prior import Prior


def _gaussian(mean, cov):
    dist = stats.multivariate_normal(mean, cov)
    return lambda th: torch.as_tensor(dist.logpdf(th.numpy()))


def test_grid_recovers_a_gaussian_posterior_with_few_evaluations():
    mean = np.array([0.31, 0.79])
    std = np.array([0.02, 0.012])
    rho = -0.8
    cov = np.array([[std[0] ** 2, rho * std[0] * std[1]], [rho * std[0] * std[1], std[1] ** 2]])
    g = grid_posterior(_gaussian(mean, cov), DEFAULT_PRIOR)
    # the default 16^2 + 24^2 cells: widths within 2 % (measured 0.9 and 1.1 %; n_fine=40
    # gives 0.3 %), correlation within 0.02 (measured 0.016)
    np.testing.assert_allclose(g.mean(), mean, atol=0.01 * std.min())
    np.testing.assert_allclose(np.sqrt(np.diag(g.cov())), std, rtol=0.02)
    assert g.cov()[0, 1] / np.prod(np.sqrt(np.diag(g.cov()))) == pytest.approx(rho, abs=0.02)
    np.testing.assert_allclose(g.quantiles(0, [0.16, 0.84]), mean[0] + np.array([-1, 1]) * std[0],
                               atol=0.03 * std[0])  # fmt: skip
    assert g.edge_mass < 1e-4 and len(g.passes) >= 2
    assert g.n_evaluations < 0.05 * 400**2  # a dense 400 x 400 grid would need 160,000
    # HPD levels: for a 2D Gaussian the 68 % region is log p >= max - chi2_2(0.68) / 2
    levels = g.hpd_levels([0.68, 0.95])
    peak = g.log_density.max()
    np.testing.assert_allclose(peak - levels, stats.chi2(2).ppf([0.68, 0.95]) / 2, rtol=0.05)
    draws = g.sample(20000, seed=1)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * std / np.sqrt(20000) + 1e-4)
    np.testing.assert_allclose(draws.std(0), std, rtol=0.03)


def test_grid_handles_a_posterior_against_the_prior_edge():
    mean, std = np.array([0.1, 0.8]), np.array([0.03, 0.05])
    g = grid_posterior(_gaussian(mean, np.diag(std**2)), DEFAULT_PRIOR)
    # truncated normal marginal on [0.1, 0.5]: its mean is mu + std sqrt(2/pi)
    assert g.mean()[0] == pytest.approx(mean[0] + std[0] * math.sqrt(2 / math.pi), rel=0.01)
    assert g.edge_mass < 1e-4


def test_grid_on_the_exact_likelihood_matches_a_dense_grid(sim):
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=4)[0])

    def f(th):
        return sim.exact_log_prob(y, th, outside="-inf")

    g = grid_posterior(f, DEFAULT_PRIOR)
    axes = (np.linspace(0.16, 0.42, 201), np.linspace(0.70, 0.90, 201))
    th = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    lp = f(torch.as_tensor(th)).numpy()
    w = np.exp(lp - lp.max())
    w /= w.sum()
    m = w @ th
    s = np.sqrt(w @ (th - m) ** 2)
    np.testing.assert_allclose(g.mean(), m, atol=0.02 * s.min())
    np.testing.assert_allclose(np.sqrt(np.diag(g.cov())), s, rtol=0.02)
    assert g.n_evaluations < 0.1 * len(th)


def test_priors_and_the_unconstrained_map():
    prior = Prior()
    theta = torch.tensor([[0.3, 0.8], [0.6, 0.8]], dtype=torch.float64)
    lp = prior.log_prob(theta)
    assert lp[0].item() == pytest.approx(-math.log(0.16)) and math.isinf(lp[1].item())
    z = prior.to_unconstrained(theta[:1])
    torch.testing.assert_close(prior.from_unconstrained(z), theta[:1])
    # log-Jacobian against autograd
    z = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: prior.from_unconstrained(v[None])[0], z[0])
    assert prior.log_abs_det_jacobian(z).item() == pytest.approx(
        math.log(abs(torch.linalg.det(jac).item()))
    )
    gauss = Prior.gaussian([0.3, 0.8], [0.05, 0.05])
    draws = gauss.sample(4000, seed=0)
    assert DEFAULT_PRIOR.contains(draws).all()
    assert draws.mean(0) == pytest.approx([0.3, 0.8], abs=0.005)
    assert gauss.log_prob(theta)[0] > gauss.log_prob(torch.tensor([[0.4, 0.9]]))[0]
    box = PriorBox((0.2, 0.7), (0.4, 0.9))
    assert Prior(box).sample(100, seed=1).min() >= 0.2


def test_grid_density_and_credibility_match_a_gaussian():
    mean = np.array([0.31, 0.79])
    cov = np.array([[0.02**2, -0.8 * 0.02 * 0.012], [-0.8 * 0.02 * 0.012, 0.012**2]])
    dist = stats.multivariate_normal(mean, cov)
    g = grid_posterior(_gaussian(mean, cov), DEFAULT_PRIOR)
    rng = np.random.default_rng(0)
    pts = rng.multivariate_normal(mean, cov, size=50)
    # normalised density: within 2 % where the posterior lives
    np.testing.assert_allclose(g.log_pdf(pts), dist.logpdf(pts), atol=0.02)
    # HPD level of a point at Mahalanobis distance d: chi2_2 cdf(d^2) = 1 - exp(-d^2 / 2)
    d2 = np.einsum("ij,jk,ik->i", pts - mean, np.linalg.inv(cov), pts - mean)
    np.testing.assert_allclose(g.credibility(pts), 1 - np.exp(-d2 / 2), atol=0.01)
    far = np.array([[0.12, 0.62]])
    assert g.log_pdf(far)[0] == -np.inf and g.credibility(far)[0] == 1.0
