"""The Monte Carlo error of a posterior computed from an importance-sampled likelihood.

The diffusion likelihood is an estimate, log L^(theta) = sum_k z_k(theta) (+ a closed-form
part), with one term z_k per sampled timestep (and its noise), the same draws at every theta
(common random numbers). Its error e(theta) = log L^ - E log L^ moves the posterior; to first
order in e, the posterior mean moves by the posterior covariance of theta with e,

    delta mu = Cov_post(theta, e),      delta Sigma = Cov_post((theta - mu)(theta - mu)^T, e),

so each term contributes c_k = Cov_post(theta, z_k) to the mean (and the analogue to the
covariance), and the Monte Carlo variance of the posterior mean is the variance of the sum
of the c_k over the draws of timesteps and noise. The terms are a stratified (systematic)
sample in t, so that variance is estimated as in survey sampling of a systematic sample,
from the successive differences of the c_k ordered by t (Wolter 2007, "Introduction to
Variance Estimation", sec. 8.2):

    Var(sum_k c_k) ~ K / (2 (K - 1)) sum_k (c_{k+1} - c_k)^2,

which is the usual K s_c^2 for independent draws and leaves out the smooth trend over t that
stratification removes. Everything comes from the per-term values the grid already computed:
no network calls. docs/likelihood.md validates it against the seed-to-seed scatter of the
posterior mean measured directly.
"""

from __future__ import annotations

import numpy as np

ESTIMATORS = ("successive", "iid")


def _variance_of_sum(c: np.ndarray, order: np.ndarray, estimator: str) -> np.ndarray:
    """Variance of sum_k c[..., k] over the draws of the K terms (ordered by ``order``)."""
    K = c.shape[-1]
    if K < 2:
        return np.full(c.shape[:-1], np.nan)
    if estimator == "iid":
        return K * c.var(axis=-1, ddof=1)
    d = np.diff(c[..., order], axis=-1)
    return K / (2 * (K - 1)) * np.sum(d**2, axis=-1)


def posterior_mc_error(
    theta: np.ndarray,
    weights: np.ndarray,
    terms: np.ndarray,
    timesteps: np.ndarray,
    *,
    temperature: float = 1.0,
    estimator: str = "successive",
) -> dict:
    """Monte Carlo standard errors of a tabulated posterior's mean and standard deviations.

    Parameters
    ----------
    theta
        Points of the tabulated posterior, (P, 2).
    weights
        Posterior mass of each point (P,), summing to 1 (the grid's cell masses).
    terms
        The likelihood's per-term contributions z_k at each point, (P, K), untempered.
    timesteps
        The timestep of each term (K,): the order of the stratified sample.
    temperature
        The posterior's likelihood temperature (the terms enter as z_k / temperature).
    estimator
        ``"successive"`` (default, for the stratified sample) or ``"iid"`` (K s^2).

    Returns
    -------
    dict
        ``mean``: standard error of the posterior mean per parameter, in units of the
        posterior standard deviation; ``sd``: relative standard error of each posterior
        standard deviation; ``n_terms``: K.
    """
    theta = np.asarray(theta, float)
    w = np.asarray(weights, float)
    z = np.asarray(terms, float) / float(temperature)
    ok = (w > 0) & np.all(np.isfinite(z), axis=1)
    theta, w, z = theta[ok], w[ok] / w[ok].sum(), z[ok]
    mu = w @ theta
    d = theta - mu
    cov = (w[:, None] * d).T @ d
    sd = np.sqrt(np.diag(cov))
    zc = z - w @ z  # each term centred under the posterior
    c_mean = (w[:, None] * d).T @ zc  # (2, K): Cov_post(theta_j, z_k)
    c_var = (w[:, None] * (d**2 - sd**2)).T @ zc  # (2, K): Cov_post((theta_j - mu_j)^2, z_k)
    order = np.argsort(np.asarray(timesteps), kind="stable")
    var_mean = _variance_of_sum(c_mean, order, estimator)
    var_var = _variance_of_sum(c_var, order, estimator)
    # delta sd = delta var / (2 sd): relative error of sd = sqrt(Var(delta var)) / (2 sd^2)
    return {"mean": (np.sqrt(var_mean) / sd).tolist(),
            "sd": (np.sqrt(var_var) / (2 * sd**2)).tolist(),
            "n_terms": int(z.shape[1])}  # fmt: skip


