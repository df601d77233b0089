"""The spectral branch: a learned, isotropic, theta- and t-dependent Fourier-space denoiser.

For a Gaussian field with mean mu and Fourier-diagonal covariance lambda_k, the optimal
epsilon-prediction from x_t = sqrt(a) y + sqrt(1 - a) eps (a = alpha_bar_t) is, mode by mode,

    eps_hat_k = (1 - s_k) (x_t - sqrt(a) mu)_k / sqrt(1 - a),
    s_k = sigmoid(log SNR_t + log lambda_k),           SNR_t = a / (1 - a),

where s_k = a lambda_k / (a lambda_k + 1 - a) is the Wiener signal fraction of mode k
(:func:`wiener_eps`). The branch learns exactly this form: log lambda(|k|; theta, t) as a
smooth function of log |k| (Gaussian radial basis functions with coefficients from a small MLP
of theta and log SNR_t, plus a separate value for the k = 0 mode) and the mean mu(theta, t).
A Gaussian field is then denoised optimally by the branch alone, and a U-Net added to it
only has to learn the non-Gaussian rest.

Frequencies are in cycles per pixel, so the branch, like the U-Net, is fully convolutional:
weights trained at 64^2 apply to 256^2 maps with the same pixel size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

N_BASIS = 16
# log2 of the frequency range the basis covers, in cycles per pixel: 1/1024 ... Nyquist diagonal
_LOG2_F_MIN, _LOG2_F_MAX = -10.0, math.log2(math.sqrt(0.5))


def wiener_eps(
    x_t: torch.Tensor, alpha_bar: torch.Tensor, log_lambda: torch.Tensor, mean: torch.Tensor
) -> torch.Tensor:
    """Optimal epsilon-prediction for a Gaussian field with Fourier-diagonal covariance.

    Parameters
    ----------
    x_t
        Noisy maps, shape (B, N, N).
    alpha_bar
        alpha_bar_t per map, shape (B,), in (0, 1).
    log_lambda
        Log covariance eigenvalues per Fourier mode (numpy ``fft2`` layout), (B, N, N).
    mean
        Mean of the clean field, shape (B,).

    Returns
    -------
    torch.Tensor
        E[eps | x_t], shape (B, N, N).
    """
    a = alpha_bar.to(torch.float64).reshape(-1, 1, 1)  # 1 - a needs float64 near t = 1
    log_snr = (torch.log(a) - torch.log1p(-a)).to(x_t.dtype)
    keep = torch.sigmoid(-(log_snr + log_lambda))  # 1 - s_k, computed without cancellation
    shifted = x_t - a.sqrt().to(x_t.dtype) * mean.reshape(-1, 1, 1)
    eps = torch.fft.ifft2(torch.fft.fft2(shifted) * keep).real
    return eps / (1.0 - a).sqrt().to(x_t.dtype)


def frequency_features(n_pix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Radial basis functions of log2 |f| on an N x N grid and the mask of the k = 0 mode.

    Returns
    -------
    basis, is_dc
        ``basis`` (N_BASIS, N, N), zero at k = 0; ``is_dc`` (N, N) boolean.
    """
    f1 = np.fft.fftfreq(n_pix)
    f = np.hypot(f1[:, None], f1[None, :])
    is_dc = f == 0
    log2f = np.log2(np.where(is_dc, 1.0, f))
    centres = np.linspace(_LOG2_F_MIN, _LOG2_F_MAX, N_BASIS)
    width = centres[1] - centres[0]
    basis = np.exp(-0.5 * ((log2f[None] - centres[:, None, None]) / width) ** 2)
    basis[:, is_dc] = 0.0
    return torch.as_tensor(basis, dtype=torch.float32), torch.as_tensor(is_dc)


