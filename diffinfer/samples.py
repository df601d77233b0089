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
    """

    theta: np.ndarray
    method: str
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.theta = np.asarray(self.theta, dtype=np.float64)
        if self.theta.ndim == 2:
            self.theta = self.theta[None]
        if self.theta.ndim != 3 or self.theta.shape[-1] != 2:
            raise InputError(f"theta must have shape (chains, draws, 2); got {self.theta.shape}")
        if self.theta.size == 0 or not np.isfinite(self.theta).all():
            raise InputError("samples must be a non-empty array of finite numbers (NaN or inf "
                             "found, or no draws)")  # fmt: skip

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
        """ArviZ InferenceData (0.x) / DataTree (1.x) with chains and sampler statistics."""
        import arviz as az

        posterior = {name: self.theta[..., j] for j, name in enumerate(PARAM_NAMES)}
        stats = {k: np.asarray(v) for k, v in self.stats.items()}
        if int(az.__version__.split(".")[0]) >= 1:
            groups = {"posterior": posterior}
            if stats:
                groups["sample_stats"] = stats
            return az.from_dict(groups)
        return az.from_dict(posterior=posterior, sample_stats=stats or None)

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
                )  # fmt: skip
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataFileError(f"cannot read samples from {path}: {exc}") from exc


def _weighted_quantiles(x: np.ndarray, q, w: np.ndarray | None) -> list[float]:
    if w is None:
        return [float(v) for v in np.quantile(x, q)]
    order = np.argsort(x)
    cdf = np.cumsum(w[order]) - 0.5 * w[order]
    return [float(v) for v in np.interp(q, cdf / w.sum(), x[order])]
