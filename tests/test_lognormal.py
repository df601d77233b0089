"""The log-normal simulator and its exact likelihood."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from diffinfer.errors import InputError, OutsidePriorError
from diffinfer.fields import FieldConfig, Transform
from diffinfer.fields.grid import wavenumber_grid
from diffinfer.simulators import LognormalSimulator


def _dense_covariance(lam: np.ndarray) -> np.ndarray:
    """Covariance matrix of a periodic field from its DFT eigenvalues, built pixel by pixel."""
    n = lam.shape[-1]
    c = np.fft.ifft2(lam).real  # c(dx, dy)
    idx = np.indices((n, n)).reshape(2, -1)
    dx = (idx[0][:, None] - idx[0][None, :]) % n
    dy = (idx[1][:, None] - idx[1][None, :]) % n
    return c[dx, dy]


def test_exact_log_prob_matches_dense_multivariate_normal(tiny_sim):
    thetas = np.array([[0.3, 0.8], [0.12, 0.95], [0.48, 0.62]])
    y = tiny_sim.transform.forward(tiny_sim.simulate(np.array([0.25, 0.75]), 3, seed=4))
    ours = tiny_sim.exact_log_prob(y[0], thetas).numpy()
    for theta, value in zip(thetas, ours, strict=True):
        mean, lam = tiny_sim.model_moments(torch.tensor(theta[None]))
        cov = _dense_covariance(lam[0].numpy())
        ref = multivariate_normal(mean=np.full(64, mean.item()), cov=cov).logpdf(
            y[0].numpy().ravel()
        )
        assert abs(value - ref) < 1e-8


def test_simulated_maps_have_the_model_mean_and_variance(sim):
    theta = np.array([0.35, 0.9])
    rho = sim.simulate(theta, 400, seed=2)
    g = np.log(rho)
    s2 = sim.log_variance(theta).item()
    # mean of ln rho is -sigma_g^2/2 and <rho> = 1; errors from the k=0 and low-k modes
    per_map = g.mean(axis=(-2, -1))
    lam0 = sim.eigenvalues(torch.tensor(theta[None]))[0, 0, 0].item()
    se_mean = math.sqrt(lam0 / sim.config.n_pix**2 / 400)
    assert abs(per_map.mean() + s2 / 2) < 4 * se_mean
    assert abs(g.var() / s2 - 1) < 0.05


def test_simulate_is_reproducible_and_independent_of_batching(sim):
    theta = np.array([[0.2, 0.7], [0.4, 0.9], [0.3, 0.8], [0.45, 0.65], [0.3, 0.8], [0.15, 0.95]])
    a = sim.simulate(theta, 2, seed=11)
    assert a.shape == (6, 2, 64, 64)
    # the same call: bit for bit
    assert np.array_equal(a, sim.simulate(theta, 2, seed=11))
    assert np.array_equal(sim.simulate(torch.as_tensor(theta), 2, seed=11), a)
    # each map is transformed on its own, so map j does not depend on n (bit for bit)
    assert np.array_equal(sim.simulate(theta, 5, seed=11)[:, :2], a)
    one = sim.simulate(theta[3], 2, seed=11, row_offset=3)
    assert np.array_equal(sim.simulate(theta[3], 7, seed=11, row_offset=3)[:2], one)
    # other batchings: the noise is the same, the spectra of a batch differ from those of
    # single rows by rounding (~1e-15), so the maps agree to 1e-12, not bit for bit
    # (docs/simulator.md)
    split = [(0, 1), (1, 4), (4, 6)]  # uneven calls, with row_offset
    parts = np.concatenate([sim.simulate(theta[i:j], 2, seed=11, row_offset=i) for i, j in split])
    np.testing.assert_allclose(parts, a, rtol=1e-12, atol=0)
    np.testing.assert_allclose(one, a[3], rtol=1e-12, atol=0)
    np.testing.assert_allclose(sim.simulate(theta, 2, seed=11, chunk=4), a, rtol=1e-12, atol=0)
    assert not np.allclose(a, sim.simulate(theta, 2, seed=12))
    assert not np.allclose(a[2], a[4])  # equal theta, different rows: different noise


def test_maximum_likelihood_is_unbiased_with_fisher_errors(sim):
    truth = np.array([0.3, 0.8])
    y = sim.transform.forward(sim.simulate(truth, 200, seed=7))
    fit = sim.maximum_likelihood(y)
    assert fit.converged.all()
    mean, spread = fit.theta.mean(axis=0), fit.theta.std(axis=0, ddof=1)
    assert np.all(np.abs(mean - truth) < 3 * spread / np.sqrt(200))
    # the scatter of the estimates matches the Fisher forecast (sampling error of a std
    # from 200 draws is ~5 %)
    fisher_std = np.sqrt(np.diag(np.linalg.inv(sim.fisher(truth)[0].numpy())))
    assert np.all(np.abs(spread / fisher_std - 1) < 0.15)


def test_log_prob_gradients_match_finite_differences(sim):
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=1)[0])
    theta = torch.tensor([[0.31, 0.79], [0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: sim.exact_log_prob(y, t) / 1e3, (theta,), eps=1e-6, atol=1e-5
    )


def test_fisher_matches_expected_hessian(tiny_sim):
    # Fisher information = -E[Hessian of log p]; brute force over many tiny maps
    theta = np.array([0.3, 0.8])
    y = tiny_sim.transform.forward(tiny_sim.simulate(theta, 4000, seed=3))
    t = torch.tensor(theta[None], dtype=torch.float64)
    hess = torch.autograd.functional.hessian(
        lambda th: tiny_sim.exact_log_prob(y, th.expand(1, 2)).mean(), t
    ).reshape(2, 2)
    fisher = tiny_sim.fisher(theta)[0]
    assert torch.allclose(-hess, fisher, rtol=0.08)


def test_ten_thousand_theta_against_one_map(sim):
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0])
    rng = np.random.default_rng(0)
    theta = rng.uniform(sim.config.prior.low, sim.config.prior.high, size=(10_000, 2))
    logp = sim.exact_log_prob(y, theta, chunk=512)
    assert logp.shape == (10_000,) and torch.isfinite(logp).all()
    few = sim.exact_log_prob(y, theta[[0, 5000, 9999]])
    assert torch.allclose(logp[[0, 5000, 9999]], few, rtol=0, atol=1e-8)


def test_paired_and_broadcast_evaluation(sim):
    theta = np.array([[0.3, 0.8], [0.2, 0.7]])
    y = sim.transform.forward(sim.simulate(theta, 1, seed=0)[:, 0])
    paired = sim.exact_log_prob(y, theta)
    one_by_one = torch.stack([sim.exact_log_prob(y[i], theta[i])[0] for i in range(2)])
    assert torch.allclose(paired, one_by_one, rtol=0, atol=1e-9)
    assert sim.exact_log_prob(y, theta[0]).shape == (2,)
    with pytest.raises(InputError, match="paired"):
        sim.exact_log_prob(y, np.tile(theta, (2, 1)))


def test_outside_prior_raises_or_gives_minus_inf(sim):
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0])
    with pytest.raises(OutsidePriorError, match="outside the prior"):
        sim.exact_log_prob(y, [0.6, 0.8])
    logp = sim.exact_log_prob(y, [[0.6, 0.8], [0.3, 0.8]], outside="-inf")
    assert logp[0].item() == -math.inf and math.isfinite(logp[1].item())
    t = torch.tensor([[0.6, 0.8], [0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    sim.exact_log_prob(y, t, outside="-inf")[1].backward()
    assert torch.isfinite(t.grad).all()
    with pytest.raises(OutsidePriorError):
        sim.simulate([0.3, 1.2], 1)


@pytest.mark.parametrize(
    ("field", "theta", "match"),
    [
        (np.zeros((64,)), [0.3, 0.8], "shape"),
        (np.zeros((2, 2, 64, 64)), [0.3, 0.8], "shape"),
        (np.zeros((64, 32)), [0.3, 0.8], "square"),
        (np.zeros((32, 32)), [0.3, 0.8], "32 x 32"),
        (np.full((64, 64), np.nan), [0.3, 0.8], "NaN"),
        (np.zeros((64, 64)), [0.3, 0.8, 0.1], "theta must have shape"),
        (np.zeros((64, 64)), [[np.inf, 0.8]], "NaN or inf"),
    ],
)
def test_bad_input_to_the_likelihood(sim, field, theta, match):
    with pytest.raises(InputError, match=match):
        sim.exact_log_prob(field, theta)


def test_transform_round_trip_save_and_bad_density(tmp_path, sim):
    rho = sim.simulate(np.array([0.3, 0.8]), 2, seed=0)
    tr = Transform(shift=-0.2, scale=0.7)
    assert np.allclose(tr.inverse(tr.forward(rho)).numpy(), rho, rtol=1e-12)
    tr.save(tmp_path / "t.json")
    assert Transform.load(tmp_path / "t.json") == tr
    with pytest.raises(InputError, match="positive"):
        tr.forward(np.zeros((8, 8)))
    with pytest.raises(InputError, match="scale"):
        Transform(shift=0.0, scale=0.0)
    (tmp_path / "bad.json").write_text('{"shift": 0.1')
    with pytest.raises(OSError, match="truncated"):
        Transform.load(tmp_path / "bad.json")


def test_prior_transform_matches_a_fitted_data_set(sim):
    # the analytic constants equal those a large Latin-hypercube data set gives
    from diffinfer.data import latin_hypercube

    theta = latin_hypercube(400, sim.config.prior, seed=1)
    rho = sim.simulate(theta, 2, seed=5).reshape(-1, 64, 64)
    fitted = Transform.fit(rho)
    assert abs(fitted.shift - sim.transform.shift) < 0.01
    assert abs(fitted.scale / sim.transform.scale - 1) < 0.01


def test_k_zero_mode_keeps_its_physical_variance(sim):
    # the map mean of g fluctuates with variance P_2D(0) / L^2 (not zero): check with the
    # projection evaluated directly at k = 0 and 2000 simulated maps (std of a variance
    # estimate from 2000 draws: 3 %)
    from diffinfer.cosmology import projected_power

    theta = np.array([0.3, 0.8])
    g = np.log(sim.simulate(theta, 2000, seed=9))
    var_mean = g.mean(axis=(-2, -1)).var(ddof=1)
    p0 = projected_power(torch.tensor([0.0]), torch.tensor(theta[None]), sim.config.depth).item()
    assert var_mean == pytest.approx(p0 / sim.config.box_size**2, rel=0.12)
    assert wavenumber_grid(64, 500.0)[0, 0] == 0.0


def test_default_configuration_constrains_both_parameters(sim):
    cov = np.linalg.inv(sim.fisher(np.array([0.3, 0.8]))[0].numpy())
    std = np.sqrt(np.diag(cov))
    corr = cov[0, 1] / (std[0] * std[1])
    # both constrained to a small fraction of the prior width, not fully degenerate
    assert np.all(std < 0.1 * sim.config.prior.width)
    assert abs(corr) < 0.9


def test_simulator_repr_and_config_round_trip():
    cfg = FieldConfig(n_pix=16, box_size=100.0, depth=10.0)
    assert FieldConfig.from_dict(cfg.to_dict()) == cfg
    assert "n_pix=16" in repr(LognormalSimulator(cfg))
    with pytest.raises(InputError, match="even"):
        FieldConfig(n_pix=15)
