"""Which terms of the variational bound a diffusion likelihood evaluates, with what weights,
and its defaults: the term set, the timesteps ``n_timesteps="auto"`` stands for, the
timestep proposal, the control variate and the batch of denoiser calls."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffinfer.diffusion.model import DiffusionModel
from diffinfer.errors import InputError

TERM_NAMES = ("l0", "vlb")


def term_weights(model: DiffusionModel) -> torch.Tensor:
    """w_t, t = 1 ... T (index t - 1): the factor of the summed squared epsilon error in L_{t-1}."""
    s = model.schedule
    beta, ab = s.betas.numpy(), s.alpha_bar.numpy()
    alpha = 1.0 - beta
    w = np.empty(s.n_steps)
    w[0] = 1.0 / (2.0 * alpha[1])  # L_0, decoder variance beta_1
    t = np.arange(2, s.n_steps + 1)
    w[1:] = beta[t] / (2.0 * alpha[t] * (1.0 - ab[t - 1]))
    return torch.as_tensor(w)


@dataclass(frozen=True)
class TermPlan:
    """Timesteps and weights of one likelihood: log L = -sum_k weight_k mean_m err_{k,m}."""

    timesteps: torch.Tensor  # (K,) int64 in 1 ... T
    weights: torch.Tensor  # (K,) float64
    description: str


def plan_terms(
    model: DiffusionModel,
    terms: str | list[int] | tuple[int, ...],
    *,
    n_timesteps: int | None = None,
    generator: torch.Generator | None = None,
    first: int = 1,
    proposal: np.ndarray | None = None,
    sample: bool = False,
) -> TermPlan:
    """Resolve a term specification into timesteps and weights.

    Parameters
    ----------
    terms
        ``"l0"``; ``"vlb"``; or a list of term indices i in 0 ... T - 1 (L_i, timestep i + 1).
    n_timesteps
        With ``"vlb"``: estimate the sum from this many timesteps, drawn by stratified
        (systematic) sampling from a proposal q(t) and weighted by w_t / (K q(t)), which is
        unbiased. Default: all T terms, exactly (also when ``n_timesteps`` reaches T, unless
        ``sample``).
    generator
        Source of the stratification offset.
    sample
        With ``"vlb"``: importance-sample ``n_timesteps`` even where they reach the number of
        terms (a round of :meth:`DiffusionLikelihood.add_timesteps`).
    first
        The lowest timestep available (above the noise level of a noisy map); ``"l0"`` then
        means the single term at that timestep and ``"vlb"`` the terms from it to T.
    proposal
        q(t) for t = 1 ... T (T non-negative numbers, normalised here), e.g. the one fitted
        per model where the likelihood's theta-information lies
        (:func:`diffinfer.likelihoods.proposal.fit_timestep_proposal`, stored in the model card).
        Default:
        q(t) proportional to w_t alpha_bar_t (the term size for a unit white-noise map).
    """
    T = model.schedule.n_steps
    w = term_weights(model)
    if isinstance(terms, str):
        if terms == "l0":
            name = "L_0" if first == 1 else f"first term above the noise (t = {first})"
            return TermPlan(torch.tensor([first]), w[first - 1 : first].clone(), name)
        if terms != "vlb":
            raise InputError(
                f"unknown likelihood terms {terms!r}: use 'l0', 'vlb' or a list of term "
                f"indices in 0 ... {T - 1}"
            )
        n_terms = T - first + 1
        if n_timesteps is None or (n_timesteps >= n_terms and not sample):
            return TermPlan(
                torch.arange(first, T + 1), w[first - 1 :].clone(), f"full VLB, {n_terms} terms"
            )
        if int(n_timesteps) != n_timesteps or n_timesteps < 1:
            raise InputError(f"n_timesteps must be a positive integer, got {n_timesteps}")
        if proposal is None:
            q = (w * model.schedule.alpha_bar[1:]).numpy()
        else:
            q = np.array(proposal, dtype=float)
            if q.shape != (T,) or not np.all(np.isfinite(q)) or np.any(q < 0):
                raise InputError(f"a timestep proposal needs {T} finite non-negative numbers, "
                                 f"got shape {q.shape}")  # fmt: skip
        q[: first - 1] = 0.0
        if q.sum() <= 0:
            raise InputError("the timestep proposal puts no mass on the available timesteps")
        q = q / q.sum()
        u0 = torch.rand((), generator=generator, dtype=torch.float64).item()
        cdf = np.cumsum(q)
        u = (u0 + np.arange(n_timesteps)) / n_timesteps
        idx = np.minimum(np.searchsorted(cdf, u, side="right"), T - 1)
        weights = w.numpy()[idx] / (n_timesteps * q[idx])
        name = f"full VLB, importance-sampled from {n_timesteps} timesteps"
        return TermPlan(
            torch.as_tensor(idx + 1),
            torch.as_tensor(weights),
            name if proposal is None else name + " (fitted proposal)",
        )
    try:
        idx = [int(i) for i in terms]
    except (TypeError, ValueError) as exc:
        raise InputError(f"terms must be 'l0', 'vlb' or a list of integers, got {terms!r}") from exc
    if not idx or len(set(idx)) != len(idx) or min(idx) < first - 1 or max(idx) >= T:
        raise InputError(
            f"term indices must be distinct integers in {first - 1} ... {T - 1} (term i is "
            f"L_i at timestep i + 1"
            + (f"; a map with this noise level starts at term {first - 1}" if first > 1 else "")
            + f"); got {terms!r}"
        )
    t = torch.as_tensor(idx) + 1
    return TermPlan(t, w[t - 1].clone(), f"terms {sorted(idx)}")


def default_max_batch(model: DiffusionModel) -> int:
    """Denoiser calls per chunk: 256 for the oracle; for a network, 16 on a CPU (measured
    fastest on 2 cores: docs/performance.md) and, on a GPU, as many 64^2-equivalent maps as
    a quarter of its free memory holds (at about 2 MB of activations each), at most 8192."""
    if model.is_oracle:
        return 256
    device = model.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        per_map = 2e6 * (model.field.n_pix / 64) ** 2
        return int(max(16, min(8192, free / 4 / per_map)))
    return 16


def control_variate_applies(model: DiffusionModel, terms: object, noise_sigma: object) -> bool:
    """Whether :class:`DiffusionLikelihood` can use its Wiener-filter control variate: the
    full bound (``terms="vlb"``) of a noiseless map under a network with a spectral branch."""
    return (terms == "vlb" and not noise_sigma
            and getattr(model.denoiser, "spectral", None) is not None)  # fmt: skip


DEFAULT_TERMS = "vlb"
"""The default term set of every diffusion likelihood (:class:`DiffusionLikelihood`,
:func:`diffinfer.posterior`, :class:`~diffinfer.likelihoods.distributions.DiffusionField`): the full
variational bound. ``"l0"`` alone cannot tell cosmologies apart (docs/likelihood.md)."""


DEFAULT_CV_TIMESTEPS = 8
"""Timesteps of the default ``terms="vlb"`` where the Wiener-filter control variate
applies (:func:`control_variate_applies`): only the U-Net's share of each term is sampled,
and 8 timesteps move the posterior mean between likelihood seeds by 0.09 / 0.08 sigma, as 16
do (network ``lognormal64``, 8 maps x 3 seeds; docs/posterior.md)."""


DEFAULT_VLB_TIMESTEPS = 16
"""Importance-sampled timesteps of the default ``terms="vlb"`` where the control variate
does not apply (noisy maps, the oracle, networks without a spectral branch). With the
model's fitted timestep proposal, 16 timesteps move the posterior mean between likelihood
seeds as much as the former 64 under the default proposal (0.47-0.51 sigma against
0.51-0.53 sigma, oracle, 24 maps; docs/posterior.md, ``scripts/mc_shift.py``)."""


def default_timesteps(model: DiffusionModel, terms: object, noise_sigma: object,
                      control_variate: object = "auto") -> int | None:  # fmt: skip
    """The timesteps ``n_timesteps="auto"`` stands for: :data:`DEFAULT_CV_TIMESTEPS` for the
    full bound with its control variate, :data:`DEFAULT_VLB_TIMESTEPS` for the full bound
    without, and None (every term of the set) for ``"l0"`` and term lists."""
    if terms != "vlb":
        return None
    cv = control_variate is not False and control_variate_applies(model, terms, noise_sigma)
    return DEFAULT_CV_TIMESTEPS if cv else DEFAULT_VLB_TIMESTEPS


def timestep_proposal(model: DiffusionModel, proposal: str | np.ndarray) -> np.ndarray | None:
    """The timestep proposal named by ``proposal`` ("card", "default" or an array)."""
    if isinstance(proposal, str):
        if proposal not in ("card", "default"):
            raise InputError(f"proposal must be 'card', 'default' or an array of "
                             f"{model.schedule.n_steps} numbers, got {proposal!r}")  # fmt: skip
        if proposal == "default":
            return None
        entry = (model.card.get("likelihood") or {}).get("timestep_proposal")
        return None if entry is None else np.asarray(entry["q"], dtype=float)
    return np.asarray(proposal, dtype=float)
