"""The power-spectrum likelihood: the standard analysis diffusion posteriors are compared with.

The data vector is the log of the binned power spectrum of the overdensity
delta = rho / mean(rho) - 1. Its mean over maps is a polynomial in the (scaled) parameters and
its covariance is C(theta) = D(theta) R D(theta): a correlation matrix R pooled over all
simulations and per-bin standard deviations D whose logarithm is a polynomial in theta. Both
are fitted to simulations (any labelled maps: the log-normal simulator or CAMELS). The
likelihood is Gaussian, with the Hartlap factor on the inverse covariance, or the
Sellentin-Heavens t-distribution that marginalises over the covariance's estimation noise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import digamma

from diffinfer.errors import DataFileError, InputError
from diffinfer.fields.grid import FieldConfig, as_maps
from diffinfer.fields.stats import power_spectrum
from diffinfer.io import write_npz_atomic
from diffinfer.likelihoods.built import BuiltLikelihood
from diffinfer.parameters import as_theta

CORRECTIONS = ("hartlap", "sellentin-heavens", "none")


def spectrum_bins(n_pix: int, box_size: float, n_bins: int = 12) -> np.ndarray:
    """Bin edges (h/Mpc): one fundamental mode wide at low k, logarithmic above, up to the
    Nyquist frequency; fewer bins keep the covariance well estimated. ``n_bins`` log-spaced
    centres are rounded to whole modes, so coinciding low-k centres merge (12 gives 11 bins
    at 64^2)."""
    centres = np.unique(np.round(np.geomspace(1, n_pix // 2, n_bins)))
    return 2 * np.pi / box_size * np.concatenate([[0.5], centres + 0.5])


def _features(theta_unit: torch.Tensor, degree: int) -> torch.Tensor:
    u, v = theta_unit[:, 0], theta_unit[:, 1]
    cols = [u**a * v**b for a in range(degree + 1) for b in range(degree + 1 - a)]
    return torch.stack(cols, dim=-1)


# --------------------------------------------------------------------------- the fit
# The fit is deterministic by construction: numpy only (single-threaded, no BLAS), every sum
# over simulations an exactly rounded math.fsum (independent of order, chunking and thread
# count), and the small normal equations solved by a Cholesky factorisation written out here
# with fsum dot products. torch.linalg.lstsq and matrix products go through multi-threaded
# BLAS/LAPACK whose rounding depends on the thread count (the fit differed at 1e-13 between
# processes with 1 and 2 threads).


def _features_np(theta_unit: np.ndarray, degree: int) -> np.ndarray:
    """:func:`_features` in numpy, powers by repeated multiplication, shape (M, n_features)."""
    u, v = theta_unit[:, 0], theta_unit[:, 1]
    pu, pv = [np.ones_like(u)], [np.ones_like(v)]
    for _ in range(degree):
        pu.append(pu[-1] * u)
        pv.append(pv[-1] * v)
    cols = [pu[a] * pv[b] for a in range(degree + 1) for b in range(degree + 1 - a)]
    return np.stack(cols, axis=-1)


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a.T @ b`` with every entry an exactly rounded sum of the rounded products."""
    out = np.empty((a.shape[1], b.shape[1]))
    for i in range(a.shape[1]):
        products = (a[:, i : i + 1] * b).T.tolist()
        out[i] = [math.fsum(col) for col in products]
    return out


