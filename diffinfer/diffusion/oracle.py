"""The optimal denoiser of the log-normal simulator, E[eps | x_t, theta], in closed form.

In model space a map y is Gaussian with constant mean mu(theta) and covariance eigenvalues
lambda_k(theta) in Fourier space. With x_t = sqrt(a) y + sqrt(1 - a) eps (a = alpha_bar_t),

    E[eps | x_t] = sqrt(1 - a) (a C + (1 - a) I)^{-1} (x_t - sqrt(a) mu),

diagonal in Fourier space: each mode is scaled by sqrt(1 - a) / (a lambda_k + 1 - a). Its
expected squared error per pixel is mean_k a lambda_k / (a lambda_k + 1 - a). No trained network
can do better on these maps, so it is both a test reference and an upper bound on training.
"""

from __future__ import annotations

import torch

from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.errors import InputError
from diffinfer.fields.lognormal import LognormalSimulator
from diffinfer.parameters import as_theta


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
        theta = as_theta(theta)
        mean, lam = self.simulator.model_moments(theta)  # (B,), (B, N, N)
        a = self.schedule.alpha_bar[t].reshape(-1, 1, 1)
        x = x_t[:, 0].to(torch.float64)
        shifted = x - a.sqrt() * mean.reshape(-1, 1, 1)
        gain = (1.0 - a).sqrt() / (a * lam + 1.0 - a)
        eps = torch.fft.ifft2(torch.fft.fft2(shifted) * gain).real
        return eps.unsqueeze(1).to(x_t.dtype)

    def expected_mse(self, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Analytic E ||eps - eps_hat||^2 / N^2 per map, shape (B,)."""
        t = self.schedule.check_timesteps(t).reshape(-1)
        _, lam = self.simulator.model_moments(as_theta(theta))
        a = self.schedule.alpha_bar[t].reshape(-1, 1, 1)
        return (a * lam / (a * lam + 1.0 - a)).mean(dim=(-2, -1))
