"""The diffusion likelihood against the exact log-normal likelihood (oracle denoiser)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffinfer.diffusion import DiffusionModel, NoiseSchedule, UNetConfig
from diffinfer.errors import InputError
from diffinfer.fields import FieldConfig
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.likelihoods.terms import plan_terms, term_weights
from diffinfer.simulators import LognormalSimulator

TRUTH = np.array([0.3, 0.8])


@pytest.fixture(scope="module")
def oracle(sim) -> DiffusionModel:
    return DiffusionModel.oracle(sim)


@pytest.fixture(scope="module")
def y(sim) -> torch.Tensor:
    return sim.transform.forward(sim.simulate(TRUTH, 1, seed=4)[0])


def test_term_weights_are_the_gaussian_kl_factors(oracle):
    """w_t ||eps - eps_hat||^2 equals the KL between the posterior and the reverse step."""
    s = oracle.schedule
    w = term_weights(oracle).numpy()
    beta, ab = s.betas.numpy(), s.alpha_bar.numpy()
    for t in (2, 10, 500, 1000):
        # mean difference of the two Gaussians for a unit epsilon error
        coef = beta[t] / (np.sqrt(1 - beta[t]) * np.sqrt(1 - ab[t]))
        var = s.posterior_variance.numpy()[t]
        assert w[t - 1] == pytest.approx(coef**2 / (2 * var), rel=1e-12)
    # L_0: decoder N(mu_hat, beta_1) with mu_hat - y = sqrt(beta_1 / alpha_1) (eps - eps_hat)
    assert w[0] == pytest.approx((beta[1] / (1 - beta[1])) / (2 * beta[1]), rel=1e-12)


def test_full_vlb_tracks_the_exact_likelihood(sim, oracle, y):
    """All T terms, one noise draw each: differences within 0.5 nats of the exact ones."""
    exact_best = sim.maximum_likelihood(y).theta[0]
    offsets = np.array([[0, 0], [0.02, 0], [-0.02, 0], [0, 0.015], [0, -0.015],
                        [0.03, -0.02], [-0.03, 0.02], [0.05, 0.0], [0.0, 0.04]])  # fmt: skip
    theta = torch.as_tensor(exact_best + offsets)
    exact = sim.exact_log_prob(y, theta).numpy()
    full = DiffusionLikelihood(oracle, y, terms="vlb", n_timesteps=None, space="model")
    vlb = full(theta).numpy()
    error = (vlb - vlb[0]) - (exact - exact[0])
    assert np.max(np.abs(exact - exact[0])) > 5  # the points span several nats
    assert np.max(np.abs(error)) < 0.5, error.round(3)


def test_l0_alone_is_nearly_flat_for_these_maps(sim, oracle, y):
    """With beta_1 = 1e-4 every mode of these maps is far above the t = 1 noise: L_0 carries
    almost no information on theta (docs/likelihood.md)."""
    theta = torch.tensor([[0.25, 0.75], [0.35, 0.85]])
    exact = sim.exact_log_prob(y, theta).numpy()
    l0 = DiffusionLikelihood(oracle, y, terms="l0", space="model", n_noise=8)(theta).numpy()
    assert abs(exact[1] - exact[0]) > 10 and abs(l0[1] - l0[0]) < 1


def test_deterministic_batched_and_seeded(oracle, y):
    like = DiffusionLikelihood(oracle, y, terms="vlb", n_timesteps=32, space="model", seed=3)
    theta = torch.tensor([[0.3, 0.8], [0.28, 0.82], [0.33, 0.78]])
    a, b = like(theta), like(theta)
    assert torch.equal(a, b)
    one_by_one = torch.cat([like(theta[i]) for i in range(3)])
    torch.testing.assert_close(a, one_by_one, rtol=1e-12, atol=1e-9)
    small = DiffusionLikelihood(oracle, y, terms="vlb", n_timesteps=32, space="model", seed=3,
                                max_batch=7)(theta)  # fmt: skip
    torch.testing.assert_close(a, small, rtol=1e-12, atol=1e-9)
    other = DiffusionLikelihood(oracle, y, terms="vlb", n_timesteps=32, space="model", seed=4)
    assert not torch.allclose(a, other(theta))
    spread = like.seed_spread(theta, n_seeds=4)
    assert spread.shape == (3,) and spread[0] == 0 and np.all(spread[1:] > 0)


def test_importance_sampled_vlb_is_unbiased(oracle):
    """Averaged over seeds, the K-timestep estimate of the full sum equals the sum itself."""
    w = term_weights(oracle)
    f = torch.linspace(1, 2, oracle.schedule.n_steps, dtype=torch.float64)  # any term sizes
    exact = (w * f).sum().item()
    estimates = []
    for seed in range(200):
        plan = plan_terms(oracle, "vlb", n_timesteps=16,
                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
        estimates.append((plan.weights * f[plan.timesteps - 1]).sum().item())
    est = np.array(estimates)
    assert abs(est.mean() - exact) < 4 * est.std(ddof=1) / np.sqrt(len(est)) + 1e-9 * exact


def _central_difference(like, theta: torch.Tensor, h: float) -> np.ndarray:
    """Central finite differences of log L at one theta (1, 2), per parameter."""
    out = []
    for j in range(2):
        e = torch.zeros(1, 2, dtype=torch.float64)
        e[0, j] = h
        out.append((like(theta + e) - like(theta - e)).item() / (2 * h))
    return np.array(out)


def test_gradients_match_finite_differences(sim, oracle, y):
    like = DiffusionLikelihood(oracle, y, terms=[0, 50, 200, 400], n_noise=2, space="model")
    theta = torch.tensor([[0.31, 0.79]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(like(theta).sum(), theta)
    fd = _central_difference(like, theta.detach(), 1e-5)
    np.testing.assert_allclose(grad[0].numpy(), fd, rtol=1e-5, atol=1e-6)


def test_gradients_through_a_network():
    field = FieldConfig(n_pix=16, box_size=125.0, depth=50.0)
    sim = LognormalSimulator(field)
    torch.manual_seed(0)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), embed_dim=16, groups=4, spectral=True)
    model = DiffusionModel.from_config(cfg, NoiseSchedule(n_steps=50), sim.transform, field)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    density = sim.simulate(TRUTH, 1, seed=0)[0]
    # fp32: "auto" means bf16 on a CPU with AMX, too coarse for a finite difference of 1e-3
    like = DiffusionLikelihood(model, density, terms=[0, 5, 20], precision="fp32")
    theta = torch.tensor([[0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(like(theta).sum(), theta)
    fd = _central_difference(like, theta.detach(), 1e-3)
    np.testing.assert_allclose(grad[0].numpy(), fd, rtol=2e-2, atol=1e-3)


def test_outside_the_prior_is_minus_infinity_and_bad_input_is_refused(sim, oracle, y):
    like = DiffusionLikelihood(oracle, y, terms="l0", space="model")
    values = like(torch.tensor([[0.3, 0.8], [0.7, 0.8], [0.3, 0.2]]))
    assert np.isfinite(values[0].item()) and torch.all(torch.isinf(values[1:]))
    theta = torch.tensor([[0.3, 0.8], [0.9, 0.8]], dtype=torch.float64, requires_grad=True)
    like(theta)[0].backward()  # a -inf row does not break gradients of the others
    assert torch.isfinite(theta.grad).all()
    density = sim.simulate(TRUTH, 1, seed=0)[0]
    with pytest.raises(InputError, match="32 x 32"):
        DiffusionLikelihood(oracle, density[:32, :32])
    bad = density.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        DiffusionLikelihood(oracle, bad)
    with pytest.raises(InputError, match="positive"):
        DiffusionLikelihood(oracle, density - 1.0)
    with pytest.raises(InputError, match="25 Mpc/h"):
        DiffusionLikelihood(oracle, density, box_size=25.0)
    with pytest.raises(InputError, match="unknown likelihood terms"):
        DiffusionLikelihood(oracle, density, terms="l1")
    with pytest.raises(InputError, match="distinct integers"):
        DiffusionLikelihood(oracle, density, terms=[0, 0, 1000])
    with pytest.raises(InputError, match=r"shape \(B, 2\)|shape"):
        like(torch.zeros(3, 3))


@pytest.mark.parametrize("t_star", [50, 200])
def test_noisy_map_likelihood_tracks_the_exact_noisy_likelihood(sim, oracle, y, t_star):
    """A map with white noise at the level of timestep t*: full bound above t* against the
    closed-form likelihood with lambda_k + sigma_n^2 (and far from the noise-free one)."""
    ab = oracle.schedule.alpha_bar
    sigma = float(((1 - ab[t_star]) / ab[t_star]).sqrt())
    z = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(9),
                                dtype=torch.float64)  # fmt: skip
    theta = torch.tensor([[0.3, 0.8], [0.32, 0.8], [0.28, 0.8], [0.3, 0.82], [0.3, 0.78],
                          [0.35, 0.75], [0.25, 0.85]], dtype=torch.float64)  # fmt: skip
    exact = sim.exact_log_prob(z, theta, noise_sigma=sigma).numpy()
    like = DiffusionLikelihood(
        oracle, z, terms="vlb", n_timesteps=None, space="model", noise_sigma=sigma
    )
    assert int(like.plan.timesteps[0]) == t_star + 1
    approx = like(theta).numpy()
    error = (approx - approx[0]) - (exact - exact[0])
    assert np.max(np.abs(error)) < 0.5, error.round(3)
    ignoring = sim.exact_log_prob(z, theta).numpy()
    assert np.max(np.abs((ignoring - ignoring[0]) - (exact - exact[0]))) > 2


def test_noise_level_errors(oracle, y):
    with pytest.raises(InputError, match="noise_sigma"):
        DiffusionLikelihood(oracle, y, space="model", noise_sigma=1e3)
    with pytest.raises(InputError, match="starts at term"):
        DiffusionLikelihood(oracle, y, space="model", terms=[0, 1], noise_sigma=0.2)


@pytest.mark.parametrize("kwargs", [{"terms": "vlb", "n_timesteps": 64}, {"terms": "l0"},
                                    {"terms": "vlb", "n_timesteps": 32, "noise_sigma": 0.3,
                                     "n_noise": 2}])  # fmt: skip
def test_fourier_space_oracle_equals_calling_the_denoiser(oracle, y, kwargs):
    theta = torch.tensor([[0.3, 0.8], [0.25, 0.85], [0.35, 0.75]], dtype=torch.float64)
    like = DiffusionLikelihood(oracle, y, space="model", seed=1, **kwargs)
    fast = like(theta)
    like.fast_oracle = False
    np.testing.assert_allclose(fast.numpy(), like(theta).numpy(), rtol=1e-12, atol=1e-8)
    # and its gradient
    x = theta[:1].clone().requires_grad_(True)
    like(x).sum().backward()
    slow_grad = x.grad.clone()
    like.fast_oracle = True
    x = theta[:1].clone().requires_grad_(True)
    like(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), slow_grad.numpy(), rtol=1e-9)


def test_the_graph_is_built_only_when_theta_asks_for_gradients():
    from pathlib import Path

    from diffinfer.diffusion import load_model

    field = np.load(Path(__file__).resolve().parents[1] / "examples" / "lognormal64" / "map1.npy")
    like = DiffusionLikelihood(load_model("lognormal64"), field, terms=[1, 200])
    plain = like(np.array([[0.25, 0.78], [0.3, 0.8]]))
    assert plain.grad_fn is None and not plain.requires_grad
    theta = torch.tensor([[0.25, 0.78]], dtype=torch.float64, requires_grad=True)
    value = like(theta)
    value.sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()
    assert float(value.detach()) == pytest.approx(float(plain[0]), rel=1e-6, abs=1e-6)
