"""Calibration metrics over many (true theta, posterior) pairs.

Every metric here takes the true parameters of M test maps and, for each map, either
independent posterior draws (M, L, D) or quantities computed from a tabulated posterior (the
credibility level of the truth). Under a calibrated posterior:

- the rank of each true parameter among the draws is uniform on {0, ..., L}
  (simulation-based calibration, Talts et al. 2018);
- the credibility level of the smallest highest-posterior-density region containing the truth
  is uniform on [0, 1], so the fraction of maps whose truth lies inside the alpha-HPD region
  (the expected coverage) equals alpha at every alpha;
- the TARP statistic (Lemos et al. 2023: the posterior mass closer to a random reference point
  than the truth) is uniform on [0, 1];
- z = (posterior mean - truth) / posterior std has mean 0 and standard deviation 1 when the
  posterior is close to Gaussian.

Each of these is an empirical distribution of M numbers that should be uniform, so one
simultaneous band (:func:`ecdf_band`, Säilynoja et al. 2022) judges all of them.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from diffinfer.errors import InputError


def _draws_and_truths(draws, truths) -> tuple[np.ndarray, np.ndarray]:
    draws = np.asarray(draws, dtype=float)
    truths = np.asarray(truths, dtype=float)
    if draws.ndim != 3 or truths.ndim != 2 or draws.shape[0] != truths.shape[0]:
        raise InputError(
            "draws must have shape (maps, draws, params) and truths (maps, params); got "
            f"{draws.shape} and {truths.shape}"
        )
    if draws.shape[2] != truths.shape[1]:
        raise InputError(f"draws have {draws.shape[2]} parameters, truths {truths.shape[1]}")
    if not (np.all(np.isfinite(draws)) and np.all(np.isfinite(truths))):
        raise InputError("draws and truths must be finite")
    return draws, truths


# --------------------------------------------------------------------------- ranks (SBC)
def sbc_ranks(draws: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Rank of each true parameter among the posterior draws of its map.

    Parameters
    ----------
    draws
        Independent posterior draws, shape (M, L, D); thin MCMC chains first
        (:func:`thin_to_independent`).
    truths
        True parameters, shape (M, D).

    Returns
    -------
    numpy.ndarray
        Integer ranks in {0, ..., L}, shape (M, D): the number of draws below the truth.
    """
    draws, truths = _draws_and_truths(draws, truths)
    return np.sum(draws < truths[:, None, :], axis=1)


def normalised_ranks(ranks: np.ndarray, n_draws: int, seed: int = 0) -> np.ndarray:
    """Ranks mapped to [0, 1] with uniform jitter, (r + U) / (L + 1): exactly uniform on
    [0, 1] when the ranks are uniform on {0, ..., L}."""
    rng = np.random.default_rng(seed)
    ranks = np.asarray(ranks, float)
    return (ranks + rng.random(ranks.shape)) / (n_draws + 1)


