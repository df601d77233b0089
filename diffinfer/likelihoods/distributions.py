"""Pyro distributions over density maps: the diffusion likelihood and the exact reference.

Use them inside Pyro models, e.g. several maps sharing theta::

    def model(maps):
        theta = pyro.sample("theta", prior)
        with pyro.plate("maps", len(maps)):
            pyro.sample("field", DiffusionField(theta, diffusion_model), obs=maps)

``DiffusionField.log_prob`` is the diffusion likelihood (:class:`DiffusionLikelihood`; up to a
theta-independent constant) and ``sample`` emulates maps; ``ExactLognormalField`` offers the
same interface with the exact log-normal likelihood (a normalised density of the map in its
data units) and the simulator. Both take maps in the data units of the model card (density)
and an optional Gaussian pixel-noise level in model space.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import math

import numpy as np
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from diffinfer.diffusion.model import DiffusionModel
from diffinfer.errors import InputError
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.likelihoods.terms import DEFAULT_TERMS
from diffinfer.simulators.lognormal import LognormalSimulator


@functools.cache
def _default_simulator() -> LognormalSimulator:
    """One log-normal simulator of the default geometry per process: a Pyro model builds a
    new distribution at every step, and a simulator's spectra are cached on it (a log
    probability and gradient cost 10.5 ms with a shared one, 108.6 ms with a fresh one, on a
    2-core AMD EPYC: benchmarks/bench_pyro_field.py)."""
    return LognormalSimulator()


_LIKELIHOODS: collections.OrderedDict = collections.OrderedDict()
"""The diffusion likelihoods of recent (model, options, map) triples, shared by every
:class:`DiffusionField` (a Pyro model builds a new one at each step; the likelihood's noisy
states and cached terms are reused); at most :data:`LIKELIHOOD_CACHE_SIZE`."""
LIKELIHOOD_CACHE_SIZE = 16


def _theta_tensor(theta) -> torch.Tensor:
    theta = torch.as_tensor(theta, dtype=torch.float64) if not torch.is_tensor(theta) else theta
    if theta.shape[-1:] != (2,):
        raise InputError(f"theta must have shape (..., 2), got {tuple(theta.shape)}")
    return theta


class _FieldDistribution(TorchDistribution):
    """Shared machinery: batch shape from theta, event shape (N, N), broadcasting."""

    arg_constraints: dict = {}  # noqa: RUF012 (torch.distributions API)
    support = constraints.independent(constraints.positive, 2)
    has_rsample = False

    def __init__(self, theta, n_pix: int, noise_sigma, validate_args=None) -> None:
        self.theta = _theta_tensor(theta)
        self.noise_sigma = noise_sigma
        super().__init__(self.theta.shape[:-1], torch.Size((n_pix, n_pix)), validate_args)

    def _pairs(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        value = torch.as_tensor(value, dtype=torch.float64)
        shape = torch.broadcast_shapes(value.shape[:-2], self.theta.shape[:-1])
        theta = self.theta.expand(*shape, 2).reshape(-1, 2)
        maps = value.expand(*shape, *value.shape[-2:]).reshape(-1, *value.shape[-2:])
        return theta, maps, shape

    def _noisy(self, y: torch.Tensor, seed: int) -> torch.Tensor:
        if not self.noise_sigma:
            return y
        g = torch.Generator().manual_seed(seed)
        return y + float(self.noise_sigma) * torch.randn(y.shape, generator=g, dtype=y.dtype)

    def _seed(self) -> int:
        return int(torch.randint(0, 2**62, ()))  # follows torch's (and so Pyro's) seed

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new.__dict__.update(self.__dict__)
        new.theta = self.theta.expand(*batch_shape, 2)
        TorchDistribution.__init__(new, torch.Size(batch_shape), self.event_shape, False)
        return new


class ExactLognormalField(_FieldDistribution):
    """Log-normal density maps at theta with their exact likelihood (the reference).

    Parameters
    ----------
    theta
        Parameters, shape (..., 2) (batch shape ...).
    simulator
        The simulator (default geometry if omitted).
    noise_sigma
        Gaussian pixel noise in model space; may be a tensor (a free parameter).
    """

    def __init__(self, theta, simulator: LognormalSimulator | None = None, noise_sigma=0.0,
                 validate_args=None) -> None:  # fmt: skip
        self.simulator = simulator or _default_simulator()
        super().__init__(theta, self.simulator.config.n_pix, noise_sigma, validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact log density of the maps (data units, Jacobian of the transform included)."""
        theta, maps, shape = self._pairs(value)
        sim = self.simulator
        y = sim.transform.forward(maps)
        if len(theta) > 1 and bool((theta.detach() == theta.detach()[:1]).all()):
            theta = theta[:1]  # maps sharing theta (a plate): one spectrum for all
        logp = sim.exact_log_prob(y, theta, outside="-inf", noise_sigma=self.noise_sigma)
        n2 = maps.shape[-1] * maps.shape[-2]
        jacobian = -torch.log(maps).sum(dim=(-2, -1)) - n2 * math.log(sim.transform.scale)
        return (logp + jacobian).reshape(shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Simulated maps, shape sample_shape + batch_shape + (N, N)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        theta = self.theta.detach().expand(*shape, 2).reshape(-1, 2)
        sim = self.simulator
        maps = torch.as_tensor(sim.simulate(theta.numpy(), 1, seed=self._seed())[:, 0])
        y = self._noisy(sim.transform.forward(maps), self._seed())
        return sim.transform.inverse(y).reshape(*shape, *self.event_shape)


class DiffusionField(_FieldDistribution):
    """Density maps at theta under a diffusion model: log_prob is the diffusion likelihood.

    Parameters
    ----------
    theta
        Parameters, shape (..., 2).
    model
        The diffusion model.
    terms, n_noise, n_timesteps, seed, max_batch, precision, t_min
        Options of :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood`, with its
        defaults (as
        :func:`diffinfer.posterior`'s): the full bound from ``"auto"`` timesteps (8 with the
        control variate, else 16) of the model's timestep proposal, precision ``"auto"``.
    noise_sigma
        Known Gaussian pixel noise in model space (a fixed number).
    """

    def __init__(self, theta, model: DiffusionModel, *, terms=DEFAULT_TERMS, n_noise: int = 1,
                 n_timesteps: int | str | None = "auto", seed: int = 0,
                 max_batch: int | None = None, precision: str = "auto",
                 noise_sigma: float | None = None, t_min: int = 1,
                 validate_args=None) -> None:  # fmt: skip
        if torch.is_tensor(noise_sigma) and noise_sigma.requires_grad:
            raise InputError(
                "DiffusionField needs a known, fixed noise level; use ExactLognormalField "
                "for a free one"
            )
        self.model = model
        self.options = {"terms": terms, "n_noise": n_noise, "n_timesteps": n_timesteps,
                        "seed": seed, "max_batch": max_batch, "precision": precision,
                        "noise_sigma": float(noise_sigma) if noise_sigma else None,
                        "t_min": t_min}  # fmt: skip
        super().__init__(theta, model.field.n_pix, noise_sigma, validate_args)

    def likelihood(self, density: torch.Tensor) -> DiffusionLikelihood:
        """The likelihood object of one map, shared by every DiffusionField of the same model
        and options in this process (:data:`_LIKELIHOODS`)."""
        digest = hashlib.sha1(np.ascontiguousarray(density.detach().numpy()).tobytes())
        key = (id(self.model), json.dumps(self.options, sort_keys=True), digest.hexdigest())
        like = _LIKELIHOODS.get(key)
        if like is None or like.model is not self.model:
            like = DiffusionLikelihood(self.model, density, progress=False, **self.options)
            _LIKELIHOODS[key] = like
            while len(_LIKELIHOODS) > LIKELIHOOD_CACHE_SIZE:
                _LIKELIHOODS.popitem(last=False)
        _LIKELIHOODS.move_to_end(key)
        return like

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log L of each map at its theta (-inf outside the prior box), batch shape."""
        theta, maps, shape = self._pairs(value)
        out = [self.likelihood(maps[i])(theta[i : i + 1]) for i in range(len(maps))]
        return torch.cat(out).reshape(shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Emulated maps, shape sample_shape + batch_shape + (N, N)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        theta = self.theta.detach().expand(*shape, 2).reshape(-1, 2)
        y = self.model.sample(theta.numpy(), 1, seed=self._seed(), density=False)[:, 0]
        y = self._noisy(torch.as_tensor(y), self._seed())
        return self.model.transform.inverse(y).reshape(*shape, *self.event_shape)
