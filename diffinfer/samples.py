"""Posterior samples with their provenance, and conversions to ArviZ and GetDist."""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffinfer.errors import DataFileError, InputError
from diffinfer.io import write_npz_atomic
from diffinfer.parameters import DEFAULT_PRIOR, PARAM_LABELS, PARAM_NAMES, PriorBox

SUMMARY_LEVELS = (0.025, 0.16, 0.5, 0.84, 0.975)


def summary_entry(mean: float, std: float, quantiles) -> dict[str, float]:
    """One parameter's summary: mean, std and the quantiles at :data:`SUMMARY_LEVELS`."""
    q = [float(v) for v in quantiles]
    return {"mean": float(mean), "std": float(std), "q2.5": q[0], "q16": q[1], "median": q[2],
            "q84": q[3], "q97.5": q[4]}  # fmt: skip


def add_mcse(summary: dict[str, dict[str, float]], mc_error: dict | None) -> dict:
    """Add the likelihood's Monte Carlo standard errors to a summary, in parameter units, as
    ArviZ names them: ``mcse_mean`` (of the mean) and ``mcse_sd`` (of the std); nothing
    where the error is unknown (None)."""
    if mc_error is None:
        return summary
    for j, name in enumerate(PARAM_NAMES):
        sd = summary[name]["std"]
        summary[name]["mcse_mean"] = float(mc_error["mean"][j] * sd)
        summary[name]["mcse_sd"] = float(mc_error["sd"][j] * sd)
    return summary


