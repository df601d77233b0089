"""The linear spectrum against colossus, sigma_8 and the projection against scipy quadrature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from diffinfer.cosmology import (
    HUBBLE,
    N_S,
    OMEGA_B,
    T_CMB,
    SlabProjection,
    eisenstein_hu_transfer,
    linear_power,
    projected_power,
    sigma_r,
    tophat_window,
)
from diffinfer.errors import InputError
from scripts.compare_colossus import THETAS, max_relative_difference


@pytest.mark.parametrize(("om", "s8"), THETAS)
def test_linear_power_matches_colossus_eisenstein98(om, s8):
    # the issue asks for 0.5 % over 1e-3 < k < 10 h/Mpc; the measured agreement is ~2e-5
    assert max_relative_difference(om, s8) < 1e-4


@pytest.mark.parametrize(("om", "s8"), THETAS)
def test_sigma8_recovered_by_independent_quadrature(om, s8):
    theta = torch.tensor([[om, s8]], dtype=torch.float64)

    def integrand(lnk):
        k = np.exp(lnk)
        p = linear_power(torch.tensor([k]), theta).item()
        w = tophat_window(torch.tensor(8.0 * k)).item()
        return k**3 * p * w**2 / (2 * np.pi**2)

    var, _ = quad(integrand, np.log(1e-6), np.log(1e3), limit=2000, epsrel=1e-10)
    assert abs(np.sqrt(var) / s8 - 1) < 1e-4


def test_transfer_function_limits():
    om = torch.tensor([[0.3]], dtype=torch.float64)
    t = eisenstein_hu_transfer(torch.tensor([1e-5, 1e-4, 1.0, 10.0]), om)[0]
    assert abs(t[0].item() - 1) < 1e-4  # T -> 1 on large scales
    assert (t[1:] < t[:-1]).all()  # decreasing
    assert tophat_window(torch.tensor([0.0])).item() == 1.0


@pytest.mark.parametrize("depth", [50.0, 5.0])
@pytest.mark.parametrize("k", [0.0, 0.0126, 0.1, 0.5, 2.0])
def test_projection_matches_scipy_quadrature(depth, k):
    from colossus.cosmology.power_spectrum import modelEisenstein98

    theta = torch.tensor([[0.3, 0.8]], dtype=torch.float64)
    # the reference integrand uses colossus' transfer function with our amplitude
    k0 = 0.05
    amp = linear_power(torch.tensor([k0]), theta).item() / (
        k0**N_S * modelEisenstein98(k0, HUBBLE, 0.3, OMEGA_B, T_CMB) ** 2
    )

    def integrand(kz):
        q = np.hypot(k, kz)
        p = amp * q**N_S * modelEisenstein98(q, HUBBLE, 0.3, OMEGA_B, T_CMB) ** 2
        return p * np.sinc(kz * depth / (2 * np.pi)) ** 2 / np.pi

    ref, _ = quad(integrand, 0.0, np.inf, limit=4000, epsabs=0.0, epsrel=1e-10)
    ours = projected_power(torch.tensor([k]), theta, depth).item()
    assert abs(ours / ref - 1) < 2e-6


def test_projection_white_noise_limit():
    # for P_3D flat on the scales the window passes, P_2D -> P_3D / d; check the scaling
    # with depth at large k instead, where P_3D varies slowly over the window width
    theta = torch.tensor([[0.3, 0.8]], dtype=torch.float64)
    k = torch.tensor([1.0])
    p3 = linear_power(k, theta).item()
    p2 = projected_power(k, theta, 400.0).item()
    assert abs(p2 * 400.0 / p3 - 1) < 0.02


def test_projection_gradients_match_finite_differences():
    proj = SlabProjection(np.array([0.0, 0.02, 0.1, 0.4]), 50.0)
    theta = torch.tensor([[0.27, 0.83], [0.45, 0.65]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.log(proj(t)), (theta,), eps=1e-6, atol=1e-6)


def test_sigma_r_gradients_match_finite_differences():
    om = torch.tensor([0.15, 0.33], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda o: sigma_r(o, 8.0), (om,), eps=1e-6, atol=1e-7)


def test_grid_deduplication_matches_direct_evaluation():
    proj = SlabProjection(np.linspace(0.0, 0.6, 7), 50.0)
    theta = torch.tensor([[0.3, 0.8], [0.3, 0.6], [0.2, 0.8]], dtype=torch.float64)
    batched = proj(theta)
    single = torch.cat([proj(theta[i : i + 1].clone().requires_grad_(True)) for i in range(3)])
    assert torch.allclose(batched, single.detach(), rtol=1e-13)
    assert torch.allclose(
        batched[0] / batched[1], torch.tensor((0.8 / 0.6) ** 2, dtype=torch.float64)
    )


def test_bad_parameters_raise():
    with pytest.raises(InputError, match="shape"):
        linear_power(torch.tensor([0.1]), torch.tensor([0.3, 0.8]))
    with pytest.raises(InputError, match="Omega_b"):
        linear_power(torch.tensor([0.1]), torch.tensor([[0.01, 0.8]]))
    with pytest.raises(InputError, match="depth"):
        SlabProjection(np.array([0.1]), -1.0)
