"""Noise schedules and the oracle denoiser of the log-normal simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffinfer.diffusion import NoiseSchedule, OracleDenoiser
from diffinfer.errors import InputError
from tests.test_lognormal import _dense_covariance


def test_schedule_definitions():
    lin = NoiseSchedule("linear")
    assert lin.betas[1].item() == pytest.approx(1e-4) and lin.betas[-1].item() == pytest.approx(
        0.02
    )
    custom = NoiseSchedule("custom-linear")
    b = custom.betas.numpy()[1:]
    assert np.allclose(b[:500], np.linspace(1e-4, 0.01, 1000)[:500])
    assert b[-1] == pytest.approx(0.03) and b[500] == pytest.approx(
        np.linspace(1e-4, 0.01, 1000)[500]
    )
    cos = NoiseSchedule("cosine")
    assert cos.betas.max().item() <= 0.999 and cos.alpha_bar[-1].item() < 1e-6
    for s in (lin, custom, cos):
        ab = s.alpha_bar.numpy()
        assert ab[0] == 1.0 and np.all(np.diff(ab) < 0) and s.alpha_bar.dtype == torch.float64
        assert torch.allclose(s.snr, s.alpha_bar[1:] / (1 - s.alpha_bar[1:]))
    with pytest.raises(InputError, match="unknown noise schedule"):
        NoiseSchedule("quadratic")


@pytest.mark.parametrize("kind", ["linear", "cosine", "custom-linear"])
def test_posterior_of_the_forward_process_by_gaussian_conditioning(kind):
    s = NoiseSchedule(kind)
    ab, beta = s.alpha_bar.numpy(), s.betas.numpy()
    c0, ct = (c.numpy() for c in s.posterior_mean_coefficients())
    var = s.posterior_variance.numpy()
    for t in (2, 10, 500, 1000):
        # joint of (x_{t-1}, x_t) given x_0, conditioned on x_t
        v_prev, v_t = 1 - ab[t - 1], 1 - ab[t]
        cov = np.sqrt(1 - beta[t]) * v_prev
        assert var[t] == pytest.approx(v_prev - cov**2 / v_t, rel=1e-10)
        assert ct[t] == pytest.approx(cov / v_t, rel=1e-10)
        assert c0[t] == pytest.approx(np.sqrt(ab[t - 1]) - cov / v_t * np.sqrt(ab[t]), rel=1e-8)


def test_oracle_matches_dense_gaussian_conditioning(tiny_sim):
    sched = NoiseSchedule("linear")
    oracle = OracleDenoiser(tiny_sim, sched)
    theta = torch.tensor([[0.3, 0.8]], dtype=torch.float64)
    y = tiny_sim.transform.forward(tiny_sim.simulate(theta[0].numpy(), 1, seed=0)[0])
    rng = np.random.default_rng(1)
    mean, lam = tiny_sim.model_moments(theta)
    cov = _dense_covariance(lam[0].numpy())
    for t in (1, 50, 400, 1000):
        a = sched.alpha_bar[t].item()
        eps = torch.as_tensor(rng.standard_normal((8, 8)))
        x_t = np.sqrt(a) * y + np.sqrt(1 - a) * eps
        ref = np.sqrt(1 - a) * np.linalg.solve(
            a * cov + (1 - a) * np.eye(64), (x_t - np.sqrt(a) * mean.item()).numpy().ravel()
        )
        ours = oracle(x_t[None, None], torch.tensor([t]), theta)[0, 0].numpy().ravel()
        assert np.allclose(ours, ref, atol=1e-10)


def test_oracle_mse_matches_its_analytic_value(sim):
    sched = NoiseSchedule("linear")
    oracle = OracleDenoiser(sim, sched)
    theta = np.array([0.3, 0.8])
    y = sim.transform.forward(sim.simulate(theta, 64, seed=5))
    gen = torch.Generator().manual_seed(0)
    for t in (1, 100, 500, 900):
        eps = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        tt = torch.full((64,), t)
        x_t = sched.q_sample(y, tt, eps)
        pred = oracle(x_t[:, None], tt, torch.tensor(theta[None]))[:, 0]
        per_map = ((pred - eps) ** 2).mean(dim=(-2, -1))
        expected = oracle.expected_mse(torch.tensor([t]), theta).item()
        se = per_map.std().item() / np.sqrt(64)
        assert abs(per_map.mean().item() - expected) < 4 * se + 1e-12
        assert expected < 1.0  # better than predicting zero noise


def test_oracle_bad_input(sim):
    oracle = OracleDenoiser(sim, NoiseSchedule())
    with pytest.raises(InputError, match="shape"):
        oracle(torch.zeros(1, 64, 64), torch.tensor([1]), torch.tensor([[0.3, 0.8]]))
    with pytest.raises(InputError, match="timesteps"):
        oracle(torch.zeros(1, 1, 64, 64), torch.tensor([0]), torch.tensor([[0.3, 0.8]]))