@dataclass
class Samples:
    """Draws of theta = (Omega_m, sigma_8) from a posterior.

    Attributes
    ----------
    theta
        Draws, shape (chains, draws, 2) (grid draws: one chain).
    method
        The sampler (``grid``, ``emcee``, ``nuts``).
    stats
        Per-draw sampler statistics, each (chains, draws): ``lp`` (log posterior),
        ``diverging``, ``acceptance_rate``, ...
    info
        JSON-ready provenance: likelihood, prior box, evaluations, diagnostics, truth if known.
    weights
        Optional importance weights (chains, draws).
    truth
        The true theta (2,) of a simulated map, if known: saved with the draws, marked in
        :meth:`triangle` plots and carried into ArviZ (``posterior.attrs["truth"]``).
    """

    theta: np.ndarray
    method: str
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    weights: np.ndarray | None = None
    truth: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.theta = np.asarray(self.theta, dtype=np.float64)
        if self.theta.ndim == 2:
            self.theta = self.theta[None]
        if self.theta.ndim != 3 or self.theta.shape[-1] != 2:
            raise InputError(f"theta must have shape (chains, draws, 2); got {self.theta.shape}")
        if self.theta.size == 0 or not np.isfinite(self.theta).all():
            raise InputError("samples must be a non-empty array of finite numbers (NaN or inf "
                             "found, or no draws)")  # fmt: skip
        self.truth = _check_truth(self.truth)

    def __repr__(self) -> str:
        chains, draws, _ = self.theta.shape
        truth = "" if self.truth is None else f", truth={self.truth.tolist()}"
        return f"Samples(method={self.method!r}, chains={chains}, draws={draws}{truth})"

    def __len__(self) -> int:
        """Number of draws over all chains."""
        return int(self.theta.shape[0] * self.theta.shape[1])

    @property
    def flat(self) -> np.ndarray:
        """All draws, (chains * draws, 2)."""
        return self.theta.reshape(-1, 2)

    @property
    def box(self) -> PriorBox:
        """The prior box recorded in ``info`` (default box otherwise)."""
        return (
            PriorBox.from_dict(self.info["prior_box"])
            if "prior_box" in self.info
            else (DEFAULT_PRIOR)
        )

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, std and the 2.5/16/50/84/97.5 % points of each parameter."""
        w = None if self.weights is None else self.weights.reshape(-1)
        out = {}
        for j, name in enumerate(PARAM_NAMES):
            x = self.flat[:, j]
            mean = float(np.average(x, weights=w))
            std = float(np.sqrt(np.average((x - mean) ** 2, weights=w)))
            out[name] = summary_entry(mean, std, _weighted_quantiles(x, SUMMARY_LEVELS, w))
        return out

    def to_arviz(self):
        """ArviZ InferenceData (0.x) / DataTree (1.x) with chains and sampler statistics;
        the truth, if known, in ``posterior.attrs["truth"]``. Pass :func:`arviz_labeller`
        to ArviZ plots for the LaTeX parameter labels."""
        import arviz as az

        posterior = {name: self.theta[..., j] for j, name in enumerate(PARAM_NAMES)}
        stats = {k: np.asarray(v) for k, v in self.stats.items()}
        attrs = {"sampler": self.method}
        mc = (self.info.get("diagnostics") or {}).get("mc_error")
        if mc is not None:  # the likelihood's Monte Carlo error, in posterior sd
            attrs["likelihood_mcse_mean_in_sd"] = [float(v) for v in mc["mean"]]
            attrs["likelihood_mcse_sd_relative"] = [float(v) for v in mc["sd"]]
        if self.truth is not None:
            attrs["truth"] = [float(v) for v in self.truth]
        if int(az.__version__.split(".")[0]) >= 1:
            groups = {"posterior": posterior}
            if stats:
                groups["sample_stats"] = stats
            data = az.from_dict(groups)
            data["posterior"].attrs.update(attrs)
            return data
        data = az.from_dict(posterior=posterior, sample_stats=stats or None)
        data.posterior.attrs.update(attrs)
        return data

    def to_getdist(self, label: str | None = None):
        """GetDist MCSamples with names, LaTeX labels, the prior ranges and weights."""
        from getdist import MCSamples

        box = self.box
        ranges = {n: (lo, hi) for n, lo, hi in zip(PARAM_NAMES, box.low, box.high, strict=True)}
        weights = None if self.weights is None else self.weights.reshape(-1)
        with contextlib.redirect_stdout(io.StringIO()):  # GetDist reports burn-in on stdout
            return MCSamples(samples=self.flat, weights=weights, names=list(PARAM_NAMES),
                             labels=list(PARAM_LABELS), ranges=ranges,
                             label=label or self.info.get("label", self.method))  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``.npz`` (arrays, and the info as a JSON string), atomically."""
        path = Path(path)
        arrays = {"theta": self.theta, "method": np.array(self.method),
                  "info": np.array(json.dumps(self.info))}  # fmt: skip
        arrays.update({f"stats_{k}": np.asarray(v) for k, v in self.stats.items()})
        if self.weights is not None:
            arrays["weights"] = self.weights
        if self.truth is not None:
            arrays["truth"] = _check_truth(self.truth)
        return write_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Samples:
        """Read samples written by :meth:`save` (no pickles)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                stats = {k[6:]: f[k] for k in f.files if k.startswith("stats_")}
                return cls(
                    theta=f["theta"], method=str(f["method"]), stats=stats,
                    info=json.loads(str(f["info"])),
                    weights=f["weights"] if "weights" in f.files else None,
                    truth=f["truth"] if "truth" in f.files else None,
                )  # fmt: skip
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataFileError(f"cannot read samples from {path}: {exc}") from exc


def _check_truth(value) -> np.ndarray | None:
    """The truth as a (2,) float array, or None; InputError otherwise."""
    if value is None:
        return None
    out = np.asarray(value, dtype=np.float64).reshape(-1)
    if out.shape != (2,) or not np.isfinite(out).all():
        raise InputError(f"truth must be two finite numbers (Omega_m, sigma_8), got "
                         f"{out.tolist()}")  # fmt: skip
    return out


def arviz_labeller():
    """An ArviZ labeller that writes the parameters as LaTeX (Omega_m -> $\\Omega_m$), for
    ``az.plot_trace(samples.to_arviz(), labeller=arviz_labeller())`` and the other plots.

    Works with ArviZ 0.x (``arviz.labels``) and 1.x (``arviz_base.labels``).
    """
    try:
        from arviz_base.labels import MapLabeller
    except ImportError:
        from arviz.labels import MapLabeller
    names = {name: f"${label}$" for name, label in zip(PARAM_NAMES, PARAM_LABELS, strict=True)}
    return MapLabeller(var_name_map=names)


def _weighted_quantiles(x: np.ndarray, q, w: np.ndarray | None) -> list[float]:
    if w is None:
        return [float(v) for v in np.quantile(x, q)]
    order = np.argsort(x)
    cdf = np.cumsum(w[order]) - 0.5 * w[order]
    return [float(v) for v in np.interp(q, cdf / w.sum(), x[order])]
