"""The reference simulator: log-normal maps whose likelihood is known exactly.

The log-density g of a map is a Gaussian random field on an N x N periodic grid of side L
with the slab spectrum P_2D(k; theta); the density is rho = exp(g - sigma_g^2 / 2), so that
<rho> = 1. Every mode keeps its variance, k = 0 included (its physical variance P_2D(0)/L^2):
a field with the k = 0 mode removed would have a map mean of ln(rho) equal to -sigma_g^2/2
exactly and would leak theta with no noise.

In model space y = (ln rho - shift) / scale (see :class:`~diffinfer.fields.Transform`) a map
is Gaussian with a constant mean and a circulant covariance, diagonal in Fourier space:

    mean  mu(theta)       = (-sigma_g^2(theta) / 2 - shift) / scale
    eigenvalues lambda_k  = P_2D(|k|; theta) / (A_pix scale^2),   A_pix = (L / N)^2
    sigma_g^2(theta)      = mean_k of P_2D(|k|) / A_pix (the pixel variance of g)

so log p(y | theta) costs one FFT of the map and O(N^2) per theta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from diffinfer.cosmology import SlabProjection
from diffinfer.errors import InputError
from diffinfer.fields.grid import FieldConfig, as_maps, wavenumber_grid
from diffinfer.fields.transform import Transform
from diffinfer.parameters import as_theta
from diffinfer.validation import check_float, check_int

_OUTSIDE = ("raise", "-inf", "ignore")
# Where the maximum-likelihood search may go: the spectrum is defined well beyond the prior.
_SEARCH_LOW = (0.06, 0.1)
_SEARCH_HIGH = (1.0, 2.0)


@dataclass(frozen=True)
class MaximumLikelihood:
    """Maximum-likelihood estimates of theta, one per map.

    Attributes
    ----------
    theta
        Estimates, shape (M, 2), order (Omega_m, sigma_8).
    cov
        Inverse Fisher matrices at the estimates, shape (M, 2, 2).
    converged
        Whether the Fisher-scoring iteration met its tolerance, shape (M,).
    n_iter
        Iterations used.
    """

    theta: np.ndarray
    cov: np.ndarray
    converged: np.ndarray
    n_iter: int

    @property
    def std(self) -> np.ndarray:
        """Fisher standard deviations, shape (M, 2)."""
        return np.sqrt(np.diagonal(self.cov, axis1=-2, axis2=-1))


class LognormalSimulator:
    """Log-normal density maps with an exact, differentiable likelihood.

    Parameters
    ----------
    config
        Map geometry and prior box (default: N = 64, L = 500 Mpc/h, d = 50 Mpc/h).
    transform
        Density-to-model-space transform; default :meth:`prior_transform`.
    """

    @classmethod
    def for_model(cls, model: object | None) -> LognormalSimulator:
        """The simulator of a model's geometry and transform (its ``field`` and
        ``transform``); the reference configuration for None."""
        if model is None:
            return cls()
        return cls(model.field, model.transform)

    def __init__(self, config: FieldConfig | None = None, transform: Transform | None = None):
        self.config = config or FieldConfig()
        n = self.config.n_pix
        k_unique, inverse = np.unique(wavenumber_grid(n, self.config.box_size), return_inverse=True)
        self._projection = SlabProjection(k_unique, self.config.depth)
        self._grid_index = torch.as_tensor(inverse.reshape(-1))
        self.transform = transform if transform is not None else self.prior_transform()

    # ------------------------------------------------------------------ spectra
    def eigenvalues(self, theta: torch.Tensor) -> torch.Tensor:
        """Eigenvalues of the pixel covariance of g, P_2D(|k|) / A_pix, shape (B, N, N).

        Parameters
        ----------
        theta
            Parameters, shape (B, 2); not checked against the prior.
        """
        n = self.config.n_pix
        p = self._projection(theta)[:, self._grid_index]
        return (p / self.config.pixel_area).reshape(-1, n, n)

    def log_variance(self, theta: torch.Tensor) -> torch.Tensor:
        """Pixel variance sigma_g^2 of the log-density, shape (B,)."""
        return self.eigenvalues(as_theta(theta)).mean(dim=(-2, -1))

    def prior_transform(self, n_quad: int = 16) -> Transform:
        """The transform an infinite data set drawn uniformly over the prior box would give.

        Over the prior, ln(rho) has mean E[-sigma_g^2/2] and variance
        E[sigma_g^2] + Var[sigma_g^2/2] (Gauss-Legendre over the box).
        """
        x, w = np.polynomial.legendre.leggauss(n_quad)
        u = 0.5 * (x + 1.0)
        prior = self.config.prior
        grid = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
        weights = np.outer(w, w).reshape(-1) / 4.0
        theta = torch.as_tensor(np.asarray(prior.low) + grid * prior.width)
        s2 = self.log_variance(theta).numpy()
        mean = float(np.sum(weights * (-s2 / 2)))
        var = float(np.sum(weights * (s2 + (s2 / 2) ** 2)) - mean**2)
        return Transform(shift=mean, scale=math.sqrt(var))

    def model_moments(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B,) and covariance eigenvalues (B, N, N) of a map in model space."""
        lam = self.eigenvalues(theta)
        s = self.transform.scale
        mean = (-lam.mean(dim=(-2, -1)) / 2 - self.transform.shift) / s
        return mean, lam / s**2

    # --------------------------------------------------------------- simulation
    def simulate(
        self,
        theta: np.ndarray | torch.Tensor,
        n: int = 1,
        seed: int = 0,
        *,
        row_offset: int = 0,
        chunk: int = 64,
    ) -> np.ndarray:
        """Draw density maps.

        Map j of row b draws its white noise from child ``row_offset + b`` of
        ``numpy.random.SeedSequence(seed)`` and is coloured on its own, by one real FFT of
        fixed shape (N, N) in numpy (single-threaded). So a call is reproducible bit for bit
        on a given machine and library build; map j does not depend on ``n`` (it is the same
        for any n > j) nor on torch's thread count; and a call with the single parameter
        vector of row b and ``row_offset=b`` gives row b of the longer call (bit for bit).

        The spectra of the parameter vectors are evaluated ``chunk`` at a time, and a
        spectrum evaluated in a batch differs from the same spectrum evaluated alone by
        rounding (~1e-15 relative, from the batched transfer function and matrix product):
        splitting a list of parameters into calls differently changes the maps by ~1e-14
        relative, not bit for bit (evaluating every spectrum alone would make that exact, at
        ~3 ms per parameter vector: 4x the time when each vector gets one map).

        Parameters
        ----------
        theta
            One parameter vector (2,) or a batch (B, 2), inside the prior box.
        n
            Maps per parameter vector.
        seed
            Seed of the white noise (see above).
        row_offset
            Index of the first row within a longer list of parameters.
        chunk
            Parameter vectors whose spectra are evaluated at once (a positive integer).

        Returns
        -------
        numpy.ndarray
            Densities rho (mean 1), shape (n, N, N) for one theta or (B, n, N, N).
        """
        single = np.ndim(theta) == 1
        theta = as_theta(theta, self.config.prior).detach()
        n = check_int("n", n, low=1, what="maps per parameter vector")
        chunk = check_int("chunk", chunk, low=1)
        seed = check_int("seed", seed, low=0)
        row_offset = check_int("row_offset", row_offset, low=0)
        n_pix = self.config.n_pix
        half = n_pix // 2 + 1  # columns of a real FFT (lambda_k is even in k)
        out = np.empty((theta.shape[0], n, n_pix, n_pix))
        for i in range(0, theta.shape[0], chunk):
            with torch.inference_mode():
                lam = self.eigenvalues(theta[i : i + chunk]).numpy()
            for r, lam_b in enumerate(lam):
                b = i + r
                root, s2 = np.sqrt(lam_b[:, :half]), float(np.mean(lam_b))
                child = np.random.SeedSequence(seed, spawn_key=(row_offset + b,))
                noise = np.random.default_rng(child).standard_normal((n, n_pix, n_pix))
                for j in range(n):
                    g = np.fft.irfft2(np.fft.rfft2(noise[j]) * root, s=(n_pix, n_pix))
                    out[b, j] = np.exp(g - s2 / 2)
        return out[0] if single else out

    # --------------------------------------------------------------- likelihood
    def exact_log_prob(
        self,
        y: np.ndarray | torch.Tensor,
        theta: np.ndarray | torch.Tensor,
        *,
        outside: str = "raise",
        chunk: int = 256,
        noise_sigma: float | torch.Tensor = 0.0,
    ) -> torch.Tensor:
        """Exact log p(y | theta) of model-space maps, differentiable in theta.

        Parameters
        ----------
        y
            A model-space map (N, N), evaluated at every theta, or maps (M, N, N): paired
            with theta row by row when B = M, or all at one theta when B = 1.
        theta
            Parameters, shape (2,) or (B, 2).
        outside
            What to do with theta outside the prior box: ``"raise"`` an error, return
            ``"-inf"`` there (for samplers), or ``"ignore"`` the box.
        chunk
            Parameter vectors evaluated at once (bounds memory: one map against 10^4 theta
            needs chunk x N^2 x 8 bytes at a time).
        noise_sigma
            Standard deviation of Gaussian white noise added to the map in model space: every
            covariance eigenvalue grows by noise_sigma^2 (exact for a noisy observation; a
            tensor keeps its gradient, so the noise level can be a free parameter).

        Returns
        -------
        torch.Tensor
            log p in nats, shape (B,) (or (M,)), float64.
        """
        if outside not in _OUTSIDE:
            raise InputError(f"outside must be one of {_OUTSIDE}, got {outside!r}")
        if not isinstance(noise_sigma, torch.Tensor):
            check_float("noise_sigma", noise_sigma, low=0, what="model-space pixel noise")
        elif not bool(torch.isfinite(noise_sigma).all()):
            raise InputError("noise_sigma contains NaN or inf")
        n = self.config.n_pix
        y = as_maps(y, n_pix=n, what="model-space map")
        theta = as_theta(theta, self.config.prior if outside == "raise" else None)
        inside = None
        if outside == "-inf":
            inside = self.config.prior.contains(theta.detach())
            centre = torch.as_tensor(
                (np.asarray(self.config.prior.low) + np.asarray(self.config.prior.high)) / 2,
                dtype=theta.dtype,
            )
            theta = torch.where(inside[:, None], theta, centre)
        if y.ndim == 3 and theta.shape[0] not in (1, y.shape[0]):
            raise InputError(
                f"{y.shape[0]} maps and {theta.shape[0]} parameter vectors: pass one map, "
                "one theta, or as many theta as maps (paired row by row)"
            )
        power = torch.fft.fft2(y).abs() ** 2 / n**2  # |Y_k|^2 / N^2, k = 0 included
        total = y.sum(dim=(-2, -1))
        if y.ndim == 2:
            power, total = power[None], total[None]
        # rows of theta and of the maps are paired; a single row is shared (broadcast)
        n_out = max(theta.shape[0], power.shape[0])
        shared = self.model_moments(theta) if theta.shape[0] == 1 else None
        parts = []
        for i in range(0, n_out, chunk):
            pw = power[i : i + chunk] if power.shape[0] > 1 else power
            tt = total[i : i + chunk] if total.shape[0] > 1 else total
            mean, lam = shared or self.model_moments(theta[i : i + chunk])
            lam = lam + torch.as_tensor(noise_sigma, dtype=lam.dtype) ** 2
            quad = (pw / lam).sum(dim=(-2, -1))
            quad = quad + ((tt - n**2 * mean) ** 2 - tt**2) / (n**2 * lam[:, 0, 0])
            logdet = torch.log(lam).sum(dim=(-2, -1))
            parts.append(-0.5 * (quad + logdet + n**2 * math.log(2 * math.pi)))
        logp = torch.cat(parts)
        if inside is not None:
            logp = torch.where(inside, logp, torch.full_like(logp, -math.inf))
        return logp

    def fisher(self, theta: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Expected Fisher information of one map, shape (B, 2, 2).

        F_ij = 1/2 sum_k d_i ln lambda_k d_j ln lambda_k + N^2 d_i mu d_j mu / lambda_0,
        with derivatives from forward-mode automatic differentiation.
        """
        theta = as_theta(theta).detach()
        n = self.config.n_pix
        dlog, dmean = [], []
        for j in range(2):
            tangent = torch.zeros_like(theta)
            tangent[:, j] = 1.0
            with fwAD.dual_level():
                lam = self.eigenvalues(fwAD.make_dual(theta, tangent))
                s2 = lam.mean(dim=(-2, -1))
                ln_lam = fwAD.unpack_dual(torch.log(lam)).tangent
                d_mu = fwAD.unpack_dual(-s2 / 2).tangent
                lam0 = fwAD.unpack_dual(lam).primal[:, 0, 0]
            dlog.append(ln_lam.reshape(theta.shape[0], -1))
            dmean.append(d_mu)
        dl = torch.stack(dlog, dim=-1)  # (B, N^2, 2)
        dm = torch.stack(dmean, dim=-1)  # (B, 2)
        return (
            0.5 * dl.transpose(1, 2) @ dl
            + n**2 * dm[:, :, None] * dm[:, None, :] / lam0[:, None, None]
        )

    def maximum_likelihood(
        self,
        y: np.ndarray | torch.Tensor,
        *,
        theta0: np.ndarray | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> MaximumLikelihood:
        """Maximum-likelihood theta of each model-space map, by Fisher scoring.

        Parameters
        ----------
        y
            Model-space maps, (N, N) or (M, N, N); all are fitted at once.
        theta0
            Starting point(s); default the centre of the prior box.
        max_iter
            Iteration cap.
        tol
            Stop when every step is below ``tol`` Fisher standard deviations.

        Returns
        -------
        MaximumLikelihood
            Estimates and inverse-Fisher covariances. The search is confined to
            Omega_m in [0.06, 1], sigma_8 in [0.1, 2] (wider than the prior).
        """
        y = as_maps(y, n_pix=self.config.n_pix, what="model-space map")
        if y.ndim == 2:
            y = y[None]
        m = y.shape[0]
        prior = self.config.prior
        start = (np.asarray(prior.low) + np.asarray(prior.high)) / 2 if theta0 is None else theta0
        theta = as_theta(np.broadcast_to(np.asarray(start, dtype=float), (m, 2)).copy())
        lo = torch.as_tensor(_SEARCH_LOW, dtype=theta.dtype)
        hi = torch.as_tensor(_SEARCH_HIGH, dtype=theta.dtype)
        converged = torch.zeros(m, dtype=torch.bool)
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007 (it is reported)
            t = theta.clone().requires_grad_(True)
            logp = self.exact_log_prob(y, t, outside="ignore")
            (grad,) = torch.autograd.grad(logp.sum(), t)
            fis = self.fisher(theta)
            step = torch.linalg.solve(fis, grad.unsqueeze(-1)).squeeze(-1)
            sigma = torch.sqrt(torch.diagonal(torch.linalg.inv(fis), dim1=-2, dim2=-1))
            converged = (step.abs() / sigma).amax(dim=-1) < tol
            theta = torch.clamp(theta + step, lo, hi)
            if bool(converged.all()):
                break
        cov = torch.linalg.inv(self.fisher(theta))
        return MaximumLikelihood(
            theta=theta.numpy(), cov=cov.numpy(), converged=converged.numpy(), n_iter=it
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"LognormalSimulator(n_pix={c.n_pix}, box_size={c.box_size}, depth={c.depth}, "
            f"prior={c.prior.to_dict()})"
        )
