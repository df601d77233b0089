"""Linear matter power spectra, differentiable in (Omega_m, sigma_8).

The 3D spectrum is the Eisenstein & Hu (1998, ApJ 496, 605) transfer function with baryon
features, a primordial tilt n_s and an amplitude set by sigma_8 (top-hat radius 8 Mpc/h),
at redshift zero. The fixed parameters are those of the CAMELS suites. The 2D spectrum of a
slab of depth d is the line-of-sight projection with the slab's sinc^2 window.

Units: k in h/Mpc, P_3D in (Mpc/h)^3, P_2D in (Mpc/h)^2. All functions are written in torch,
batched over parameter vectors theta of shape (B, 2), and differentiable in theta.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from diffinfer.errors import InputError

OMEGA_B = 0.049
"""Baryon density parameter of the CAMELS suites."""
HUBBLE = 0.6711
"""Dimensionless Hubble parameter h of the CAMELS suites."""
N_S = 0.9624
"""Primordial spectral index of the CAMELS suites."""
T_CMB = 2.7255
"""CMB temperature today in K (the value colossus' planck cosmologies use)."""
R_SIGMA8 = 8.0
"""Top-hat radius in Mpc/h that defines sigma_8."""

_DTYPE = torch.float64


def eisenstein_hu_transfer(
    k: torch.Tensor,
    omega_m: torch.Tensor,
    *,
    omega_b: float = OMEGA_B,
    h: float = HUBBLE,
    t_cmb: float = T_CMB,
) -> torch.Tensor:
    """Eisenstein & Hu (1998) transfer function with baryon acoustic features.

    Parameters
    ----------
    k
        Wavenumbers in h/Mpc; any shape that broadcasts against ``omega_m``.
    omega_m
        Total matter density parameter(s); broadcast against ``k`` (e.g. shape (B, 1)).
    omega_b, h, t_cmb
        Baryon density, Hubble parameter and CMB temperature (fixed, CAMELS values).

    Returns
    -------
    torch.Tensor
        T(k), normalised to 1 on large scales, with the broadcast shape of the inputs.
    """
    k = torch.as_tensor(k, dtype=_DTYPE)
    om = torch.as_tensor(omega_m, dtype=_DTYPE)
    fb = omega_b / om
    fc = 1.0 - fb
    wm = om * h**2
    wb = omega_b * h**2
    th = t_cmb / 2.7
    kk = k * h  # 1/Mpc

    z_eq = 2.50e4 * wm / th**4  # eq. 2
    k_eq = 7.46e-2 * wm / th**2  # eq. 3, 1/Mpc
    b1 = 0.313 * wm**-0.419 * (1.0 + 0.607 * wm**0.674)  # eq. 4
    b2 = 0.238 * wm**0.223
    z_d = 1291.0 * wm**0.251 / (1.0 + 0.659 * wm**0.828) * (1.0 + b1 * wb**b2)
    r_d = 31.5 * wb / th**4 * (1e3 / z_d)  # eq. 5
    r_eq = 31.5 * wb / th**4 * (1e3 / z_eq)
    s = (  # sound horizon, eq. 6
        2.0
        / (3.0 * k_eq)
        * torch.sqrt(6.0 / r_eq)
        * torch.log((torch.sqrt(1.0 + r_d) + torch.sqrt(r_d + r_eq)) / (1.0 + torch.sqrt(r_eq)))
    )
    k_silk = 1.6 * wb**0.52 * wm**0.73 * (1.0 + (10.4 * wm) ** -0.95)  # eq. 7
    q = kk / (13.41 * k_eq)  # eq. 10

    # cold dark matter part, eqs. 11-20
    a1 = (46.9 * wm) ** 0.670 * (1.0 + (32.1 * wm) ** -0.532)
    a2 = (12.0 * wm) ** 0.424 * (1.0 + (45.0 * wm) ** -0.582)
    alpha_c = a1**-fb * a2 ** -(fb**3)
    bb1 = 0.944 / (1.0 + (458.0 * wm) ** -0.708)
    bb2 = (0.395 * wm) ** -0.0266
    beta_c = 1.0 / (1.0 + bb1 * (fc**bb2 - 1.0))

    def t0(alpha_c: torch.Tensor | float, beta_c: torch.Tensor | float) -> torch.Tensor:
        ln = torch.log(math.e + 1.8 * beta_c * q)
        c = 14.2 / alpha_c + 386.0 / (1.0 + 69.9 * q**1.08)
        return ln / (ln + c * q * q)

    f = 1.0 / (1.0 + (kk * s / 5.4) ** 4)
    t_cdm = f * t0(1.0, beta_c) + (1.0 - f) * t0(alpha_c, beta_c)

    # baryon part, eqs. 14-24
    y = (1.0 + z_eq) / (1.0 + z_d)
    sy = torch.sqrt(1.0 + y)
    g_y = y * (-6.0 * sy + (2.0 + 3.0 * y) * torch.log((sy + 1.0) / (sy - 1.0)))
    alpha_b = 2.07 * k_eq * s * (1.0 + r_d) ** -0.75 * g_y
    beta_node = 8.41 * wm**0.435
    beta_b = 0.5 + fb + (3.0 - 2.0 * fb) * torch.sqrt((17.2 * wm) ** 2 + 1.0)
    ks = kk * s
    s_tilde = s / (1.0 + (beta_node / ks) ** 3) ** (1.0 / 3.0)
    x = kk * s_tilde
    t_bar = (
        t0(1.0, 1.0) / (1.0 + (ks / 5.2) ** 2)
        + alpha_b / (1.0 + (beta_b / ks) ** 3) * torch.exp(-((kk / k_silk) ** 1.4))
    ) * _sinc(x)
    return fb * t_bar + fc * t_cdm


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """sin(x)/x with the x -> 0 limit, differentiable everywhere."""
    small = x.abs() < 1e-4
    xs = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1.0 - x * x / 6.0, torch.sin(xs) / xs)


