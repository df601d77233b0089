"""The three methods agree with a dense-grid reference (posterior issue's acceptance rules).

Means within 0.1 sigma, standard deviations within 10 %, classifier two-sample accuracy below
0.55; for MCMC at default settings R-hat < 1.01 and bulk ESS > 400.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffinfer.calibration.compare import two_sample_accuracy
from diffinfer.diffusion import DiffusionModel
from diffinfer.inference.posterior import posterior
from diffinfer.likelihoods.diffusion import DiffusionLikelihood

TRUTH = np.array([0.3, 0.8])


def test_two_sample_accuracy_detects_shifts_and_passes_equal_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2))
    assert abs(two_sample_accuracy(a, b) - 0.5) < 0.02
    assert two_sample_accuracy(a, b + np.array([0.5, 0.0])) > 0.57
    assert two_sample_accuracy(a, b * [1.5, 1.0]) > 0.55


def _dense_reference(log_like, seed: int = 0, n: int = 4000, cells: int = 241):
    """Samples and moments from a dense grid (cells^2) over the posterior's region."""
    coarse = np.stack(np.meshgrid(np.linspace(0.1, 0.5, 81), np.linspace(0.6, 1.0, 81),
                                  indexing="ij"), -1).reshape(-1, 2)  # fmt: skip
    with torch.no_grad():
        lp = log_like(torch.as_tensor(coarse)).numpy()
    near = coarse[lp > lp.max() - 15]
    lo, hi = near.min(0) - 0.01, near.max(0) + 0.01
    axes = [np.linspace(lo[j], hi[j], cells) for j in range(2)]
    theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        lp = log_like(torch.as_tensor(theta)).numpy()
    w = np.exp(lp - lp.max())
    w /= w.sum()
    mean = w @ theta
    std = np.sqrt(w @ (theta - mean) ** 2)
    rng = np.random.default_rng(seed)
    cells = rng.choice(len(theta), n, p=w)
    step = np.array([a[1] - a[0] for a in axes])
    draws = theta[cells] + (rng.random((n, 2)) - 0.5) * step
    return draws, mean, std


def _check(samples, reference) -> None:
    draws, mean, std = reference
    flat = samples.flat
    assert np.all(np.abs(flat.mean(0) - mean) < 0.1 * std), (flat.mean(0), mean, std)
    np.testing.assert_allclose(flat.std(0), std, rtol=0.1)
    assert two_sample_accuracy(flat, draws) < 0.55


@pytest.fixture(scope="module")
def exact_case(sim):
    density = sim.simulate(TRUTH, 1, seed=4)[0]
    y = sim.transform.forward(density)
    return density, _dense_reference(lambda th: sim.exact_log_prob(y, th, outside="-inf"))


@pytest.mark.parametrize("method", ["grid", "emcee"])
def test_grid_and_emcee_agree_with_the_dense_reference(exact_case, method):
    density, reference = exact_case
    # 1,500 draws: emcee then stops at its convergence criterion (50 autocorrelation times)
    # rather than at the draw count (4,000 draws need ~127 tau), 2.5x sooner
    n = 1500 if method == "emcee" else 4000
    samples = posterior(density, model=None, likelihood="exact", method=method, seed=3).sample(n)
    _check(samples, reference)
    if method == "emcee":  # run until the chain is 50 autocorrelation times long and its
        diag = samples.info["diagnostics"]  # walkers agree (R-hat <= 1.01, ESS >= 400)
        assert diag["converged"] and diag["steps"] >= 50 * diag["autocorrelation_time"]
        assert diag["convergence"]["rhat"] <= 1.01 and diag["convergence"]["ess_bulk"] >= 400


@pytest.mark.slow
def test_nuts_at_default_settings(exact_case):
    import arviz as az

    density, reference = exact_case
    samples = posterior(density, model=None, likelihood="exact", method="nuts", seed=3).sample()
    _check(samples, reference)
    idata = samples.to_arviz()
    assert all(float(v) < 1.01 for v in az.rhat(idata).values())
    assert all(float(v) > 400 for v in az.ess(idata, method="bulk").values())
    assert samples.info["diagnostics"]["divergences"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grid", "emcee"])
def test_methods_agree_on_the_oracle_diffusion_likelihood(sim, method):
    density = sim.simulate(TRUTH, 1, seed=5)[0]
    oracle = DiffusionModel.oracle(sim)
    options = {"terms": "vlb", "n_timesteps": 64, "seed": 0}
    like = DiffusionLikelihood(oracle, density, **options)
    reference = _dense_reference(like, cells=121)
    samples = posterior(density, model=oracle, likelihood="vlb", method=method, seed=0,
                        n_timesteps=64).sample()  # fmt: skip
    _check(samples, reference)
