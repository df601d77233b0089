"""The temperature of a likelihood: the tau of L^(1/tau) that makes a model's posteriors
calibrated, fitted on a study's results and stored in the model card."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from diffinfer.errors import DataFileError, InputError
from diffinfer.validation import check_float


def squared_distances(results: list[dict], untempered: bool = False) -> np.ndarray:
    """The squared Mahalanobis distance d^2 = (mean - truth)^T C^-1 (mean - truth) of each
    map's truth under the Gaussian with its posterior mean and covariance C.

    With ``untempered``, a result computed at temperature t contributes t d^2: the distance
    under the untempered likelihood's posterior (:func:`fit_temperature`).

    Raises
    ------
    InputError
        A result that is incomplete, not finite, of another dimension, or whose covariance
        is singular (a zero-width posterior); the message names the map.
    """
    d2, dim = [], None
    for k, r in enumerate(results):
        name = _map_name(r, k)
        if not isinstance(r, dict):
            raise InputError(f"{name}: a result must be a dict, got {type(r).__name__}")
        missing = [key for key in ("mean", "truth", "cov") if key not in r]
        if missing:
            raise InputError(f"{name}: the result lacks {missing}")
        try:
            mean, truth, cov = (np.asarray(r[key], dtype=float) for key in ("mean", "truth", "cov"))
            used = float(r.get("temperature", 1.0))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: mean, truth, cov and temperature must be numbers "
                             f"({exc})") from exc  # fmt: skip
        dim = truth.size if dim is None else dim
        if truth.shape != (dim,) or mean.shape != (dim,) or cov.shape != (dim, dim):
            raise InputError(f"{name}: expected a mean and truth of {dim} parameters and a "
                             f"{dim} x {dim} covariance; got shapes {mean.shape}, "
                             f"{truth.shape}, {cov.shape}")  # fmt: skip
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(truth))
                and np.all(np.isfinite(cov))):  # fmt: skip
            raise InputError(f"{name}: the posterior mean, truth or covariance is not finite")
        check_float(f"{name}: temperature", used, low=0, low_open=True)
        eig = np.linalg.eigvalsh(0.5 * (cov + cov.T))
        if eig.max() <= 0 or eig.min() <= 1e-12 * eig.max():
            raise InputError(
                f"{name}: the posterior covariance is singular (eigenvalues "
                f"{np.array2string(eig, precision=3)}; a zero-width posterior, e.g. all its "
                "mass in one grid cell); delete that result and rerun the study with a finer "
                "grid, or leave the map out"
            )
        diff = mean - truth
        # a posterior computed at temperature t has covariance t C: t d^2 undoes it
        d2.append((used if untempered else 1.0) * float(diff @ np.linalg.solve(cov, diff)))
    return np.asarray(d2)


def fit_temperature(results: list[dict], estimator: str = "mean") -> dict:
    """The likelihood temperature that makes Gaussian-approximated posteriors calibrated.

    Tempering the likelihood by tau scales a Gaussian posterior's covariance by tau, so the
    squared Mahalanobis distance of the truth d^2 = (mean - truth)^T C^-1 (mean - truth)
    becomes d^2 / tau, which for a calibrated Gaussian posterior follows chi^2 with D (the
    number of parameters) degrees of freedom. Results computed at a temperature t enter as
    t d^2, so tau is always relative to the untempered likelihood.

    Parameters
    ----------
    results
        Per-map results of a study (``mean``, ``truth``, ``cov``, optionally
        ``temperature``).
    estimator
        ``"mean"``: tau = mean(d^2) / D (the maximum-likelihood estimate when every map
        needs the same tau), its standard error from the spread of d^2. ``"median"``: tau =
        median(d^2) / median(chi^2_D), its standard error the asymptotic one of a sample
        median under that model; robust to a few maps whose posterior is far from the truth
        (a single such map can dominate the mean of d^2), and it calibrates the central
        credible regions.

    Returns
    -------
    dict
        ``temperature``, ``se``, ``n_maps``, ``estimator``.

    Raises
    ------
    InputError
        Fewer than 5 results, or a result that is incomplete, not finite, of another
        dimension, or whose covariance is singular (a zero-width posterior); the message
        names the map.
    """
    if not isinstance(results, (list, tuple)):
        raise InputError(f"results must be a list of result dicts, got {type(results).__name__}")
    if len(results) < 5:
        raise InputError(f"fitting a temperature needs at least 5 maps, got {len(results)}")
    if estimator not in ("mean", "median"):
        raise InputError(f"estimator must be 'mean' or 'median', got {estimator!r}")
    d2 = squared_distances(results, untempered=True)
    dim = np.asarray(results[0]["truth"]).size
    if estimator == "median":
        from scipy import stats

        q = float(stats.chi2.median(dim))
        tau = float(np.median(d2) / q)
        # sd of a sample median: sqrt(1/4 / n) / f(median), f the density of tau chi^2_D
        se = tau * math.sqrt(0.25 / len(d2)) / (q * float(stats.chi2.pdf(q, dim)))
        return {"temperature": tau, "se": float(se), "n_maps": len(d2), "estimator": estimator}
    return {"temperature": float(d2.mean() / dim),
            "se": float(d2.std(ddof=1) / dim / math.sqrt(len(d2))), "n_maps": len(d2),
            "estimator": estimator}  # fmt: skip


def _map_name(result: object, position: int) -> str:
    index = result.get("index") if isinstance(result, dict) else None
    if index is None:
        return f"result {position}"
    return f"map {int(index):05d} (results/.../{int(index):05d}.npz)"


def store_temperature(model_dir: str | os.PathLike, fit: dict, likelihood: str, n_noise: int,
                      noise_sigma: float = 0.0, report: dict | None = None) -> Path:  # fmt: skip
    """Record a fitted temperature in a model card (``calibration``, a list with one entry
    per term set), atomically; the posterior then applies it to this term set by default.

    Raises
    ------
    InputError
        The oracle (it has no card), or a fit that is not a positive temperature.
    DataFileError
        ``model_dir`` is not a model directory with a complete card and weights entry.
    """
    from diffinfer.store import read_card, resolve_model_dir, update_card

    if str(model_dir) == "oracle":
        raise InputError("the oracle has no model card to store a temperature in")
    check_float("temperature", fit.get("temperature"), low=0, low_open=True)
    card = read_card(resolve_model_dir(model_dir))
    entry = {
        "temperature": float(fit["temperature"]),
        "se": float(fit["se"]),
        "n_maps": int(fit["n_maps"]),
        "estimator": str(fit.get("estimator", "mean")),
        "likelihood": likelihood,
        "n_noise": int(n_noise),
        "noise_sigma": float(noise_sigma),
        **({"report": report} if report else {}),
    }
    # one entry per (term set, noise draws, noise level); other term sets keep theirs
    old = card.get("calibration") or []
    old = [old] if isinstance(old, dict) else list(old)
    key = (likelihood, n_noise, float(noise_sigma))
    kept = [e for e in old if (e.get("likelihood"), e.get("n_noise"),
                                float(e.get("noise_sigma") or 0.0)) != key]  # fmt: skip
    return update_card(model_dir, {"calibration": [*kept, entry]})


def card_temperature(card: dict, description: str, n_noise: int,
                     noise_sigma: float = 0.0) -> float | None:  # fmt: skip
    """The likelihood temperature a model card records for this term set (its description),
    noise draws and pixel noise (:func:`store_temperature`), or None."""
    entries = card.get("calibration") or []
    for entry in [entries] if isinstance(entries, dict) else entries:
        if (
            entry.get("likelihood") == description
            and entry.get("n_noise") == n_noise
            and float(entry.get("noise_sigma", 0.0)) == float(noise_sigma or 0.0)
        ):
            return float(entry["temperature"])
    return None


def check_same_model(
    named: str | os.PathLike, study_model: object, study: str | os.PathLike
) -> str:
    """Check that the model a user names is the one a study ran with; returns its name.

    Names and directories are compared as the directories they resolve to, so
    ``lognormal64`` and the path of the shipped ``lognormal64`` are the same model.

    Raises
    ------
    DataFileError
        ``named`` is not a model name or directory.
    InputError
        The study ran with another model (or names one that does not exist here).
    """
    from diffinfer.store import resolve_model_dir

    named = os.fspath(named)
    mismatch = InputError(
        f"{study} was computed with model {study_model!r}, not {named!r}: a temperature "
        "fitted on one model's posteriors does not apply to another; name the study's model"
    )
    if named == "oracle" or study_model == "oracle":
        if named != study_model:
            raise mismatch
        return named
    mine = resolve_model_dir(named).resolve()
    if not isinstance(study_model, str) or not study_model:
        raise mismatch
    try:
        theirs = resolve_model_dir(study_model).resolve()
    except DataFileError:
        raise mismatch from None
    if mine != theirs:
        raise mismatch
    return named