class SpectralBranch(nn.Module):
    """Learned Wiener filter: ``forward(x_t, t, theta_unit) -> eps_hat`` (B, 1, N, N).

    Parameters
    ----------
    alpha_bar
        alpha_bar_t of the noise schedule, t = 0 ... T (index 0 unused).
    hidden
        Width of the MLP from (theta, log SNR_t) to the spectrum coefficients.

    Notes
    -----
    At initialisation log lambda = 0 and mu = 0: the filter of a unit white-noise field.
    Computation runs in float32 even under autocast (the FFT needs it).
    """

    def __init__(self, alpha_bar: torch.Tensor, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer(
            "alpha_bar", torch.as_tensor(alpha_bar, dtype=torch.float64), persistent=False
        )
        self.mlp = nn.Sequential(
            nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, N_BASIS + 2),
        )  # fmt: skip
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self._features: dict = {}  # per map size: frequency grids and shells

    def _grid(self, n_pix: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if n_pix not in self._features:
            self._features[n_pix] = frequency_features(n_pix)
        basis, is_dc = self._features[n_pix]
        return basis.to(device), is_dc.to(device)

    def _coefficients(self, t: torch.Tensor, theta_unit: torch.Tensor) -> torch.Tensor:
        """The MLP's output (B, N_BASIS + 2) for timesteps (B,) and unit-box theta (B, 2):
        basis coefficients of log lambda, log lambda at k = 0, and the mean."""
        a = self.alpha_bar.to(theta_unit.device)[t.reshape(-1)]
        log_snr = (torch.log(a) - torch.log1p(-a)).to(torch.float32)
        inputs = torch.cat([theta_unit.float(), (log_snr / 10.0)[:, None]], dim=1)
        return self.mlp(inputs)

    def spectrum(
        self, t: torch.Tensor, theta_unit: torch.Tensor, n_pix: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned log lambda (B, N, N) and mean (B,) for timesteps and unit-box theta."""
        coef = self._coefficients(t, theta_unit)
        basis, is_dc = self._grid(n_pix, theta_unit.device)
        log_lambda = torch.einsum("bj,jxy->bxy", coef[:, :N_BASIS], basis)
        log_lambda = torch.where(is_dc, coef[:, N_BASIS, None, None], log_lambda)
        return log_lambda, coef[:, N_BASIS + 1]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, theta_unit: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            log_lambda, mean = self.spectrum(t, theta_unit, x_t.shape[-1])
            a = self.alpha_bar.to(x_t.device)[t.reshape(-1)]
            eps = wiener_eps(x_t[:, 0].float(), a, log_lambda, mean)
        return eps.unsqueeze(1).to(x_t.dtype)

    def expected_error(self, y: torch.Tensor, theta_unit: torch.Tensor) -> torch.Tensor:
        """E over eps of ||eps - eps_hat(x_t, t)||^2 under the branch's filter, every t.

        With x_t = sqrt(a) y + sqrt(1 - a) eps and the filter of :func:`wiener_eps`, mode k of
        eps - eps_hat is (1 - s'_k) E_k - s'_k sqrt(a / (1 - a)) (Y - mu)_k with s'_k = 1 - s_k
        the filter's pass fraction, so (Parseval, E|E_k|^2 = N^2 for unit white noise)

            E ||eps - eps_hat||^2 = sum_k [(1 - s'_k)^2 + s'_k^2 a |(Y - mu)_k|^2 / ((1 - a) N^2)].

        The filter depends on k through |k| only, so the sum runs over shells of equal |k|^2.
        This is the exact expectation of the Gaussian part of a network's denoising error, the
        control variate of :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood`.

        Parameters
        ----------
        y
            One clean model-space map, (N, N).
        theta_unit
            Parameters in the unit box, (B, 2).

        Returns
        -------
        torch.Tensor
            (B, T) float64, column t - 1 for timestep t = 1 ... T; differentiable in theta.
        """
        n = y.shape[-1]
        device = theta_unit.device
        shell, first, counts = self._shells(n, device)
        yk = torch.fft.fft2(y.to(device=device, dtype=torch.float64)).reshape(-1)
        power = torch.zeros(len(counts) + 1, dtype=torch.float64, device=device)
        power = power.index_add_(0, shell, yk.abs().pow(2))[1:] / n**2  # per shell, k != 0
        b_shell = self._grid(n, device)[0].reshape(N_BASIS, -1)[:, first].double()
        n_t = len(self.alpha_bar) - 1
        t = torch.arange(1, n_t + 1, device=device)
        a = self.alpha_bar.to(device)[1:]
        log_snr = torch.log(a) - torch.log1p(-a)
        ratio = a / (1 - a)
        # (1 - p)^2 c + p^2 r P = c - 2 p c + p^2 (c + r P), summed over shells
        c2 = counts[None, :] + ratio[:, None] * power[None, :]  # (T, shells), theta-free
        out = []
        for row in theta_unit:
            coef = self._coefficients(t, row.reshape(1, 2).expand(n_t, 2)).double()  # (T, .)
            keep = torch.sigmoid(-(coef[:, :N_BASIS] @ b_shell + log_snr[:, None]))
            err = counts.sum() - 2 * (keep @ counts) + (keep.square() * c2).sum(-1)
            keep0 = torch.sigmoid(-(log_snr + coef[:, N_BASIS]))
            y0 = (yk[0] - coef[:, N_BASIS + 1] * n**2).abs().pow(2) / n**2
            out.append(err + (1 - keep0).pow(2) + keep0.pow(2) * ratio * y0)
        return torch.stack(out)

    def _shells(self, n: int, device: torch.device):
        """Shells of equal |k|^2 of an n x n map: the shell of each mode (shell 0 is k = 0
        alone), one mode of each other shell, and their mode counts."""
        key = ("shells", n)
        if key not in self._features:
            f1 = np.fft.fftfreq(n) * n
            k2 = np.rint(f1[:, None] ** 2 + f1[None, :] ** 2).astype(np.int64).ravel()
            _, shell = np.unique(k2, return_inverse=True)
            first = np.unique(shell, return_index=True)[1][1:]
            counts = np.bincount(shell)[1:].astype(np.float64)
            self._features[key] = tuple(torch.as_tensor(v) for v in (shell, first, counts))
        return tuple(v.to(device) for v in self._features[key])
