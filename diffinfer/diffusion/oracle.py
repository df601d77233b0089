"""The optimal denoiser of the log-normal simulator, E[eps | x_t, theta], in closed form.

In model space a map y is Gaussian with constant mean mu(theta) and covariance eigenvalues
lambda_k(theta) in Fourier space. With x_t = sqrt(a) y + sqrt(1 - a) eps (a = alpha_bar_t),

    E[eps | x_t] = sqrt(1 - a) (a C + (1 - a) I)^{-1} (x_t - sqrt(a) mu),

diagonal in Fourier space: each mode is scaled by sqrt(1 - a) / (a lambda_k + 1 - a)
(:func:`~diffinfer.diffusion.spectral.wiener_eps`, shared with the learned spectral branch). Its
expected squared error per pixel is mean_k a lambda_k / (a lambda_k + 1 - a). No trained network
can do better on these maps, so it is both a test reference and an upper bound on training.
"""

from __future__ import annotations

import numpy as np
import torch

from diffinfer.diffusion.samplers import (
    DEFAULT_SPACING,
    grid_points,
    noise_levels,
    run_sampler,
    timesteps,
)
from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.diffusion.spectral import wiener_eps
from diffinfer.errors import InputError
from diffinfer.parameters import as_theta
from diffinfer.simulators.lognormal import LognormalSimulator


class OracleDenoiser(torch.nn.Module):
    """Exact epsilon-prediction for log-normal maps, with the interface of a denoiser network.

    Parameters
    ----------
    simulator
        The simulator (geometry, prior and transform) whose maps are denoised.
    schedule
        The noise schedule.
    """

    def __init__(self, simulator: LognormalSimulator, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.simulator = simulator
        self.schedule = schedule
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def moments(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space mean (B,) and eigenvalues (B, N, N) for the rows of theta.

        Spectra are computed once per distinct row (a likelihood evaluates many timesteps
        at one theta) and, outside autograd, reused while theta repeats from call to call
        (a sampler calls the denoiser with the same theta at every step).
        """
        theta = as_theta(theta)
        tracked = theta.requires_grad and torch.is_grad_enabled()
        if not tracked and self._cache is not None and torch.equal(self._cache[0], theta):
            return self._cache[1], self._cache[2]
        unique, inverse = torch.unique(theta.detach(), dim=0, return_inverse=True)
        first = torch.empty(len(unique), dtype=torch.int64)
        first[inverse] = torch.arange(len(theta))
        mean, lam = self.simulator.model_moments(theta[first])
        mean, lam = mean[inverse], lam[inverse]
        if not tracked:
            self._cache = (theta.detach().clone(), mean, lam)
        return mean, lam

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x_t``.

        Parameters
        ----------
        x_t
            Noisy model-space maps, shape (B, 1, N, N).
        t
            Integer timesteps in 1 ... T, shape (B,).
        theta
            Parameters (B, 2) in physical units (or (1, 2), shared).

        Returns
        -------
        torch.Tensor
            Predicted noise, shape and dtype of ``x_t``.
        """
        n = self.simulator.config.n_pix
        if x_t.ndim != 4 or x_t.shape[1] != 1 or x_t.shape[-2:] != (n, n):
            raise InputError(f"x_t must have shape (B, 1, {n}, {n}); got {tuple(x_t.shape)}")
        t = self.schedule.check_timesteps(t).reshape(-1)
        mean, lam = self.moments(theta)  # (B,), (B, N, N)
        a = self.schedule.alpha_bar[t]
        eps = wiener_eps(x_t[:, 0].to(torch.float64), a, torch.log(lam), mean)
        return eps.unsqueeze(1).to(x_t.dtype)

    def expected_mse(self, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Analytic E ||eps - eps_hat||^2 / N^2 per map, shape (B,)."""
        t = self.schedule.check_timesteps(t).reshape(-1)
        _, lam = self.simulator.model_moments(as_theta(theta))
        a = self.schedule.alpha_bar[t].reshape(-1, 1, 1)
        return (a * lam / (a * lam + 1.0 - a)).mean(dim=(-2, -1))


def sampler_variance_ratio(
    lam: np.ndarray,
    schedule: NoiseSchedule,
    steps: int,
    sampler: str = "ddpm",
    *,
    spacing: str | None = None,
    eta: float | None = None,
) -> np.ndarray:
    """Variance of a sampler's output over the true variance, for Gaussian modes, exactly.

    With the oracle every Fourier mode of variance ``lam`` (zero mean) is denoised linearly,
    x0_hat = x lam / (lam + sigma^2), so a sampler maps the start x_T and its injected noise
    linearly to the output. Running the sampler itself (:func:`~diffinfer.diffusion.samplers.
    run_sampler`) on unit coefficients of x_T and of each noise draw gives the output
    variance exactly, for any sampler, spacing and number of calls. The ratio is 1 for an
    exact sampler; its deviation is the sampler's discretisation error.

    Parameters
    ----------
    lam
        Mode variances (model space), any shape.
    schedule
        Noise schedule.
    steps
        Denoiser calls (as in :meth:`~diffinfer.diffusion.DiffusionModel.sample`).
    sampler, spacing, eta
        As in :meth:`~diffinfer.diffusion.DiffusionModel.sample`.
    """
    lam = np.asarray(lam, dtype=np.float64)
    values, inverse = np.unique(lam, return_inverse=True)
    points = grid_points(sampler, steps)
    sigmas = noise_levels(
        schedule, timesteps(schedule, points, spacing or DEFAULT_SPACING[sampler])
    )
    # one column for the start and, for a sampler that injects noise, one per draw
    stochastic = sampler == "ddpm" if eta is None else eta > 0
    columns = 1 + (len(sigmas) if stochastic else 0)
    state = torch.zeros(len(values), columns, dtype=torch.float64)
    state[:, 0] = 1.0
    drawn = [0]

    def noise() -> torch.Tensor:
        drawn[0] += 1
        z = torch.zeros_like(state)
        z[:, drawn[0]] = 1.0
        return z

    lam_t = torch.as_tensor(values)[:, None]
    out = run_sampler(sampler, lambda x, s: x * (lam_t / (lam_t + s * s)), state, sigmas,
                      eta=eta, noise=noise)  # fmt: skip
    var = out.pow(2).sum(dim=1).numpy()
    return (var / values)[inverse].reshape(lam.shape)
