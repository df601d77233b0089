"""Pyro distributions over maps: exact reference and diffusion likelihood."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS
from scipy import stats

from diffinfer.diffusion import DiffusionModel
from diffinfer.errors import InputError
from diffinfer.likelihoods.distributions import DiffusionField, ExactLognormalField
from tests.test_lognormal import _dense_covariance

THETA = torch.tensor([0.3, 0.8], dtype=torch.float64)


def test_exact_field_is_the_normalised_density_of_the_maps(tiny_sim):
    """log p(rho) = log N(ln rho; mean_g, C_g) - sum ln rho, from a dense covariance (scipy)."""
    rho = torch.as_tensor(tiny_sim.simulate(np.array([0.25, 0.75]), 2, seed=3))
    for sigma_n in (0.0, 0.3):
        d = ExactLognormalField(THETA, tiny_sim, noise_sigma=sigma_n)
        ours = d.log_prob(rho).numpy()
        lam = tiny_sim.eigenvalues(THETA[None])[0].numpy()
        scale = tiny_sim.transform.scale
        cov = _dense_covariance(lam) + (sigma_n * scale) ** 2 * np.eye(64)
        mean = np.full(64, -lam.mean() / 2)
        g = np.log(rho.numpy()).reshape(2, -1)
        ref = stats.multivariate_normal(mean, cov).logpdf(g) - g.sum(axis=1)
        np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert d.sample((3,)).shape == (3, 8, 8)
    outside = ExactLognormalField(torch.tensor([0.7, 0.8]), tiny_sim).log_prob(rho)
    assert torch.all(torch.isinf(outside))


def _pyro_model(maps, field, **options):
    low = torch.tensor([0.1, 0.6], dtype=torch.float64)
    om = pyro.sample("Omega_m", dist.Uniform(low[0], low[0] + 0.4))
    s8 = pyro.sample("sigma_8", dist.Uniform(low[1], low[1] + 0.4))
    with pyro.plate("maps", len(maps)):
        pyro.sample("field", field(torch.stack([om, s8]), **options), obs=maps)


def test_pyro_nuts_on_several_maps_sharing_theta(sim):
    maps = torch.as_tensor(sim.simulate(THETA.numpy(), 3, seed=1))
    pyro.set_rng_seed(0)
    kernel = NUTS(_pyro_model, max_tree_depth=4)
    mcmc = MCMC(kernel, num_samples=150, warmup_steps=100, disable_progbar=True)
    mcmc.run(maps, ExactLognormalField, simulator=sim)
    draws = mcmc.get_samples()
    fit = sim.maximum_likelihood(sim.transform.forward(maps))
    fisher_std = np.sqrt(1 / np.sum(1 / fit.std**2, axis=0))  # ~ one-map error / sqrt(3)
    for j, name in enumerate(("Omega_m", "sigma_8")):
        assert draws[name].std().item() == pytest.approx(fisher_std[j], rel=0.25)
        assert abs(draws[name].mean().item() - THETA[j].item()) < 4 * fisher_std[j]


def test_diffusion_field_matches_the_exact_one_with_the_oracle(sim):
    maps = torch.as_tensor(sim.simulate(THETA.numpy(), 2, seed=2))
    oracle = DiffusionModel.oracle(sim)
    thetas = [THETA, torch.tensor([0.36, 0.76], dtype=torch.float64)]
    diff, exact = [], []
    for theta in thetas:
        d = DiffusionField(theta, oracle, n_timesteps=None)  # the full bound
        diff.append(d.log_prob(maps).sum().item())
        exact.append(ExactLognormalField(theta, sim).log_prob(maps).sum().item())
    assert abs(exact[1] - exact[0]) > 5
    assert (diff[1] - diff[0]) == pytest.approx(exact[1] - exact[0], abs=1.0)
    from diffinfer.likelihoods.distributions import _LIKELIHOODS

    _LIKELIHOODS.clear()
    d = DiffusionField(THETA, oracle, n_timesteps=8)
    assert d.log_prob(maps).shape == (2,) and len(_LIKELIHOODS) == 2
    # a Pyro model builds a new distribution at every step: the likelihoods are shared
    DiffusionField(thetas[1], oracle, n_timesteps=8).log_prob(maps)
    assert len(_LIKELIHOODS) == 2  # one per map
    assert d.expand((4,)).sample().shape == (4, 64, 64)
    with pytest.raises(InputError, match="fixed noise level"):
        DiffusionField(THETA, oracle, noise_sigma=torch.tensor(0.1, requires_grad=True))
