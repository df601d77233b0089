"""A cobaya external likelihood: the diffinfer posterior's likelihood of a map, to combine
with other probes in a cobaya run (the optional extra ``diffinfer[cobaya]``).

In a cobaya input (Python dict or YAML)::

    likelihood:
      diffinfer.cobaya.MapLikelihood:
        map: examples/lognormal64/map1.npy      # or a list of maps of one cosmology
        model: lognormal64
    params:
      Omega_m: {prior: {min: 0.1, max: 0.5}, ref: 0.3, proposal: 0.01, latex: \\Omega_{\\rm m}}
      sigma_8: {prior: {min: 0.6, max: 1.0}, ref: 0.8, proposal: 0.01, latex: \\sigma_8}

The likelihood is that of :func:`diffinfer.posterior` with the same options (``likelihood``,
``kind``, ``seed``, ``options``: its keyword options). With ``evaluate: grid`` (the default)
the posterior's grid is computed once, with its Monte Carlo error control, and each cobaya
point reads the tabulated log likelihood (interpolated; -inf outside the grid, which holds the
whole posterior of the map); ``evaluate: direct`` calls the likelihood afresh at each point
(the exact and power-spectrum likelihoods are cheap; a network's costs seconds per point and
carries the Monte Carlo error of its first timesteps).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from cobaya.likelihood import Likelihood

from diffinfer.errors import InputError

EVALUATE = ("grid", "direct")


class MapLikelihood(Likelihood):
    """log L(Omega_m, sigma_8 | map) from diffinfer, as a cobaya likelihood.

    Options (cobaya input): ``map`` (a .npy / .npz file or an array, or a list of the maps
    of one cosmology), ``model`` (default ``"lognormal64"``), ``likelihood`` (default
    ``"vlb"``; ``"exact"``, ``"power"``), ``kind``, ``seed``, ``evaluate`` (``"grid"`` or
    ``"direct"``) and ``options`` (a dict of :func:`diffinfer.posterior` options).
    """

    map: object = None
    model: object = "lognormal64"
    likelihood: object = "vlb"
    kind: str = "density"
    seed: int = 0
    evaluate: str = "grid"
    options: dict | None = None
    params = {"Omega_m": None, "sigma_8": None}  # noqa: RUF012 (cobaya's declaration)

    def initialize(self) -> None:
        """Build the posterior (and, with ``evaluate: grid``, its grid) once."""
        from diffinfer.inference.posterior import posterior

        if self.map is None:
            raise InputError("diffinfer.cobaya.MapLikelihood needs `map:` (a .npy file, an "
                             "array, or a list of the maps of one cosmology)")  # fmt: skip
        if self.evaluate not in EVALUATE:
            raise InputError(f"evaluate must be one of {EVALUATE}, got {self.evaluate!r}")
        model = None if self.model in (None, "none") else self.model
        self.posterior = posterior(self.map, model=model, likelihood=self.likelihood,
                                   seed=int(self.seed), kind=self.kind, progress=False,
                                   **(self.options or {}))  # fmt: skip
        self._grid = self.posterior.grid() if self.evaluate == "grid" else None

    def log_likelihood(self, theta: np.ndarray) -> float:
        """log L at one theta (2,) as the posterior uses it (tempered where it is); -inf
        outside the model's prior box (and, with ``evaluate: grid``, off the grid)."""
        post = self.posterior
        t = torch.as_tensor(np.asarray(theta, np.float64)[None])
        with torch.no_grad():
            log_prior = float(post.prior.log_prob(t)[0])
            if not math.isfinite(log_prior):
                return -math.inf
            if self._grid is None:
                return float(post.log_prob(t)[0]) - log_prior
        return float(self._grid.log_density_at(t.numpy())[0]) - log_prior

    def logp(self, **params_values) -> float:
        """cobaya's call: the log likelihood at the sampled Omega_m and sigma_8."""
        return self.log_likelihood(np.array([params_values["Omega_m"],
                                             params_values["sigma_8"]]))  # fmt: skip