def rank_uniformity(ranks: np.ndarray, n_draws: int, n_bins: int | None = None,
                    seed: int = 0) -> list[dict[str, float]]:  # fmt: skip
    """Uniformity tests of SBC ranks, per parameter.

    Returns, for each parameter, the Kolmogorov-Smirnov statistic and p-value of the jittered
    normalised ranks against U(0, 1), and the chi-square statistic and p-value of the rank
    histogram in ``n_bins`` equal bins (default: about M / 10, at most L + 1, at least 2).
    """
    ranks = np.asarray(ranks)
    m = ranks.shape[0]
    n_bins = n_bins or int(np.clip(m // 10, 2, n_draws + 1))
    u = normalised_ranks(ranks, n_draws, seed)
    out = []
    for j in range(ranks.shape[1]):
        ks = stats.kstest(u[:, j], "uniform")
        counts = np.histogram(u[:, j], bins=n_bins, range=(0, 1))[0]
        chi2 = stats.chisquare(counts)
        out.append({"ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
                    "chi2": float(chi2.statistic), "chi2_pvalue": float(chi2.pvalue),
                    "n_bins": n_bins})  # fmt: skip
    return out


def thin_to_independent(chain: np.ndarray, n: int) -> np.ndarray:
    """Draw about n nearly independent draws from MCMC chains (C, S, D).

    Chains are thinned by their integrated autocorrelation time (the largest over
    parameters, emcee's estimator; independent draws give tau close to 1), then at most n
    draws are taken evenly. Fewer than n come back when the chains are short against tau.
    """
    import emcee.autocorr

    chain = np.asarray(chain, float)
    if chain.ndim == 2:
        chain = chain[None]
    tau = 1.0
    if chain.shape[0] > 1 or chain.shape[1] > 50:
        walkers_first = np.swapaxes(chain, 0, 1)  # (S, C, D), emcee's layout
        tau = float(np.max(emcee.autocorr.integrated_time(walkers_first, tol=0)))
    thin = max(1, int(np.ceil(tau)))
    flat = chain[:, ::thin].reshape(-1, chain.shape[-1])
    if len(flat) > n:
        flat = flat[np.linspace(0, len(flat) - 1, n).round().astype(int)]
    return flat


# --------------------------------------------------------------------------- uniform ECDFs
def ecdf_band(n: int, *, alpha: float = 0.05, n_points: int = 101, n_sim: int = 2000,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Simultaneous 1 - alpha band for the ECDF of n uniform values (Säilynoja et al. 2022).

    The pointwise binomial band at level gamma is widened until, for ``n_sim`` simulated
    uniform samples, the whole ECDF lies inside it with probability 1 - alpha.

    Returns
    -------
    z, lower, upper
        Evaluation points on [0, 1] and the band's lower and upper ECDF values.
    """
    if n < 1:
        raise InputError("an ECDF band needs at least one value")
    rng = np.random.default_rng(seed)
    z = np.linspace(0, 1, n_points)
    u = np.sort(rng.random((n_sim, n)), axis=1)
    counts = np.stack([np.searchsorted(row, z, side="right") for row in u])  # (n_sim, P)
    lower_tail = stats.binom.cdf(counts, n, z)
    upper_tail = stats.binom.sf(counts - 1, n, z)
    pointwise = 2 * np.minimum(lower_tail, upper_tail)
    gamma = float(np.quantile(pointwise.min(axis=1), alpha))
    lower = stats.binom.ppf(gamma / 2, n, z) / n
    upper = stats.binom.ppf(1 - gamma / 2, n, z) / n
    return z, lower, upper


def ecdf(values: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Empirical CDF of ``values`` at the points ``z``."""
    v = np.sort(np.asarray(values, float).ravel())
    return np.searchsorted(v, z, side="right") / len(v)


def _inside(curve: np.ndarray, lower: np.ndarray, upper: np.ndarray, z: np.ndarray) -> bool:
    # at z = 0 and 1 the band has zero width and the ECDF carries no information (a value
    # of exactly 0, e.g. a truth in the densest cell, is not a miscalibration)
    interior = (z > 0) & (z < 1)
    c, lo, hi = curve[interior], lower[interior], upper[interior]
    return bool(np.all((c >= lo - 1e-12) & (c <= hi + 1e-12)))


def uniformity_check(values: np.ndarray, *, alpha: float = 0.05, seed: int = 0) -> dict:
    """The expected-coverage curve of values that are uniform under calibration.

    ``values`` are credibility levels (HPD coverage), TARP fractions or normalised ranks.
    The curve is their ECDF at levels z on [0, 1]; calibration puts it on the diagonal.

    Returns
    -------
    dict
        ``level`` (z), ``coverage`` (ECDF), ``band_lower``/``band_upper`` (simultaneous
        1 - alpha band), ``max_deviation`` (max |coverage - z|), ``signed_area``
        (integral of coverage - z: > 0 conservative, < 0 overconfident for credibility
        levels), ``inside_band`` (the whole curve lies in the band), ``inside_band_99``
        (in the 99 % band), ``ks_pvalue``.
    """
    values = np.asarray(values, float).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InputError("uniformity_check needs finite values")
    z, lo, hi = ecdf_band(len(values), alpha=alpha, seed=seed)
    _, lo99, hi99 = ecdf_band(len(values), alpha=0.01, seed=seed)
    cov = ecdf(values, z)
    d = cov - z
    return {
        "level": z.tolist(),
        "coverage": cov.tolist(),
        "band_lower": lo.tolist(),
        "band_upper": hi.tolist(),
        "max_deviation": float(np.max(np.abs(cov - z))),
        "signed_area": float(np.sum(0.5 * (d[1:] + d[:-1]) * np.diff(z))),
        "inside_band": _inside(cov, lo, hi, z),
        "inside_band_99": _inside(cov, lo99, hi99, z),
        "ks_pvalue": float(stats.kstest(values, "uniform").pvalue),
        "n": len(values),
    }


# --------------------------------------------------------------------------- HPD coverage
def hpd_credibility(draws: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Credibility level of the smallest HPD region containing the truth, from draws.

    The posterior density is a Gaussian kernel density estimate (Scott's bandwidth) of each
    map's draws; the level is the fraction of draws denser than the truth. For tabulated
    posteriors use :meth:`diffinfer.inference.grid.GridPosterior.credibility` (exact on the grid).

    Returns
    -------
    numpy.ndarray
        Levels in [0, 1], shape (M,).
    """
    draws, truths = _draws_and_truths(draws, truths)
    out = np.empty(len(truths))
    for i, (d, t) in enumerate(zip(draws, truths, strict=True)):
        kde = stats.gaussian_kde(d.T)
        out[i] = np.mean(kde(d.T) > kde(t[:, None])[0])
    return out


# --------------------------------------------------------------------------- TARP
def tarp_statistics(draws: np.ndarray, truths: np.ndarray, low: np.ndarray, high: np.ndarray,
                    seed: int = 0, jitter: bool = True) -> np.ndarray:  # fmt: skip
    """TARP's per-map statistic (Lemos et al. 2023).

    Parameters are scaled to the unit box [low, high]; each map gets one reference point
    uniform in that box; the statistic is the fraction of draws closer (Euclidean) to the
    reference than the truth is. Uniform on [0, 1] for a calibrated posterior, so
    :func:`uniformity_check` of these values is TARP's expected coverage curve. With
    ``jitter`` the count c of closer draws out of L becomes (c + U) / (L + 1), exactly
    uniform (as for ranks); without it, c / L as the ``tarp`` package computes it.
    """
    draws, truths = _draws_and_truths(draws, truths)
    low, high = np.asarray(low, float), np.asarray(high, float)
    d_unit = (draws - low) / (high - low)
    t_unit = (truths - low) / (high - low)
    rng = np.random.default_rng(seed)
    ref = rng.random(truths.shape)
    d_sample = np.linalg.norm(d_unit - ref[:, None, :], axis=-1)
    d_truth = np.linalg.norm(t_unit - ref, axis=-1)
    closer = np.sum(d_sample < d_truth[:, None], axis=1)
    if not jitter:
        return closer / draws.shape[1]
    return (closer + rng.random(len(closer))) / (draws.shape[1] + 1)


def tarp_bootstrap(values: np.ndarray, *, n_bootstrap: int = 200, seed: int = 0,
                   n_points: int = 101) -> dict:  # fmt: skip
    """Bootstrap (over maps) 16/84 % and 2.5/97.5 % bands of a TARP coverage curve."""
    values = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    z = np.linspace(0, 1, n_points)
    boots = np.stack([ecdf(values[rng.integers(0, len(values), len(values))], z)
                      for _ in range(n_bootstrap)])  # fmt: skip
    q = np.quantile(boots, [0.025, 0.16, 0.84, 0.975], axis=0)
    return {"level": z.tolist(), "q2.5": q[0].tolist(), "q16": q[1].tolist(),
            "q84": q[2].tolist(), "q97.5": q[3].tolist()}  # fmt: skip


# --------------------------------------------------------------------------- moments
def z_scores(mean: np.ndarray, std: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """(posterior mean - truth) / posterior std, shape (M, D)."""
    mean, std, truths = (np.asarray(a, float) for a in (mean, std, truths))
    if np.any(std <= 0):
        raise InputError("posterior standard deviations must be positive")
    return (mean - truths) / std


def z_score_summary(z: np.ndarray) -> list[dict[str, float]]:
    """Per parameter: mean and standard deviation of the z-scores with their standard errors
    (calibration: mean 0, std 1)."""
    z = np.asarray(z, float)
    m = z.shape[0]
    out = []
    for j in range(z.shape[1]):
        if m < 2:  # one map has no spread: NaN (written as null in a JSON report)
            nan = float("nan")
            out.append({"mean": float(np.mean(z[:, j])) if m else nan, "mean_se": nan,
                        "std": nan, "std_se": nan})  # fmt: skip
            continue
        s = float(np.std(z[:, j], ddof=1))
        out.append({"mean": float(np.mean(z[:, j])), "mean_se": s / np.sqrt(m),
                    "std": s, "std_se": s / np.sqrt(2 * (m - 1))})  # fmt: skip
    return out


def contraction(post_var: np.ndarray, prior_var: np.ndarray) -> np.ndarray:
    """Posterior contraction 1 - var_posterior / var_prior, shape (M, D)."""
    return 1.0 - np.asarray(post_var, float) / np.asarray(prior_var, float)


def z_by_mean_quartile(mean: np.ndarray, std: np.ndarray, truths: np.ndarray,
                       names: tuple[str, ...]) -> dict[str, list[dict]]:  # fmt: skip
    """Per parameter: the z-score mean (with its standard error) in each quartile of the
    posterior mean.

    A calibrated posterior has E[theta | map] equal to its mean, so the mean z-score is 0
    given the posterior mean (unlike given the truth, where means shrink towards the
    prior's centre). Positive in the lowest quartile and negative in the highest: posterior
    means that lean towards the centre, a bias of location that TARP sees and the HPD curve
    does not.
    """
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    z = z_scores(mean, std, truths)
    out = {}
    for j, name in enumerate(names):
        groups = [g for g in np.array_split(np.argsort(mean[:, j], kind="stable"), 4) if len(g)]
        out[name] = [{"posterior_mean": [float(mean[g[0], j]), float(mean[g[-1], j])],
                      "n_maps": len(g), "z_mean": float(z[g, j].mean()),
                      "z_mean_se": (float(z[g, j].std(ddof=1) / np.sqrt(len(g)))
                                    if len(g) > 1 else float("nan"))}
                     for g in groups]  # fmt: skip
    return out
