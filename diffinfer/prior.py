"""Priors over theta = (Omega_m, sigma_8), with a smooth map to an unconstrained space.

Every prior lives on the model's box (the likelihood is -inf outside it). Gradient samplers
work in the unconstrained space z = logit((theta - low) / width), whose map back to theta is
smooth and whose log-Jacobian is :meth:`Prior.log_abs_det_jacobian`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Distribution

from diffinfer.errors import InputError
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox, as_theta


class Prior:
    """A prior density on the box (uniform by default, or any torch distribution, truncated).

    Parameters
    ----------
    box
        The parameter box (default: the CAMELS LH box).
    distribution
        Optional ``torch.distributions.Distribution`` over (Omega_m, sigma_8) (event shape
        (2,), e.g. ``MultivariateNormal``), truncated to the box; its normalisation on the box
        is not included (it is a constant). Default: uniform on the box.
    """

    def __init__(self, box: PriorBox = DEFAULT_PRIOR, distribution: Distribution | None = None):
        if not isinstance(box, PriorBox):
            raise InputError(f"box must be a PriorBox (e.g. di.PriorBox((0.1, 0.6), (0.5, 1.0))), "
                             f"got {box!r}")  # fmt: skip
        if distribution is not None and not isinstance(distribution, Distribution):
            raise InputError(f"distribution must be a torch.distributions.Distribution or None, "
                             f"got {distribution!r}")  # fmt: skip
        self.box = box
        self.distribution = distribution
        if distribution is not None and tuple(distribution.event_shape) != (2,):
            raise InputError(
                "a prior distribution must have event shape (2,) over (Omega_m, sigma_8); "
                f"got {tuple(distribution.event_shape)}"
            )

    @classmethod
    def gaussian(cls, mean, std, box: PriorBox = DEFAULT_PRIOR) -> Prior:
        """Independent Gaussians on each parameter, truncated to the box."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        std = torch.as_tensor(np.asarray(std, dtype=np.float64))
        if mean.shape != (2,) or std.shape != (2,):
            raise InputError(f"mean and std need 2 numbers each (Omega_m, sigma_8), got shapes "
                             f"{tuple(mean.shape)}, {tuple(std.shape)}")  # fmt: skip
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise InputError(
                "a Gaussian prior needs finite means and positive finite standard deviations, "
                f"got mean {mean.tolist()}, std {std.tolist()}"
            )
        return cls(box, torch.distributions.Independent(torch.distributions.Normal(mean, std), 1))

    @property
    def name(self) -> str:
        """Short description."""
        return "uniform on the box" if self.distribution is None else repr(self.distribution)

    def log_prob(self, theta: np.ndarray | torch.Tensor) -> torch.Tensor:
        """log prior density at each row of theta (B, 2): -inf outside the box."""
        theta = as_theta(theta)
        inside = self.box.contains(theta.detach())
        if self.distribution is None:
            value = torch.full((theta.shape[0],), -math.log(np.prod(self.box.width)),
                               dtype=torch.float64)  # fmt: skip
        else:
            safe = torch.where(inside[:, None], theta, self.centre)
            value = self.distribution.log_prob(safe).to(torch.float64)
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    @property
    def centre(self) -> torch.Tensor:
        """Centre of the box, (2,)."""
        return torch.as_tensor((np.asarray(self.box.low) + np.asarray(self.box.high)) / 2)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n draws (n, 2): uniform on the box, or from the distribution by rejection."""
        rng = np.random.default_rng(seed)
        if self.distribution is None:
            return rng.uniform(self.box.low, self.box.high, size=(n, 2))
        torch_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        out: list[np.ndarray] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=torch_gen)))
            for _ in range(1000):
                draw = self.distribution.sample((4 * n,)).to(torch.float64)
                out.extend(draw[self.box.contains(draw)].numpy())
                if len(out) >= n:
                    return np.asarray(out[:n])
        raise InputError("the prior distribution puts almost no mass inside the box")

    # ------------------------------------------------------- unconstrained space
    def to_unconstrained(self, theta: torch.Tensor) -> torch.Tensor:
        """z = logit((theta - low) / width), elementwise."""
        return torch.logit(self.box.to_unit(as_theta(theta)))

    def from_unconstrained(self, z: torch.Tensor) -> torch.Tensor:
        """theta = low + width * sigmoid(z)."""
        return self.box.from_unit(torch.sigmoid(z))

    def log_abs_det_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """log |d theta / d z| per row of z (B, 2)."""
        width = torch.as_tensor(self.box.width, dtype=z.dtype)
        return (torch.log(width) + torch.nn.functional.logsigmoid(z)
                + torch.nn.functional.logsigmoid(-z)).sum(dim=-1)  # fmt: skip
