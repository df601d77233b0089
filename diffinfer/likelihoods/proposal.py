"""A timestep proposal fitted per model where the likelihood's theta-information lies.

The VLB likelihood is estimated from K timesteps drawn from a proposal q(t) and weighted by
w_t / (K q(t)). What a posterior needs is not log L itself but its differences across the
posterior, so the proposal that minimises their Monte Carlo variance is

    q*(t) proportional to rms_maps,directions( D_t ),

with D_t the change of term t's contribution between the posterior centre and one standard
deviation away along each principal axis. :func:`fit_timestep_proposal` measures D_t for every
t = 1 ... T on pilot maps (the model's own posterior locates the centre and axes, so it needs
no oracle and no truth), smooths rms(D_t) over neighbouring timesteps, and mixes in the
default proposal as a floor (defensive importance sampling: no timestep's weight can blow
up). The result goes into the model card (``card["likelihood"]["timestep_proposal"]``),
where :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood` finds it.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from diffinfer.diffusion.model import DiffusionModel
from diffinfer.errors import InputError
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.likelihoods.terms import term_weights
from diffinfer.validation import check_float, check_int


def default_proposal(model: DiffusionModel) -> np.ndarray:
    """q(t) proportional to w_t alpha_bar_t, t = 1 ... T (the term size for a unit white-noise
    map): the proposal without a pilot."""
    q = (term_weights(model) * model.schedule.alpha_bar[1:]).numpy()
    return q / q.sum()


def term_differences(
    model: DiffusionModel,
    field: np.ndarray,
    *,
    seed: int = 0,
    precision: str = "auto",
    locate_timesteps: int = 64,
) -> np.ndarray:
    """D_t of one map: (2, T) changes of every term's contribution to log L between the
    located posterior centre and one standard deviation along each principal axis.

    The posterior is located (:meth:`DiffusionLikelihood.locate`) with a ``locate_timesteps``
    estimate under the default proposal; the terms are then evaluated exactly (one noise draw
    per timestep, all T timesteps, common to the three points). The terms are the plain ones
    (no control variate): the proposal serves every estimator, and the control variate's
    sampled share is already below the noise floor with it (docs/posterior.md).
    """
    pilot = DiffusionLikelihood(model, field, terms="vlb", n_timesteps=locate_timesteps,
                                seed=seed, precision=precision, proposal="default",
                                control_variate=False)  # fmt: skip
    loc = pilot.locate()
    evals, vecs = np.linalg.eigh(loc.cov)
    centre = np.clip(loc.theta, model.field.prior.low, model.field.prior.high)
    points = [centre] + [centre + np.sqrt(evals[i]) * vecs[:, i] for i in range(2)]
    # keep the steps inside the prior box (step the other way if needed)
    for i in (1, 2):
        if not bool(model.field.prior.contains(points[i])):
            points[i] = 2 * centre - points[i]
    full = DiffusionLikelihood(model, field, terms="vlb", n_timesteps=None,
                               seed=seed + 10_000,
                               precision=precision, control_variate=False)  # fmt: skip
    with torch.no_grad():
        terms = full.term_log_l(torch.as_tensor(np.array(points))).numpy()  # (3, T)
    return terms[1:] - terms[:1]


def check_proposal_options(*, smooth: float, floor: float, seed: int) -> None:
    """Validate the options of :func:`fit_timestep_proposal` (the CLI checks them before it
    simulates pilot maps)."""
    check_float("smooth", smooth, low=0, what="timesteps")
    check_float("floor", floor, low=0, high=1, low_open=True, what="weight of the default proposal")
    check_int("seed", seed, low=0)


def fit_timestep_proposal(
    model: DiffusionModel,
    fields: list[np.ndarray] | np.ndarray,
    *,
    seed: int = 0,
    smooth: float = 10.0,
    floor: float = 0.1,
    precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Fit q(t) on pilot maps (module docstring).

    Parameters
    ----------
    model
        The diffusion model (a network or the oracle).
    fields
        Pilot density maps, e.g. from the calibration split; never the maps a study tests.
    seed
        Seeds the likelihood noise of map i with ``seed + i``.
    smooth
        Width (in timesteps) of the Gaussian kernel that smooths mean D_t^2 over t.
    floor
        Weight of the default proposal in the mixture (1 - floor) q* + floor q_default.
    precision
        Network precision.
    progress
        Show a progress bar over maps.

    Returns
    -------
    dict
        ``{"q": [...T numbers...], "n_maps": ..., "smooth": ..., "floor": ...,
        "variance_ratio": ...}``, ready for the model card. ``variance_ratio`` is the
        Monte Carlo variance per sample of the pilot differences under the fitted proposal
        over that under the default one, measured on the pilot maps themselves (in-sample).
    """
    check_proposal_options(smooth=smooth, floor=floor, seed=seed)
    fields = list(fields)
    if len(fields) < 2:
        raise InputError(f"fit a proposal on at least 2 pilot maps, got {len(fields)}")
    bar = tqdm(fields, desc="pilot maps", disable=not progress)
    diffs = [term_differences(model, f, seed=seed + i, precision=precision)
             for i, f in enumerate(bar)]  # fmt: skip
    d = np.concatenate(diffs)  # (2 M, T)
    ms = np.mean(d**2, axis=0)
    if smooth > 0:
        t = np.arange(len(ms))
        kernel = np.exp(-0.5 * ((t[:, None] - t[None, :]) / smooth) ** 2)
        ms = kernel @ ms / kernel.sum(axis=1)
    q_star = np.sqrt(ms)
    q_star /= q_star.sum()
    q0 = default_proposal(model)
    q = (1 - floor) * q_star + floor * q0

    def variance(p: np.ndarray) -> float:
        return float(np.mean([np.sum(x**2 / p) - x.sum() ** 2 for x in d]))

    return {
        "q": [float(f"{v:.5g}") for v in q],
        "n_maps": len(fields),
        "smooth": smooth,
        "floor": floor,
        "variance_ratio": variance(q) / variance(q0),
    }


def proposal_quantiles(q: np.ndarray, levels=(0.05, 0.25, 0.5, 0.75, 0.95)) -> list[int]:
    """The timesteps below which the given fractions of a proposal's mass lie."""
    cdf = np.cumsum(np.asarray(q, float) / np.sum(q))
    return [int(np.searchsorted(cdf, p)) + 1 for p in levels]
