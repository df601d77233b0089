"""Emulation samplers as pure functions over a denoiser (the k-diffusion convention).

Every sampler here takes

- ``denoiser(x, sigma) -> x0_hat``: the clean map predicted from ``x = x0 + sigma * n`` (the
  variance-exploding form of the discrete VP process: ``x = x_t / sqrt(alpha_bar_t)`` and
  ``sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t)``; :class:`VPDenoiser` wraps an
  epsilon-predicting model);
- ``x``: the start, ``x_T * sqrt(1 + sigma_0^2)`` with ``x_T`` standard normal;
- ``sigmas``: the decreasing noise levels to visit, ending with 0 (:func:`noise_levels`);

and returns the map at ``sigma = 0``. They call the denoiser only at the given sigmas, so a
model trained on T discrete timesteps is evaluated only where it was trained. Denoiser calls:

========== ======================== =============================================
sampler    calls for n sigmas > 0   method
========== ======================== =============================================
ddpm       n                        ancestral (eta = 1): DDPM, respaced if n < T
ddim       n                        deterministic DDIM (eta = 0) = Euler on the
                                    probability-flow ODE in sigma
heun       2 n - 1                  Heun's second-order method (Karras et al. 2022,
                                    Algorithm 1; Euler on the last step to 0)
dpmpp-2m   n                        DPM-Solver++(2M) (Lu et al. 2022), multistep
                                    second order in log sigma
unipc      n                        UniPC-bh2 (Zhao et al. 2023): the 2M predictor
                                    plus the UniC corrector, which reuses the next
                                    step's denoiser call
========== ======================== =============================================

Multistep methods take their first step and the last one (to sigma = 0) at first order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.errors import InputError

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
NoiseFn = Callable[[], torch.Tensor]

SAMPLERS = ("ddpm", "ddim", "heun", "dpmpp-2m", "unipc")
SPACINGS = ("uniform", "trailing", "quadratic", "karras", "logsnr")
# the spacing each sampler uses unless told (chosen by scripts/sampler_validation.py)
DEFAULT_SPACING = {
    "ddpm": "uniform",
    "ddim": "uniform",
    "heun": "uniform",
    "dpmpp-2m": "logsnr",
    "unipc": "logsnr",
}
KARRAS_RHO = 7.0


# ------------------------------------------------------------------------------ samplers
def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
    *,
    eta: float = 0.0,
    noise: NoiseFn | None = None,
) -> torch.Tensor:
    """The generalised DDIM update (Song et al. 2021) in the sigma form.

    With ``eta = 1`` on every timestep this is DDPM ancestral sampling with the posterior
    variance of q(x_{t-1} | x_t, x_0); with ``eta = 0`` it is deterministic DDIM, which is
    Euler's method on the probability-flow ODE dx/dsigma = (x - x0_hat) / sigma.

    Parameters
    ----------
    denoiser, x, sigmas
        See the module docstring.
    eta
        Stochasticity, 0 ... 1; ``noise`` (a standard normal draw of the shape of ``x`` per
        call) is needed when it is positive.
    """
    if eta > 0 and noise is None:
        raise InputError("sample_ddim with eta > 0 needs a noise function")
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, s)
        if s_next == 0:
            x = x0
            continue
        eps = (x - x0) / s
        # noise of the VP update, sigma_t^2 = eta^2 (1 - a') / (1 - a) (1 - a / a'), in x-units
        a, a_next = 1.0 / (1.0 + s * s), 1.0 / (1.0 + s_next * s_next)
        var_vp = eta**2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
        s_noise = math.sqrt(max(var_vp, 0.0) / a_next)
        x = x0 + math.sqrt(max(s_next**2 - s_noise**2, 0.0)) * eps
        if s_noise > 0:
            assert noise is not None
            x = x + s_noise * noise()
    return x


def sample_heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
) -> torch.Tensor:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022).

    Two denoiser calls per step, one on the last step to sigma = 0 (Euler there).
    """
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoiser(x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next == 0:
            x = x_next
            continue
        d_next = (x_next - denoiser(x_next, s_next)) / s_next
        x = x + (s_next - s) * (d + d_next) / 2
    return x


def _lambda(sigma: float) -> float:
    """log-SNR half, -log sigma (the variable of the DPM-Solver family)."""
    return -math.log(sigma)


def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in the data prediction (Lu et al. 2022)."""
    previous: tuple[torch.Tensor, float] | None = None  # (x0_hat, step h) of the last step
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, s)
        if s_next == 0:
            x = x0
            continue
        h = _lambda(s_next) - _lambda(s)
        if previous is None:
            d = x0
        else:
            x0_old, h_old = previous
            r = h_old / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_old
        x = (s_next / s) * x - math.expm1(-h) * d
        previous = (x0, h)
    return x


def sample_unipc(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: list[float],
) -> torch.Tensor:
    """UniPC-bh2 of order 2 (Zhao et al. 2023), data prediction.

    The predictor (UniP-2 with B(h) = e^h - 1) is DPM-Solver++(2M); after each step the
    corrector (UniC) refines the new point with the denoiser call made there, which the next
    predictor step uses too, so the corrector costs no extra call. No correction after the
    last call (it would need a call at sigma = 0).
    """
    x0_prev: torch.Tensor | None = None  # x0_hat at the previous sigma
    h_prev = 0.0
    x_before: torch.Tensor | None = None  # the point the last predictor step started from
    x0_before: torch.Tensor | None = None  # and its x0_hat
    h_last = 0.0  # that step's h
    order_last = 1
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, s)
        if x_before is not None and x0_before is not None:
            # UniC: correct the step x_before -> x with the call just made at x
            x = _unic(x_before, x0_before, x0, x0_prev, h_last, h_prev, sigmas[i] / sigmas[i - 1],
                      order_last)  # fmt: skip
        if s_next == 0:
            x = x0
            continue
        h = _lambda(s_next) - _lambda(s)
        order = 1 if x0_before is None else 2
        # UniP-2 (bh2) predictor = DPM-Solver++(2M)
        if order == 1:
            d = x0
        else:
            assert x0_before is not None
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_before
        x_pred = (s_next / s) * x - math.expm1(-h) * d
        # what the corrector of this step needs
        x0_prev, h_prev = x0_before, h_last
        x_before, x0_before, h_last, order_last = x, x0, h, order
        x = x_pred
    return x


def _unic(
    x_start: torch.Tensor,
    m0: torch.Tensor,
    m_t: torch.Tensor,
    m1: torch.Tensor | None,
    h: float,
    h1: float,
    ratio: float,
    order: int,
) -> torch.Tensor:
    """The UniC-bh2 corrector of one step of size ``h`` from ``x_start`` (x0_hat ``m0``) to a
    point where the denoiser gave ``m_t``; ``m1`` (step ``h1`` before) for order 2; ``ratio``
    is sigma_t / sigma_start."""
    hh = -h
    phi1 = math.expm1(hh)  # e^{-h} - 1
    b_h = phi1  # bh2: B(h) = e^{hh} - 1
    x_t = ratio * x_start - phi1 * m0  # the first-order (DDIM) point
    d1_t = m_t - m0
    if order == 1 or m1 is None:
        return x_t - b_h * 0.5 * d1_t
    # order 2: solve R rho = b with the previous point (r1 = -h1 / h in lambda units)
    r1 = -h1 / h
    d1 = (m1 - m0) / r1
    phi_k = phi1 / hh - 1  # h phi_2(h) / ... recursion of the paper (factorial 1)
    b1 = phi_k / b_h
    phi_k2 = phi_k / hh - 1 / 2
    b2 = phi_k2 * 2 / b_h
    # R = [[1, 1], [r1, 1]]
    det = 1 - r1
    rho0 = (b1 - b2) / det
    rho1 = (b2 - r1 * b1) / det
    return x_t - b_h * (rho0 * d1 + rho1 * d1_t)


# ------------------------------------------------------------------------ noise levels
def sigma_of(schedule: NoiseSchedule) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), t = 0 ... T (sigma_0 = 0)."""
    ab = schedule.alpha_bar.numpy()
    return np.sqrt((1.0 - ab) / ab)


def grid_points(sampler: str, calls: int) -> int:
    """Noise levels above 0 a sampler visits with at most ``calls`` denoiser calls."""
    return (calls + 1) // 2 if sampler == "heun" else calls


def denoiser_calls(sampler: str, points: int) -> int:
    """Denoiser calls of a sampler over ``points`` noise levels above 0."""
    return 2 * points - 1 if sampler == "heun" else points


def timesteps(schedule: NoiseSchedule, points: int, spacing: str) -> np.ndarray:
    """``points`` distinct decreasing integer timesteps in T ... 1.

    Parameters
    ----------
    schedule
        The model's noise schedule (T timesteps).
    points
        Number of timesteps, 1 ... T.
    spacing
        ``"uniform"``: evenly from T to 1 (rounded); ``"trailing"``: T, T - T/n, ..., T/n
        (Lin et al. 2024); ``"quadratic"``: 1 + (T - 1) u^2 for u evenly from 1 to 0 (Song
        et al. 2021); ``"karras"``: sigma evenly in sigma^(1/7) from sigma_T to sigma_1
        (Karras et al. 2022); ``"logsnr"``: evenly in log sigma (Lu et al. 2022). The last
        two map each sigma to the timestep nearest in log sigma. Where rounding makes two
        timesteps equal, the larger ones move up so that all stay distinct.
    """
    T = schedule.n_steps
    if int(points) != points or not 1 <= points <= T:
        raise InputError(f"the number of timesteps must be an integer in 1 ... {T}, got {points}")
    if spacing not in SPACINGS:
        raise InputError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    n = int(points)
    u = np.linspace(1.0, 0.0, n) if n > 1 else np.ones(1)
    if spacing == "uniform":
        t = 1 + (T - 1) * u
    elif spacing == "trailing":
        t = T - np.arange(n) * T / n
    elif spacing == "quadratic":
        t = 1 + (T - 1) * u**2
    else:
        log_sigma = np.log(sigma_of(schedule)[1:])  # t = 1 ... T
        lo, hi = log_sigma[0], log_sigma[-1]
        if spacing == "karras":
            rho = KARRAS_RHO
            s = (math.exp(lo) ** (1 / rho) + u * (math.exp(hi) ** (1 / rho)
                                                  - math.exp(lo) ** (1 / rho))) ** rho  # fmt: skip
            target = np.log(s)
        else:
            target = lo + u * (hi - lo)
        # log sigma increases with t: the nearest timestep of each target
        idx = np.clip(np.searchsorted(log_sigma, target), 1, T - 1)
        nearer_lower = (target - log_sigma[idx - 1]) < (log_sigma[idx] - target)
        t = np.where(nearer_lower, idx, idx + 1).astype(np.float64)
    t = np.clip(np.round(t), 1, T).astype(np.int64)
    # distinct and decreasing: from the smallest up, each at least one above the next
    for i in range(n - 2, -1, -1):
        t[i] = max(t[i], t[i + 1] + 1)
    if t[0] > T:  # pushed past T: pull down from the top instead
        for i in range(n):
            t[i] = min(t[i], T - i)
    return t


def noise_levels(schedule: NoiseSchedule, timesteps_: np.ndarray) -> list[float]:
    """The sigmas of decreasing timesteps, with the final 0 appended."""
    sig = sigma_of(schedule)
    return [float(sig[int(t)]) for t in timesteps_] + [0.0]


# --------------------------------------------------------------------- the VP denoiser
class VPDenoiser:
    """An epsilon-predicting model on the discrete VP schedule as ``denoiser(x, sigma)``.

    Parameters
    ----------
    eps
        ``eps(x_t, t) -> eps_hat`` with ``x_t`` in the VP scaling and ``t`` an integer
        timestep (the model's theta bound in).
    schedule
        Its noise schedule; the sigmas asked for must be those of its timesteps.
    """

    def __init__(
        self, eps: Callable[[torch.Tensor, int], torch.Tensor], schedule: NoiseSchedule
    ) -> None:
        self.eps = eps
        self.schedule = schedule
        self._sigma = sigma_of(schedule)
        self._alpha_bar = schedule.alpha_bar.numpy()

    def timestep(self, sigma: float) -> int:
        """The timestep whose sigma this is (exact to rounding)."""
        t = int(np.argmin(np.abs(np.log(self._sigma[1:]) - math.log(sigma)))) + 1
        if not math.isclose(self._sigma[t], sigma, rel_tol=1e-9):
            raise InputError(f"sigma {sigma} is not a noise level of the model's T timesteps")
        return t

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = self.timestep(sigma)
        a = float(self._alpha_bar[t])
        eps = self.eps(x * math.sqrt(a), t).to(x.dtype)
        return x - sigma * eps


def run_sampler(
    sampler: str,
    denoiser: Denoiser,
    x_T: torch.Tensor,
    sigmas: list[float],
    *,
    eta: float | None = None,
    noise: NoiseFn | None = None,
) -> torch.Tensor:
    """Run a sampler by name from VP noise ``x_T`` (standard normal) to a clean map.

    ``eta`` (ddpm: 1, ddim: 0 unless given) applies to those two only.
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    x = x_T * math.sqrt(1.0 + sigmas[0] ** 2)
    if sampler in ("ddpm", "ddim"):
        eta = (1.0 if sampler == "ddpm" else 0.0) if eta is None else eta
        return sample_ddim(denoiser, x, sigmas, eta=eta, noise=noise)
    if eta is not None:
        raise InputError(f"eta applies to the ddpm and ddim samplers, not {sampler!r}")
    fn = {"heun": sample_heun, "dpmpp-2m": sample_dpmpp_2m, "unipc": sample_unipc}[sampler]
    return fn(denoiser, x, sigmas)