def tophat_window(x: torch.Tensor) -> torch.Tensor:
    """Fourier transform of a 3D spherical top-hat, W(x) = 3 (sin x - x cos x) / x^3."""
    small = x.abs() < 1e-2
    xs = torch.where(small, torch.ones_like(x), x)
    w = 3.0 * (torch.sin(xs) - xs * torch.cos(xs)) / xs**3
    return torch.where(small, 1.0 - x * x / 10.0 + x**4 / 280.0, w)


@lru_cache(maxsize=1)
def _log_q_grid(n: int = 4097, kmin: float = 1e-5, kmax: float = 1e4):
    """Uniform grid in ln k on which P_3D is evaluated, with Simpson weights in ln k."""
    lnk = np.linspace(math.log(kmin), math.log(kmax), n)
    w = np.ones(n)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    w *= (lnk[1] - lnk[0]) / 3.0
    return torch.as_tensor(np.exp(lnk), dtype=_DTYPE), torch.as_tensor(w, dtype=_DTYPE)


def _unnormalised_power(k: torch.Tensor, omega_m: torch.Tensor) -> torch.Tensor:
    return k**N_S * eisenstein_hu_transfer(k, omega_m) ** 2


def _sigma2_from_grid(shape: torch.Tensor, radius: float) -> torch.Tensor:
    """Top-hat variance of spectra ``shape`` (B, Q) tabulated on the ln k grid."""
    k, w = _log_q_grid()
    integrand = k**3 * shape * tophat_window(k * radius) ** 2
    return (integrand * w).sum(-1) / (2.0 * math.pi**2)


