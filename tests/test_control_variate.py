"""The Wiener-filter control variate of the VLB likelihood (docs/likelihood.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffinfer.diffusion import DiffusionModel, NoiseSchedule
from diffinfer.errors import InputError
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.simulators import LognormalSimulator
from tests.small_models import SMALL_FIELD, small_spectral_model

FIELD = SMALL_FIELD
THETA = np.array([[0.3, 0.8], [0.33, 0.78]])


@pytest.fixture(scope="module")
def density() -> np.ndarray:
    return LognormalSimulator(FIELD).simulate(np.array([0.3, 0.8]), 1, seed=3)[0]


def test_expected_error_matches_monte_carlo(density):
    """The closed form against 4,000 noise draws through the branch itself, at four t."""
    model = small_spectral_model(0.0)
    branch = model.denoiser.spectral
    y = model.to_model_space(density)
    unit = FIELD.prior.to_unit(torch.tensor([[0.3, 0.8]]))
    closed = branch.expected_error(y, unit)[0]
    gen = torch.Generator().manual_seed(1)
    for t in (1, 5, 20, 50):
        a = model.schedule.alpha_bar[t]
        eps = torch.randn(4000, 1, 16, 16, generator=gen, dtype=torch.float64)
        x_t = (a.sqrt() * y + (1 - a).sqrt() * eps).float()
        with torch.no_grad():
            out = branch(x_t, torch.full((4000,), t), unit.expand(4000, 2))
        err = (out.double() - eps).pow(2).sum(dim=(1, 2, 3))
        se = err.std() / np.sqrt(len(err))
        assert abs(err.mean() - closed[t - 1]) < 4 * se, (t, err.mean(), closed[t - 1], se)


def test_unbiased_and_quieter_than_the_plain_estimate(density):
    """Over 120 seeds the control-variate estimate of a log L difference has the mean of the
    plain estimate (within their joint standard error) and a smaller spread."""
    model = small_spectral_model(0.05)
    plain, cv = [], []
    for seed in range(120):
        for flag, out in ((False, plain), (True, cv)):
            like = DiffusionLikelihood(model, density, terms="vlb", n_timesteps=6, seed=seed,
                                       proposal="default", control_variate=flag)  # fmt: skip
            v = like(THETA).numpy()
            out.append(v[1] - v[0])
    plain, cv = np.array(plain), np.array(cv)
    se = np.sqrt(plain.var(ddof=1) / len(plain) + cv.var(ddof=1) / len(cv))
    assert abs(plain.mean() - cv.mean()) < 3.5 * se
    assert cv.std() < 0.5 * plain.std()


def test_a_pure_wiener_network_needs_no_sampling(density):
    """With a zero U-Net output the estimate is the closed form: the same for every seed."""
    model = small_spectral_model(0.0)
    values = [DiffusionLikelihood(model, density, terms="vlb", n_timesteps=4, seed=s)(THETA)
              for s in range(3)]  # fmt: skip
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=0, atol=1e-6 * float(values[0].abs().max()))


def test_gradient_matches_finite_differences(density):
    model = small_spectral_model(0.05)
    like = DiffusionLikelihood(model, density, terms="vlb", n_timesteps=8, seed=2)
    assert like.control_variate
    theta = torch.tensor([[0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(like(theta).sum(), theta)
    h = 1e-3
    fd = [(like(THETA[:1] + h * e) - like(THETA[:1] - h * e)).item() / (2 * h)
          for e in np.eye(2)]  # fmt: skip
    np.testing.assert_allclose(grad[0].numpy(), fd, rtol=2e-2, atol=1e-2)


def test_where_it_applies(density):
    model = small_spectral_model(0.0)
    assert not DiffusionLikelihood(model, density, terms="l0").control_variate
    assert not DiffusionLikelihood(model, density, terms="vlb", noise_sigma=0.1).control_variate
    off = DiffusionLikelihood(model, density, terms="vlb", control_variate=False)
    assert not off.control_variate
    oracle = DiffusionModel.oracle(LognormalSimulator(FIELD), NoiseSchedule(n_steps=50))
    assert not DiffusionLikelihood(oracle, density, terms="vlb").control_variate
    with pytest.raises(InputError, match="spectral branch"):
        DiffusionLikelihood(oracle, density, terms="vlb", control_variate=True)
    with pytest.raises(InputError, match="terms='vlb'"):
        DiffusionLikelihood(model, density, terms="l0", control_variate=True)
    with pytest.raises(InputError, match="control_variate"):
        DiffusionLikelihood(model, density, terms="vlb", control_variate="yes")
