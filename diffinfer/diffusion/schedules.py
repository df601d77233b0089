"""DDPM noise schedules, computed once in float64.

Timesteps run t = 1 ... T; every array has T + 1 entries and index 0 is the clean map
(beta_0 = 0, alpha_bar_0 = 1), so ``alpha_bar[t]`` reads as in Ho et al. (2020):
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffinfer.errors import InputError

SCHEDULES = ("linear", "cosine", "custom-linear")


def _betas(kind: str, n_steps: int) -> np.ndarray:
    if kind == "linear":  # Ho et al. (2020)
        return np.linspace(1e-4, 0.02, n_steps)
    if kind == "cosine":  # Nichol & Dhariwal (2021), s = 0.008, beta capped at 0.999
        s = 0.008
        steps = np.arange(n_steps + 1) / n_steps
        f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    if kind == "custom-linear":  # the paper's: 1e-4 -> 0.01, second half ramped x1 -> x3
        betas = np.linspace(1e-4, 0.01, n_steps)
        half = n_steps // 2
        betas[half:] *= np.linspace(1.0, 3.0, n_steps - half)
        return betas
    raise InputError(f"unknown noise schedule {kind!r}; choose one of {SCHEDULES}")


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM forward process with T steps.

    Parameters
    ----------
    kind
        ``"linear"`` (beta 1e-4 -> 0.02), ``"cosine"`` or ``"custom-linear"`` (beta 1e-4 ->
        0.01 linearly, the second half multiplied by a ramp from 1 to 3).
    n_steps
        T, the number of diffusion steps.
    """

    kind: str = "linear"
    n_steps: int = 1000

    def __post_init__(self) -> None:
        if int(self.n_steps) != self.n_steps or self.n_steps < 2:
            raise InputError(f"n_steps must be an integer >= 2, got {self.n_steps}")
        betas = np.concatenate([[0.0], _betas(self.kind, self.n_steps)])
        alpha_bar = np.cumprod(1.0 - betas)
        object.__setattr__(self, "_betas", betas)
        object.__setattr__(self, "_alpha_bar", alpha_bar)

    @property
    def betas(self) -> torch.Tensor:
        """beta_t, t = 0 ... T (beta_0 = 0), float64."""
        return torch.as_tensor(self._betas)

    @property
    def alpha_bar(self) -> torch.Tensor:
        """alpha_bar_t = prod_{s <= t} (1 - beta_s), t = 0 ... T (alpha_bar_0 = 1)."""
        return torch.as_tensor(self._alpha_bar)

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), t = 1 ... T (index t - 1)."""
        ab = self._alpha_bar[1:]
        return torch.as_tensor(ab / (1.0 - ab))

    @property
    def posterior_variance(self) -> torch.Tensor:
        """Variance of q(x_{t-1} | x_t, x_0): beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).

        Index t = 0 ... T; entry 0 is 0 and entry 1 is 0 (x_0 is known given x_1 and x_0).
        """
        ab = self._alpha_bar
        var = np.zeros_like(ab)
        var[1:] = self._betas[1:] * (1.0 - ab[:-1]) / (1.0 - ab[1:])
        return torch.as_tensor(var)

    def posterior_mean_coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(c0_t, ct_t) with E[x_{t-1} | x_t, x_0] = c0_t x_0 + ct_t x_t, t = 0 ... T."""
        ab, b = self._alpha_bar, self._betas
        c0 = np.zeros_like(ab)
        ct = np.zeros_like(ab)
        c0[1:] = np.sqrt(ab[:-1]) * b[1:] / (1.0 - ab[1:])
        ct[1:] = np.sqrt(1.0 - b[1:]) * (1.0 - ab[:-1]) / (1.0 - ab[1:])
        return torch.as_tensor(c0), torch.as_tensor(ct)

    def check_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Validate integer timesteps in 1 ... T and return them as int64."""
        t = torch.as_tensor(t)
        if t.is_floating_point() or t.is_complex():
            raise InputError("timesteps must be integers in 1 ... T")
        if t.numel() and (int(t.min()) < 1 or int(t.max()) > self.n_steps):
            raise InputError(
                f"timesteps must lie in 1 ... {self.n_steps}, got {int(t.min())}..{int(t.max())}"
            )
        return t.to(torch.int64)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (t broadcast per map)."""
        t = self.check_timesteps(t)
        ab = self.alpha_bar.to(device=x0.device, dtype=x0.dtype)[t.to(x0.device)]
        ab = ab.reshape(-1, *([1] * (x0.ndim - 1)))
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