def sigma_r(
    omega_m: torch.Tensor, radius: float = R_SIGMA8, *, amplitude: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """RMS of the linear field smoothed with a top-hat of ``radius`` Mpc/h.

    Parameters
    ----------
    omega_m
        Matter density parameters, shape (B,).
    radius
        Top-hat radius in Mpc/h.
    amplitude
        Amplitude A of P(k) = A k^n_s T^2(k); shape (B,) or a scalar.

    Returns
    -------
    torch.Tensor
        sigma(R), shape (B,).
    """
    k, _ = _log_q_grid()
    om = torch.as_tensor(omega_m, dtype=_DTYPE).reshape(-1, 1)
    var = _sigma2_from_grid(_unnormalised_power(k, om), radius)
    return torch.sqrt(torch.as_tensor(amplitude, dtype=_DTYPE) * var)


def _split_theta(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    theta = torch.as_tensor(theta, dtype=_DTYPE)
    if theta.ndim != 2 or theta.shape[-1] != 2:
        raise InputError(
            f"theta must have shape (B, 2) = (Omega_m, sigma_8); got {tuple(theta.shape)}"
        )
    if bool((theta[:, 0] <= OMEGA_B).any()) or bool((theta[:, 1] <= 0).any()):
        raise InputError(f"the spectrum needs Omega_m > Omega_b = {OMEGA_B} and sigma_8 > 0")
    return theta[:, 0], theta[:, 1]


def linear_power(k: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Linear 3D matter power spectrum at z = 0, normalised to sigma_8.

    Parameters
    ----------
    k
        Wavenumbers in h/Mpc, shape (K,).
    theta
        Parameters (Omega_m, sigma_8), shape (B, 2).

    Returns
    -------
    torch.Tensor
        P(k) in (Mpc/h)^3, shape (B, K), float64.
    """
    om, s8 = _split_theta(theta)
    k = torch.as_tensor(k, dtype=_DTYPE).reshape(1, -1)
    shape = _unnormalised_power(k, om[:, None])
    return (s8**2 / sigma_r(om) ** 2)[:, None] * shape


def _unit_sigma8_power_on_grid(omega_m: torch.Tensor) -> torch.Tensor:
    """P_3D / sigma_8^2 on the ln k grid, shape (B, Q)."""
    k, _ = _log_q_grid()
    shape = _unnormalised_power(k, omega_m.reshape(-1, 1))
    return shape / _sigma2_from_grid(shape, R_SIGMA8)[:, None]


def _los_quadrature(depth: float, n_zeros: int = 64, n_gl: int = 8, n_tail: int = 16):
    """Nodes and weights of (1/pi) int_0^inf dk_z f(k_z) sinc^2(k_z d / 2).

    Composite Gauss-Legendre between the zeros of the window and logarithmic breakpoints
    that resolve the spectrum's turnover; beyond the last zero the window's oscillation is
    replaced by its mean (sin^2 -> 1/2) and the tail is integrated in t = k_max / k_z.
    The returned weights already include the window and the 1/pi.
    """
    kz_max = 2.0 * math.pi * n_zeros / depth
    zeros = 2.0 * math.pi * np.arange(n_zeros + 1) / depth
    geo = np.geomspace(1e-4, kz_max, 48)
    edges = np.unique(np.concatenate([zeros, geo[geo < kz_max]]))
    x, w = np.polynomial.legendre.leggauss(n_gl)
    a, b = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (b - a) * x + 0.5 * (b + a)).ravel()
    weights = (0.5 * (b - a) * w).ravel()
    weights = weights * np.sinc(nodes * depth / (2.0 * math.pi)) ** 2
    # tail: sin^2(u)/u^2 -> 1/(2 u^2), with k_z = kz_max / t, t in (0, 1]
    xt, wt = np.polynomial.legendre.leggauss(n_tail)
    t = 0.5 * (xt + 1.0)
    kz_tail = kz_max / t
    w_tail = 0.5 * wt * kz_max / t**2 * 0.5 / (kz_tail * depth / 2.0) ** 2
    return np.concatenate([nodes, kz_tail]), np.concatenate([weights, w_tail]) / math.pi


def _lagrange_matrix(q: np.ndarray, weights: np.ndarray, n_rows: int) -> np.ndarray:
    """Dense (n_rows, Q) matrix summing weights x 4-point Lagrange interpolation in ln k.

    ``q`` and ``weights`` have shape (n_rows, J): row i of the result, applied to a function
    tabulated on the ln k grid, gives sum_j weights[i, j] f(q[i, j]).
    """
    grid, _ = _log_q_grid()
    lng = np.log(grid.numpy())
    h = lng[1] - lng[0]
    x = (np.log(np.clip(q, grid[0].item(), grid[-1].item())) - lng[0]) / h
    i0 = np.clip(np.floor(x).astype(np.int64) - 1, 0, lng.size - 4)
    t = x - i0  # position relative to the first of the 4 nodes, in [1, 2) inside the grid
    coeff = [
        -(t - 1) * (t - 2) * (t - 3) / 6.0,
        t * (t - 2) * (t - 3) / 2.0,
        -t * (t - 1) * (t - 3) / 2.0,
        t * (t - 1) * (t - 2) / 6.0,
    ]
    mat = np.zeros((n_rows, lng.size))
    rows = np.broadcast_to(np.arange(n_rows)[:, None], q.shape)
    for j, c in enumerate(coeff):
        np.add.at(mat, (rows, i0 + j), weights * c)
    return mat


@lru_cache(maxsize=16)
def _projection_matrix(k_bytes: bytes, depth: float) -> torch.Tensor:
    """The (Q, K) matrix of :class:`SlabProjection` (transposed), computed once per set of
    wavenumbers and depth in a process (every posterior of a study builds the same one);
    read-only."""
    k = np.frombuffer(k_bytes, dtype=np.float64)
    kz, wz = _los_quadrature(depth)
    q = np.sqrt(k[:, None] ** 2 + kz[None, :] ** 2)
    w = np.broadcast_to(wz, q.shape)
    return torch.as_tensor(_lagrange_matrix(q, w, k.size).T.copy())


class SlabProjection:
    """The 2D power spectrum of a slab of depth d at fixed transverse wavenumbers.

    P_2D(k) = int dk_z / (2 pi) P_3D(sqrt(k^2 + k_z^2)) sinc^2(k_z d / 2).

    The line-of-sight quadrature and the interpolation of P_3D from a fine ln k grid are
    folded into one fixed matrix, so each theta costs one transfer-function evaluation on
    that grid and one matrix product.

    Parameters
    ----------
    k
        Transverse wavenumbers in h/Mpc, shape (K,); k = 0 is allowed.
    depth
        Slab depth d in Mpc/h.
    """

    def __init__(self, k: np.ndarray | torch.Tensor, depth: float) -> None:
        if not depth > 0:
            raise InputError(f"slab depth must be positive, got {depth}")
        k = np.asarray(torch.as_tensor(k, dtype=_DTYPE).reshape(-1))
        if np.any(k < 0) or not np.all(np.isfinite(k)):
            raise InputError("wavenumbers must be finite and non-negative")
        self.k = torch.as_tensor(k)
        self.depth = float(depth)
        self._matrix_t = _projection_matrix(k.tobytes(), float(depth))

    def __call__(self, theta: torch.Tensor, *, chunk: int = 64) -> torch.Tensor:
        """P_2D in (Mpc/h)^2 for parameters ``theta`` (B, 2); shape (B, K), float64.

        When ``theta`` does not require gradients the work is done once per distinct
        Omega_m (P_3D = sigma_8^2 S(k; Omega_m)), so a parameter grid is cheap.
        """
        om, s8 = _split_theta(theta)
        if om.requires_grad or fwAD.unpack_dual(om).tangent is not None:
            om_u, inverse = om, None  # differentiated: every row keeps its own graph
        else:
            om_u, inverse = torch.unique(om, return_inverse=True)
        parts = [
            _unit_sigma8_power_on_grid(om_u[i : i + chunk]) @ self._matrix_t
            for i in range(0, om_u.shape[0], chunk)
        ]
        p_unit = torch.cat(parts, dim=0)
        if inverse is not None:
            p_unit = p_unit[inverse]
        return s8[:, None] ** 2 * p_unit


def projected_power(k: torch.Tensor, theta: torch.Tensor, depth: float) -> torch.Tensor:
    """2D power spectrum of the linear field averaged over a slab of depth ``depth``.

    Convenience wrapper around :class:`SlabProjection` (build that once when evaluating
    the same wavenumbers repeatedly).

    Parameters
    ----------
    k
        Transverse wavenumbers in h/Mpc, shape (K,).
    theta
        Parameters (Omega_m, sigma_8), shape (B, 2).
    depth
        Slab depth d in Mpc/h.

    Returns
    -------
    torch.Tensor
        P_2D(k) in (Mpc/h)^2, shape (B, K), float64.
    """
    return SlabProjection(k, depth)(theta)


# background of flat LambdaCDM (the N-body simulator's time steps)


def hubble_rate(a: np.ndarray, omega_m: float) -> np.ndarray:
    """E(a) = H(a) / H_0 of flat LambdaCDM without radiation (as jax_cosmo's background)."""
    return np.sqrt(omega_m / a**3 + 1.0 - omega_m)


def growth(a: np.ndarray, omega_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear growth factor D(a), normalised to D(1) = 1, and dD/da (flat LambdaCDM).

    Solves D'' + (3 / a + dlnE/da) D' = 1.5 Omega_m D / (a^5 E^2) from the matter era
    (a = 1e-3, D = a) with scipy's adaptive Runge-Kutta at rtol 1e-10.
    """
    from scipy.integrate import solve_ivp

    def rhs(x, y):
        e2 = omega_m / x**3 + 1.0 - omega_m
        dlne = -1.5 * omega_m / x**4 / e2
        return [y[1], -(3.0 / x + dlne) * y[1] + 1.5 * omega_m * y[0] / (x**5 * e2)]

    a = np.asarray(a, dtype=np.float64)
    sol = solve_ivp(rhs, (1e-3, 1.0), [1e-3, 1.0], rtol=1e-10, atol=1e-14, dense_output=True)
    d_one = sol.sol(1.0)[0]
    d, dd = sol.sol(a.ravel())
    return (d / d_one).reshape(a.shape), (dd / d_one).reshape(a.shape)
