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

from diffinfer.diffusion.schedules import NoiseSchedule
from diffinfer.diffusion.spectral import wiener_eps
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
    lam: np.ndarray, schedule: NoiseSchedule, steps: int, eta: float
) -> np.ndarray:
    """Variance of a sampler's output over the true variance, for a Gaussian mode.

    With the oracle denoiser every Fourier mode of variance ``lam`` evolves linearly through
    the sampler (:meth:`NoiseSchedule.ddim_coefficients`), so the variance of the emulated
    mode follows a closed recursion from x_T ~ N(0, 1). The ratio is 1 for an exact sampler;
    its deviation is the discretisation error of DDPM with T steps or DDIM with fewer.

    Parameters
    ----------
    lam
        Mode variances (model space), any shape.
    schedule
        Noise schedule.
    steps
        Denoiser calls.
    eta
        1 for DDPM (ancestral), 0 for DDIM.
    """
    lam = np.asarray(lam, dtype=np.float64)
    ab = schedule.alpha_bar.numpy()
    ts = schedule.sampling_timesteps(steps)
    var = np.ones_like(lam)
    for i, t in enumerate(ts):
        t_prev = int(ts[i + 1]) if i + 1 < len(ts) else 0
        a = ab[t]
        gain = np.sqrt(1 - a) / (a * lam + 1 - a)  # eps_hat = gain * x_t (zero-mean mode)
        c_x0, c_eps, sigma = schedule.ddim_coefficients(int(t), t_prev, eta)
        g = c_x0 * (1 - np.sqrt(1 - a) * gain) / np.sqrt(a) + c_eps * gain
        var = g**2 * var + sigma**2
    return var / lam