DESIGN_SCALE = 2.5
"""Half-width, in posterior standard deviations, of the 3 x 3 design on which added
timesteps are evaluated (:func:`design_points`)."""
FIT_REACH = 4.5
"""A fitted term is the quadratic within this many posterior sd of the design's centre (the
reach of the aligned grid) and constant along each whitened axis beyond it, so that a grid
far from the posterior (a fallback over the whole prior box) cannot meet a quadratic's
extrapolation."""


def design_points(centre: np.ndarray, cov: np.ndarray, low: np.ndarray,
                  high: np.ndarray) -> np.ndarray:  # fmt: skip
    """A 3 x 3 design, (9, 2): the points centre + C^(1/2) u for u in {-s, 0, s}^2 with
    s = :data:`DESIGN_SCALE` along the principal axes of ``cov``, moved inside the box
    [low, high] (by a margin of 1e-6 of its width) where they fall outside it."""
    evals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    basis = vecs * np.sqrt(np.maximum(evals, 0.0))
    g = np.array([-DESIGN_SCALE, 0.0, DESIGN_SCALE])
    u = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    pts = np.asarray(centre, float) + u @ basis.T
    margin = 1e-6 * (np.asarray(high) - np.asarray(low))
    return np.clip(pts, np.asarray(low) + margin, np.asarray(high) - margin)


def _features(u: np.ndarray) -> np.ndarray:
    """1, u1, u2, u1^2, u1 u2, u2^2 of points u (B, 2) -> (B, 6)."""
    return np.stack([np.ones(len(u)), u[:, 0], u[:, 1], u[:, 0] ** 2, u[:, 0] * u[:, 1],
                     u[:, 1] ** 2], axis=1)  # fmt: skip


class QuadraticTerms:
    """Per-term quadratic fits in theta of likelihood terms evaluated on a design.

    The terms of one round of added timesteps are evaluated only on a small design about
    the posterior (:func:`design_points`) and represented on the grid by their least-squares
    quadratic in the posterior's whitened coordinates: each term is a smooth function of
    theta (common random numbers), and a quadratic is exact for a Gaussian likelihood.
    ``columns`` says which of the likelihood's terms they are.
    """

    def __init__(self, design: np.ndarray, values: np.ndarray, centre: np.ndarray,
                 cov: np.ndarray, columns: slice) -> None:  # fmt: skip
        self.columns = columns
        self.centre = np.asarray(centre, float)
        self.cov = np.asarray(cov, float)
        evals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        self.whiten = (vecs / np.sqrt(evals)).T  # u = whiten @ (theta - centre)
        x = _features(self._u(design))
        self.coef, *_ = np.linalg.lstsq(x, np.asarray(values, float), rcond=None)  # (6, n)
        self._residuals = x @ self.coef - np.asarray(values, float)  # (D, n)

    def residual_rms(self, weights: np.ndarray) -> float:
        """The rms over the design of the fit's residual of the round's sum of terms with
        these weights (n,) (in nats with the likelihood's term weights)."""
        return float(np.sqrt(np.mean((self._residuals @ np.asarray(weights)) ** 2)))

    def lack_of_fit(self, weights: np.ndarray, timesteps: np.ndarray) -> float:
        """The rms over the design of the residual of the weighted sum of terms that is not
        Monte Carlo noise, in nats: sqrt(max(0, rms^2 - noise^2)), the noise variance of the
        summed residual at each design point estimated from the successive differences of
        the per-term residuals ordered by their timesteps (n,) (as :func:`posterior_mc_error`
        does for the stratified sample). The non-quadratic part of the expected likelihood,
        which biases the fit the same way for every seed."""
        r = self._residuals * np.asarray(weights)  # (D, n)
        total = np.mean(r.sum(axis=1) ** 2)
        if r.shape[1] < 2:  # no noise estimate from one term: all of it counts
            return float(np.sqrt(total))
        noise = np.mean(_variance_of_sum(r, np.argsort(timesteps), "successive"))
        return float(np.sqrt(max(0.0, total - noise)))

    def _u(self, theta: np.ndarray) -> np.ndarray:
        u = (np.atleast_2d(theta) - self.centre) @ self.whiten.T
        return np.clip(u, -FIT_REACH, FIT_REACH)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        """The fitted terms at points theta (B, 2) -> (B, n)."""
        return _features(self._u(theta)) @ self.coef
