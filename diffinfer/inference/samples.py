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
from diffinfer.parameters import (
    DEFAULT_PRIOR,
    DERIVED_LABELS,
    DERIVED_NAMES,
    PARAM_LABELS,
    PARAM_NAMES,
    PriorBox,
    derived,
)

SUMMARY_LEVELS = (0.025, 0.16, 0.5, 0.84, 0.975)
SAVE_FORMATS = ("npz", "getdist")
LOG_LIKELIHOOD_VAR = "map"
"""Name of the observed variable in ArviZ's ``log_likelihood`` group, shape (chain, draw):
the log likelihood of the map, or the joint one of several maps of one cosmology."""


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
        Draws, shape (chains, draws, 2) (grid draws: independent, split into 4 chains so
        that ArviZ's R-hat and ESS apply).
    method
        The sampler (``grid``, ``emcee``, ``nuts``).
    stats
        Per-draw sampler statistics, each (chains, draws): ``lp`` (log posterior, up to a
        constant), ``log_likelihood`` (the log likelihood the posterior used, tempered where it
        is; the joint one for several maps), ``diverging``, ...
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
        self.weights = _check_weights(self.weights, self.theta.shape[:2])

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

    def derived(self, name: str) -> np.ndarray:
        """A parameter of the draws, (chains, draws): ``"Omega_m"``, ``"sigma_8"`` or a
        derived one (:data:`~diffinfer.parameters.DERIVED_NAMES`: ``"S_8"``)."""
        return derived(name, self.theta)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, std and the 2.5/16/50/84/97.5 % points of each parameter and of the derived
        ``S_8`` = sigma_8 (Omega_m / 0.3)^(1/2)."""
        w = None if self.weights is None else self.weights.reshape(-1)
        return {name: weighted_summary(derived(name, self.flat), w)
                for name in (*PARAM_NAMES, *DERIVED_NAMES)}  # fmt: skip

    def to_arviz(self):
        """ArviZ InferenceData (0.x) / DataTree (1.x) with chains and sampler statistics;
        the truth, if known, in ``posterior.attrs["truth"]``. Pass :func:`arviz_labeller`
        to ArviZ plots for the LaTeX parameter labels."""
        import arviz as az

        posterior = {name: self.derived(name) for name in (*PARAM_NAMES, *DERIVED_NAMES)}
        stats = {k: np.asarray(v) for k, v in self.stats.items() if k != "log_likelihood"}
        log_lik = ({LOG_LIKELIHOOD_VAR: np.asarray(self.stats["log_likelihood"])}
                   if "log_likelihood" in self.stats else None)  # fmt: skip
        attrs = {"sampler": self.method}
        prov = self.info.get("provenance")
        if prov:  # netCDF attributes must be flat: the provenance as one JSON string
            attrs["provenance"] = json.dumps(prov)
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
            if log_lik:
                groups["log_likelihood"] = log_lik
            data = az.from_dict(groups)
            data["posterior"].attrs.update(attrs)
            return data
        data = az.from_dict(posterior=posterior, sample_stats=stats or None,
                            log_likelihood=log_lik)  # fmt: skip
        data.posterior.attrs.update(attrs)
        return data

    def to_getdist(self, label: str | None = None):
        """GetDist MCSamples with names, LaTeX labels, the prior ranges (so that GetDist's
        kernel density estimates respect the prior's edges), weights, one chain per chain,
        and the derived ``S_8``."""
        from getdist import MCSamples

        box = self.box
        ranges = {n: (lo, hi) for n, lo, hi in zip(PARAM_NAMES, box.low, box.high, strict=True)}
        lp = self.stats.get("lp")
        with contextlib.redirect_stdout(io.StringIO()):  # GetDist reports burn-in on stdout
            mc = MCSamples(samples=list(self.theta),  # one array per chain
                           weights=None if self.weights is None else list(self.weights),
                           loglikes=None if lp is None else list(-np.asarray(lp, np.float64)),
                           names=list(PARAM_NAMES), labels=list(PARAM_LABELS), ranges=ranges,
                           label=label or self.info.get("label", self.method))  # fmt: skip
            for name in DERIVED_NAMES:
                mc.addDerived(derived(name, mc.samples), name=name, label=DERIVED_LABELS[name])
        return mc

    def save(self, path: str | os.PathLike, format: str = "npz") -> Path:
        """Write the draws, atomically.

        Parameters
        ----------
        path
            ``format="npz"``: the file (arrays, and the info as a JSON string; read back with
            :meth:`load`). ``format="getdist"``: the root of GetDist chain files
            (``root.txt``, or ``root_1.txt``, ... one per chain, with columns weight,
            -log posterior, Omega_m, sigma_8, S_8; ``root.paramnames`` with the LaTeX labels
            and S_8 marked derived; ``root.ranges`` with the prior box; ``root.json`` with the
            info), as ``getdist.loadMCSamples(root)`` and GetDist's GUI read them.
        format
            ``"npz"`` (default) or ``"getdist"``.

        Returns
        -------
        Path
            The file written (npz) or the root (getdist).
        """
        from diffinfer.validation import check_choice

        check_choice("format", format, SAVE_FORMATS)
        if format == "getdist":
            return self._save_getdist(Path(path))
        path = Path(path)
        arrays = {"theta": self.theta, "method": np.array(self.method),
                  "info": np.array(json.dumps(self.info))}  # fmt: skip
        arrays.update({f"stats_{k}": np.asarray(v) for k, v in self.stats.items()})
        if self.weights is not None:
            arrays["weights"] = self.weights
        if self.truth is not None:
            arrays["truth"] = _check_truth(self.truth)
        return write_npz_atomic(path, **arrays)

    def _save_getdist(self, root: Path) -> Path:
        from diffinfer.io import write_text_atomic

        if root.suffix == ".txt":
            root = root.with_suffix("")
        root.parent.mkdir(parents=True, exist_ok=True)
        chains, draws, _ = self.theta.shape
        weights = np.ones((chains, draws)) if self.weights is None else self.weights
        lp = self.stats.get("lp")
        minus_lp = np.zeros((chains, draws)) if lp is None else -np.asarray(lp, np.float64)
        names = (*PARAM_NAMES, *DERIVED_NAMES)
        for c in range(chains):
            cols = [weights[c], minus_lp[c], *(derived(n, self.theta[c]) for n in names)]
            table = np.column_stack(cols)
            buf = io.StringIO()
            np.savetxt(buf, table, fmt="%.10e")
            suffix = "" if chains == 1 else f"_{c + 1}"
            write_text_atomic(root.parent / f"{root.name}{suffix}.txt", buf.getvalue())
        labels = [*PARAM_LABELS, *(DERIVED_LABELS[n] for n in DERIVED_NAMES)]
        lines = [f"{n}{'*' if n in DERIVED_NAMES else ''}\t{lab}"
                 for n, lab in zip(names, labels, strict=True)]  # fmt: skip
        write_text_atomic(root.parent / f"{root.name}.paramnames", "\n".join(lines) + "\n")
        box = self.box
        ranges = [f"{n}\t{lo}\t{hi}" for n, lo, hi in zip(PARAM_NAMES, box.low, box.high,
                                                          strict=True)]  # fmt: skip
        write_text_atomic(root.parent / f"{root.name}.ranges", "\n".join(ranges) + "\n")
        info = {**self.info, "method": self.method}
        if self.truth is not None:
            info["truth"] = self.truth.tolist()
        write_text_atomic(root.parent / f"{root.name}.json", json.dumps(info, indent=1) + "\n")
        return root

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


def weighted_summary(x: np.ndarray, w: np.ndarray | None) -> dict[str, float]:
    """The summary entry (:func:`summary_entry`) of draws x (n,) with optional weights."""
    mean = float(np.average(x, weights=w))
    std = float(np.sqrt(np.average((x - mean) ** 2, weights=w)))
    return summary_entry(mean, std, _weighted_quantiles(x, SUMMARY_LEVELS, w))


def _check_weights(value, shape: tuple[int, int]) -> np.ndarray | None:
    """Importance weights as a (chains, draws) float array, or None; InputError naming the
    problem otherwise (wrong length, NaN/inf, negative, or all zero)."""
    if value is None:
        return None
    w = np.asarray(value, dtype=np.float64)
    if w.size != shape[0] * shape[1]:
        raise InputError(f"weights must hold one value per draw, {shape[0]} x {shape[1]} = "
                         f"{shape[0] * shape[1]}; got shape {w.shape}")  # fmt: skip
    if not np.isfinite(w).all():
        raise InputError("weights contain NaN or inf; give finite, non-negative weights")
    if (w < 0).any():
        raise InputError(f"weights must be non-negative; got a minimum of {w.min():g}")
    if not w.sum() > 0:
        raise InputError("weights are all zero; at least one draw needs a positive weight")
    return w.reshape(shape)


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
