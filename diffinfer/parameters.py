"""The cosmological parameters: names, labels, order and the default prior box.

The order is always (Omega_m, sigma_8). Every module takes names and labels from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffinfer.errors import InputError, OutsidePriorError

PARAM_NAMES: tuple[str, str] = ("Omega_m", "sigma_8")
"""Parameter names, in the order used by every array of parameters."""

PARAM_LABELS: tuple[str, str] = (r"\Omega_{\rm m}", r"\sigma_8")
"""LaTeX labels (without dollar signs), as GetDist and ArviZ expect them."""

N_PARAMS = len(PARAM_NAMES)

DERIVED_NAMES: tuple[str, ...] = ("S_8",)
"""Derived parameters that samples, summaries, GetDist and ArviZ carry beside theta:
``S_8`` = sigma_8 (Omega_m / 0.3)^(1/2), the combination the matter maps constrain best."""

DERIVED_LABELS: dict[str, str] = {"S_8": r"S_8"}
"""LaTeX labels of the derived parameters (without dollar signs)."""


def derived(name: str, theta: np.ndarray) -> np.ndarray:
    """A derived parameter at draws theta (..., 2).

    Parameters
    ----------
    name
        One of :data:`DERIVED_NAMES` (``"S_8"``) or :data:`PARAM_NAMES`.
    theta
        Draws in the order (Omega_m, sigma_8).

    Raises
    ------
    InputError
        An unknown name; the message lists the known ones.
    """
    theta = np.asarray(theta, dtype=np.float64)
    if name in PARAM_NAMES:
        return theta[..., PARAM_NAMES.index(name)]
    if name == "S_8":
        return theta[..., 1] * np.sqrt(theta[..., 0] / 0.3)
    raise InputError(f"unknown parameter {name!r}; known: {[*PARAM_NAMES, *DERIVED_NAMES]}")


@dataclass(frozen=True)
class PriorBox:
    """An axis-aligned box in (Omega_m, sigma_8).

    Parameters
    ----------
    low, high
        Lower and upper edges, in the order of :data:`PARAM_NAMES`.
    """

    low: tuple[float, float] = (0.1, 0.6)
    high: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        from diffinfer.validation import check_float

        if len(self.low) != N_PARAMS or len(self.high) != N_PARAMS:
            raise InputError(f"a prior box needs {N_PARAMS} lows and highs, in order {PARAM_NAMES}")
        for side, values in (("low", self.low), ("high", self.high)):
            for name, v in zip(PARAM_NAMES, values, strict=True):
                check_float(f"prior box {side} edge of {name}", v)
        if not all(lo < hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise InputError(
                f"prior box edges must satisfy low < high, got {self.low}, {self.high}"
            )

    @property
    def width(self) -> np.ndarray:
        """Edge lengths of the box."""
        return np.asarray(self.high) - np.asarray(self.low)

    def contains(self, theta: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Boolean mask of the rows of ``theta`` (shape (..., 2)) inside the closed box."""
        if isinstance(theta, torch.Tensor):
            lo = torch.as_tensor(self.low, dtype=theta.dtype, device=theta.device)
            hi = torch.as_tensor(self.high, dtype=theta.dtype, device=theta.device)
            return ((theta >= lo) & (theta <= hi)).all(dim=-1)
        theta = np.asarray(theta)
        return np.all((theta >= self.low) & (theta <= self.high), axis=-1)

    def to_unit(self, theta: torch.Tensor) -> torch.Tensor:
        """Map physical parameters to the unit square."""
        lo = torch.as_tensor(self.low, dtype=theta.dtype, device=theta.device)
        return (theta - lo) / torch.as_tensor(self.width, dtype=theta.dtype, device=theta.device)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Map points of the unit square to physical parameters."""
        lo = torch.as_tensor(self.low, dtype=u.dtype, device=u.device)
        return lo + u * torch.as_tensor(self.width, dtype=u.dtype, device=u.device)

    def to_dict(self) -> dict:
        """JSON-ready description, keyed by parameter name."""
        return {n: [lo, hi] for n, lo, hi in zip(PARAM_NAMES, self.low, self.high, strict=True)}

    @classmethod
    def from_dict(cls, d: dict) -> PriorBox:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                low=tuple(float(d[n][0]) for n in PARAM_NAMES),
                high=tuple(float(d[n][1]) for n in PARAM_NAMES),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise InputError(f"a prior box needs [low, high] for each of {PARAM_NAMES}") from exc


DEFAULT_PRIOR = PriorBox()
"""The CAMELS LH ranges: Omega_m in [0.1, 0.5], sigma_8 in [0.6, 1.0]."""


def as_theta(
    theta: np.ndarray | torch.Tensor | list | tuple,
    prior: PriorBox | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Validate parameters and return them as a (B, 2) tensor.

    Parameters
    ----------
    theta
        One parameter vector (shape (2,)) or a batch (shape (B, 2)), in the order
        (Omega_m, sigma_8). Tensors keep their autograd graph.
    prior
        If given, every row must lie inside this box.
    dtype
        Floating dtype of the result (tensors that already have a floating dtype keep it).

    Raises
    ------
    InputError
        Wrong shape, or non-finite values.
    OutsidePriorError
        A row lies outside ``prior``.
    """
    if isinstance(theta, torch.Tensor):
        if theta.is_complex():
            raise InputError("theta must be real numbers, got a complex tensor")
        t = theta if theta.is_floating_point() else theta.to(dtype)
    else:
        if np.iscomplexobj(theta):
            raise InputError(f"theta must be real numbers, got complex values {theta!r}")
        try:
            t = torch.as_tensor(np.asarray(theta, dtype=np.float64), dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"theta must be numeric, shape (2,) or (B, 2); got {theta!r}") from exc
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[-1] != N_PARAMS:
        raise InputError(
            f"theta must have shape (2,) or (B, 2) in the order {PARAM_NAMES}; "
            f"got shape {tuple(theta.shape) if hasattr(theta, 'shape') else np.shape(theta)}"
        )
    if not torch.isfinite(t).all():
        raise InputError("theta contains NaN or inf")
    if prior is not None:
        inside = prior.contains(t.detach())
        if not bool(inside.all()):
            bad = t.detach()[~inside][0].tolist()
            raise OutsidePriorError(
                f"theta {bad} lies outside the prior box "
                f"{PARAM_NAMES[0]} in [{prior.low[0]}, {prior.high[0]}], "
                f"{PARAM_NAMES[1]} in [{prior.low[1]}, {prior.high[1]}]"
            )
    return t