def _apply(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``x @ coef`` summed over the features in a fixed order, elementwise only."""
    out = x[:, :1] * coef[0]
    for k in range(1, x.shape[1]):
        out = out + x[:, k : k + 1] * coef[k]
    return out


def _cholesky(g: np.ndarray, what: str) -> list[list[float]]:
    """Lower Cholesky factor of a small symmetric positive-definite matrix (fsum dots)."""
    n = g.shape[0]
    low = [[0.0] * n for _ in range(n)]
    for j in range(n):
        d = float(g[j, j]) - math.fsum(low[j][k] ** 2 for k in range(j))
        if not d > 1e-12 * float(g[j, j]):
            raise InputError(
                f"the parameters of the simulations do not determine the {what} (a "
                f"{n}-term polynomial in theta): simulate more distinct cosmologies or lower "
                "the degree"
            )
        low[j][j] = math.sqrt(d)
        for i in range(j + 1, n):
            dot = math.fsum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = (float(g[i, j]) - dot) / low[j][j]
    return low


def _cholesky_solve(low: list[list[float]], rhs: np.ndarray) -> np.ndarray:
    """Solve L L^T x = rhs for each column of ``rhs`` (n, q)."""
    n = len(low)
    out = np.empty((n, rhs.shape[1]))
    for c in range(rhs.shape[1]):
        y = [0.0] * n
        for i in range(n):
            y[i] = (float(rhs[i, c]) - math.fsum(low[i][k] * y[k] for k in range(i))) / low[i][i]
        x = [0.0] * n
        for i in reversed(range(n)):
            x[i] = (y[i] - math.fsum(low[k][i] * x[k] for k in range(i + 1, n))) / low[i][i]
        out[:, c] = x
    return out


def _least_squares(x: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    """Least-squares coefficients of ``y`` (M, q) on ``x`` (M, p), deterministically.

    Normal equations with exact sums, plus one step of iterative refinement (which restores
    the accuracy the normal equations lose by squaring the condition number).
    """
    low = _cholesky(_gram(x, x), what)
    coef = _cholesky_solve(low, _gram(x, y))
    return coef + _cholesky_solve(low, _gram(x, y - _apply(x, coef)))


@dataclass
class PowerSpectrumLikelihood:
    """A Gaussian likelihood of the binned log power spectrum, fitted to simulations.

    Build it with :meth:`fit` (labelled maps), :meth:`from_simulator`, or :meth:`load`.
    """

    field: FieldConfig
    edges: np.ndarray
    mean_coef: np.ndarray  # (n_features, n_bins)
    log_std_coef: np.ndarray  # (n_features_std, n_bins)
    correlation: np.ndarray  # (n_bins, n_bins)
    n_sims: int
    degree: int = 3
    std_degree: int = 2
    correction: str = "hartlap"

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise InputError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        p = len(self.edges) - 1
        if self.n_sims <= p + 2:
            raise InputError(f"{self.n_sims} simulations cannot estimate a {p}-bin covariance: "
                             "simulate more maps or use fewer bins")  # fmt: skip
        self._chol = torch.linalg.cholesky(torch.as_tensor(self.correlation, dtype=torch.float64))

    # ------------------------------------------------------------------ summaries
    @property
    def n_bins(self) -> int:
        """Length of the data vector."""
        return len(self.edges) - 1

    def summary(self, density: np.ndarray | torch.Tensor) -> np.ndarray:
        """Log power spectrum of the overdensity of each map, (M, n_bins) or (n_bins,)."""
        maps = as_maps(density, n_pix=self.field.n_pix, positive=True, what="density map")
        n = self.field.n_pix
        m = maps.numpy().astype(np.float64).reshape(-1, n, n)
        delta = m / m.mean(axis=(-2, -1), keepdims=True) - 1
        power = power_spectrum(delta, self.field.box_size, edges=self.edges).power
        out = np.log(np.reshape(power, (len(m), -1)))
        return out[0] if np.ndim(density) == 2 else out

    def _unit(self, theta: torch.Tensor) -> torch.Tensor:
        low = torch.as_tensor(self.field.prior.low, dtype=theta.dtype)
        width = torch.as_tensor(self.field.prior.width, dtype=theta.dtype)
        return 2 * (theta - low) / width - 1

    def mean(self, theta: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Model mean of the summary at each theta, (B, n_bins)."""
        t = as_theta(theta)
        coef = torch.as_tensor(self.mean_coef, dtype=t.dtype)
        return _features(self._unit(t), self.degree) @ coef

    def std(self, theta: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Model standard deviation of each summary bin at each theta, (B, n_bins)."""
        t = as_theta(theta)
        coef = torch.as_tensor(self.log_std_coef, dtype=t.dtype)
        return torch.exp(_features(self._unit(t), self.std_degree) @ coef)

    # ------------------------------------------------------------------ likelihood
    def log_prob(self, summary: np.ndarray | torch.Tensor,
                 theta: np.ndarray | torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Log likelihood of one summary vector at each theta, (B,); differentiable in theta.

        Outside the prior box the likelihood is still defined (the polynomial extrapolates);
        the posterior's prior cuts it off.
        """
        t = as_theta(theta)
        s = torch.as_tensor(np.asarray(summary), dtype=t.dtype)
        if s.shape != (self.n_bins,) or not bool(torch.isfinite(s).all()):
            raise InputError(f"the summary must be {self.n_bins} finite numbers, got {s.shape}")
        sd = self.std(t)
        r = (s - self.mean(t)) / sd
        w = torch.linalg.solve_triangular(self._chol, r.T, upper=False)
        chi2 = (w**2).sum(0)
        p, n = self.n_bins, self.n_sims
        log_det = 2 * torch.log(sd).sum(-1)
        if self.correction == "hartlap":
            return -0.5 * (n - p - 2) / (n - 1) * chi2 - 0.5 * log_det
        if self.correction == "sellentin-heavens":
            return -0.5 * n * torch.log1p(chi2 / (n - 1)) - 0.5 * log_det
        return -0.5 * chi2 - 0.5 * log_det

    def for_map(self, density: np.ndarray | torch.Tensor):
        """The likelihood of one map as a batched function theta (B, 2) -> (B,)."""
        s = self.summary(density)
        if not np.all(np.isfinite(s)):
            raise InputError("the map's power spectrum has empty or non-finite bins")
        return lambda theta: self.log_prob(s, theta)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        density: np.ndarray,
        theta: np.ndarray,
        field: FieldConfig,
        *,
        n_bins: int = 12,
        degree: int = 3,
        std_degree: int = 2,
        correction: str = "hartlap",
    ) -> PowerSpectrumLikelihood:
        """Fit the mean, the theta-dependent standard deviations and the correlation matrix.

        Parameters
        ----------
        density
            Simulated maps (M, N, N), density units.
        theta
            Their parameters (M, 2); several maps per cosmology help the covariance.
        field
            Geometry and prior box of the maps.
        n_bins, degree, std_degree
            Summary bins and polynomial degrees of the mean and of the log standard deviation.
        correction
            ``"hartlap"``, ``"sellentin-heavens"`` or ``"none"``.

        Notes
        -----
        The fit is deterministic: the same maps and parameters give the same arrays bit for
        bit in every process and with any thread count (numpy without BLAS, exactly rounded
        sums over the simulations, a written-out Cholesky solve of the normal equations plus
        one refinement step), so a resumed calibration study matches an uninterrupted one.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (len(density), 2):
            raise InputError(f"theta must have shape ({len(density)}, 2), got {theta.shape}")
        edges = spectrum_bins(field.n_pix, field.box_size, n_bins)
        p = len(edges) - 1
        proto = cls(field, edges, np.zeros((1, p)), np.zeros((1, p)), np.eye(p),
                    len(density) + 10, degree, std_degree, correction)  # fmt: skip
        s = np.asarray(proto.summary(density), dtype=np.float64)
        if not np.all(np.isfinite(s)):
            raise InputError("some maps have empty power-spectrum bins")
        # deterministic by construction (see _least_squares): the same maps give the same
        # arrays bit for bit in every process and with any thread count
        low, width = np.asarray(field.prior.low), np.asarray(field.prior.width)
        u = 2 * (theta - low) / width - 1
        x = _features_np(u, degree)
        mean_coef = _least_squares(x, s, "mean")
        resid = s - _apply(x, mean_coef)
        # E[log r^2] = log sigma^2 + digamma(1/2) + log 2 for Gaussian residuals
        xs = _features_np(u, std_degree)
        target = 0.5 * (np.log(resid**2 + 1e-300) - (digamma(0.5) + np.log(2.0)))
        log_std_coef = _least_squares(xs, target, "standard deviations")
        z = resid / np.exp(_apply(xs, log_std_coef))
        dof = len(density) - x.shape[1]
        corr = _gram(z, z) / dof
        d = np.sqrt(np.diag(corr))
        corr = corr / np.outer(d, d)
        # the per-bin scale lost by the log-variance fit is put back into the std
        log_std_coef[0] += np.log(d)
        # residual degrees of freedom + 1 play the role of the number of simulations
        return cls(field, edges, mean_coef, log_std_coef, corr, dof + 1, degree,
                   std_degree, correction)  # fmt: skip

    @classmethod
    def from_simulator(
        cls,
        simulator,
        *,
        n_cosmologies: int = 200,
        maps_per_cosmology: int = 10,
        seed: int = 0,
        noise_sigma: float = 0.0,
        **fit_options,
    ) -> PowerSpectrumLikelihood:
        """Simulate a Latin hypercube of cosmologies over the simulator's prior and fit.

        ``noise_sigma`` adds Gaussian pixel noise in the model space of the simulator's
        transform (as :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood` assumes).
        """
        from diffinfer.data.synthetic import latin_hypercube

        thetas = latin_hypercube(n_cosmologies, simulator.config.prior, seed=seed)
        maps = []
        for i, t in enumerate(thetas):
            maps.append(simulator.simulate(t, maps_per_cosmology, seed=seed + 1, row_offset=i))
        density = np.concatenate(maps)
        theta = np.repeat(thetas, maps_per_cosmology, axis=0)
        if noise_sigma > 0:
            # the simulator's transform (ln rho - shift) / scale and its inverse, written in
            # numpy (single-threaded) so that the fit does not depend on the thread count
            rng = np.random.default_rng(seed + 2)
            shift, scale = simulator.transform.shift, simulator.transform.scale
            y = (np.log(density) - shift) / scale + noise_sigma * rng.normal(size=density.shape)
            density = np.exp(y * scale + shift)
        return cls.fit(density, theta, simulator.config, **fit_options)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted likelihood to an ``.npz`` file atomically (no pickles)."""
        import json

        meta = {"field": self.field.to_dict(), "n_sims": self.n_sims, "degree": self.degree,
                "std_degree": self.std_degree, "correction": self.correction}  # fmt: skip
        return write_npz_atomic(path, edges=self.edges, mean_coef=self.mean_coef,
                                log_std_coef=self.log_std_coef, correlation=self.correlation,
                                meta=np.array(json.dumps(meta)))  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> PowerSpectrumLikelihood:
        """Read a file written by :meth:`save`."""
        import json

        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in ("edges", "mean_coef", "log_std_coef", "correlation")}
        except (OSError, KeyError, ValueError) as exc:
            raise DataFileError(f"cannot read a power-spectrum likelihood from {path}: {exc}; "
                                "refit it with PowerSpectrumLikelihood.fit") from exc  # fmt: skip
        return cls(FieldConfig.from_dict(meta["field"]), arrays["edges"], arrays["mean_coef"],
                   arrays["log_std_coef"], arrays["correlation"], int(meta["n_sims"]),
                   int(meta["degree"]), int(meta["std_degree"]), meta["correction"])  # fmt: skip


__all__ = ["CORRECTIONS", "PowerSpectrumLikelihood", "spectrum_bins"]


_SPECTRUM_CACHE: dict[tuple, PowerSpectrumLikelihood] = {}


def spectrum_for(spectrum: object, sim, noise_sigma: float) -> PowerSpectrumLikelihood:
    """The power-spectrum likelihood: given, read from a file, or fitted once per process to
    the log-normal simulator ``sim`` (200 cosmologies x 10 maps, seeded)."""
    if isinstance(spectrum, PowerSpectrumLikelihood):
        return spectrum
    if spectrum is not None:
        return PowerSpectrumLikelihood.load(spectrum)
    key = (repr(sim.config), repr(sim.transform), float(noise_sigma))
    if key not in _SPECTRUM_CACHE:
        _SPECTRUM_CACHE[key] = PowerSpectrumLikelihood.from_simulator(sim, noise_sigma=noise_sigma)
    return _SPECTRUM_CACHE[key]


def power_likelihood(
    sim,
    field: np.ndarray | torch.Tensor,
    spectrum: object = None,
    noise_sigma: float = 0.0,
    card: dict | None = None,
) -> BuiltLikelihood:
    """The Gaussian likelihood of the binned power spectrum of one map (N, N), or the product
    over a stack (M, N, N) of one cosmology's maps.

    ``spectrum``: a fitted :class:`PowerSpectrumLikelihood` or its file; default, one fitted
    to the log-normal simulator ``sim``, which is refused for a model whose ``card`` says it
    describes other maps (N-body: give the likelihood fitted to them).
    """
    card = card or {}
    trained_on = (card.get("data") or {}).get("simulator")
    if spectrum is None and trained_on not in (None, "lognormal", "unknown"):
        name = card.get("name", "the model")
        raise InputError(
            f"the default power-spectrum likelihood is fitted to log-normal maps, but "
            f"{name} describes {trained_on} maps: give spectrum=FILE fitted to them "
            f"(shipped: models/{name}-power.npz; scripts/train_references.py fits one)"
        )
    sigma = float(noise_sigma or 0.0)
    spec = spectrum_for(spectrum, sim, sigma)
    per_map = [spec.for_map(one) for one in (field if field.ndim == 3 else field[None])]

    def log_like(theta: torch.Tensor) -> torch.Tensor:
        return sum(f(theta) for f in per_map)

    settings = {"n_bins": spec.n_bins, "correction": spec.correction, "noise_sigma": sigma,
                "spectrum": None if spectrum is None else str(spectrum)}  # fmt: skip
    description = f"power-spectrum likelihood ({spec.n_bins} bins, {spec.correction})"
    return BuiltLikelihood(log_like, spec.field.prior, None, description, settings)
