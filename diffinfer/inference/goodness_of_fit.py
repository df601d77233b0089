"""Is the map like the model's maps? A posterior predictive check of its summary statistics.

A posterior assumes the map was drawn from the model. A map that was not (undeclared pixel
noise, smoothing, another box or simulator) still gets a posterior, often a confident one far
from the truth, and the likelihood alone cannot tell. The check compares the map's summary
statistics, s(x) = (ln P(k) of ln rho in ``n_bins`` logarithmic k bins; the mean, variance,
skewness and excess kurtosis of ln rho), with those of maps simulated at parameters drawn from
the posterior (a posterior predictive check, Gelman, Meng & Stern 1996):

    d^2(x) = (s(x) - m)^T C^-1 (s(x) - m),    p = (1 + #{sims with d^2_i >= d^2(x)}) / (n + 1),

with m and C the mean and covariance of the simulated statistics, and d^2_i each simulated
map's distance from the mean and covariance of the others (leave-one-out, so that a
simulated map is measured as the observed one is). A small p says the map is unlike the
model's maps anywhere near its posterior. docs/posterior.md measures the rate at which clean
held-out maps pass and what the check flags.
"""

from __future__ import annotations

import numpy as np

GOF_THRESHOLD = 0.05
"""The posterior predictive p-value below which a posterior warns that the map is unlike
the model's maps (clean maps fall below it at about this rate: docs/posterior.md)."""


class GoodnessOfFitWarning(UserWarning):
    """The map's statistics are unlike those of the model's maps at its posterior."""


def map_statistics(density: np.ndarray, box_size: float, n_bins: int = 8) -> np.ndarray:
    """Summary statistics of density maps (M, N, N) or (N, N) -> (M, n_bins + 4): ln P(k) of
    ln rho in ``n_bins`` logarithmic bins from the fundamental mode to Nyquist, and the mean,
    variance, skewness and excess kurtosis of ln rho."""
    g = np.log(np.asarray(density, np.float64))
    if g.ndim == 2:
        g = g[None]
    n = g.shape[-1]
    kf = 2 * np.pi / box_size
    edges = np.geomspace(0.99 * kf, (n // 2 + 0.5) * kf, n_bins + 1)
    from diffinfer.fields.stats import power_spectrum

    power = power_spectrum(g, box_size, edges=edges).power  # (M, n_bins)
    flat = g.reshape(len(g), -1)
    mean = flat.mean(1)
    c = flat - mean[:, None]
    var = (c**2).mean(1)
    skew = (c**3).mean(1) / var**1.5
    kurt = (c**4).mean(1) / var**2 - 3
    return np.column_stack([np.log(power), mean, var, skew, kurt])


def predictive_p_value(observed: np.ndarray, simulated: np.ndarray) -> tuple[float, float]:
    """The p-value of an observed statistic vector (D,) among simulated ones (n, D), and its
    squared Mahalanobis distance d^2 (module docstring)."""
    sims = np.asarray(simulated, float)
    n = len(sims)
    mean, cov = sims.mean(0), np.cov(sims.T)
    prec = np.linalg.pinv(cov)
    d = observed - mean
    d2_obs = float(d @ prec @ d)
    # leave-one-out distances of the simulated maps: each from the others' mean and cov
    loo = np.empty(n)
    for i in range(n):
        rest = np.delete(sims, i, axis=0)
        di = sims[i] - rest.mean(0)
        loo[i] = di @ np.linalg.pinv(np.cov(rest.T)) @ di
    p = (1 + int(np.sum(loo >= d2_obs))) / (n + 1)
    return p, d2_obs


def goodness_of_fit(density: np.ndarray, draws: np.ndarray, simulator, *,
                    noise_sigma: float = 0.0, seed: int = 0) -> dict:  # fmt: skip
    """The posterior predictive p-value of a map against maps simulated at ``draws`` (n, 2),
    one map each, with the model-space pixel noise ``noise_sigma`` added as declared.

    Returns
    -------
    dict
        ``p_value``, ``d2`` (the map's squared distance), ``n_sims``, ``statistics`` (what
        was compared) and ``threshold`` (:data:`GOF_THRESHOLD`).
    """
    draws = np.atleast_2d(np.asarray(draws, float))
    sims = simulator.simulate(draws, 1, seed=seed).reshape(len(draws), *np.shape(density))
    if noise_sigma:
        rng = np.random.default_rng([seed, 1])
        y = simulator.transform.forward(sims).numpy()
        y = y + noise_sigma * rng.normal(size=y.shape)
        sims = simulator.transform.inverse(y).numpy()
    box = simulator.config.box_size
    p, d2 = predictive_p_value(map_statistics(density, box)[0], map_statistics(sims, box))
    return {"p_value": p, "d2": d2, "n_sims": len(draws), "threshold": GOF_THRESHOLD,
            "statistics": "ln P(k) of ln rho in 8 log bins; mean, variance, skewness, "
                          "excess kurtosis of ln rho"}  # fmt: skip
