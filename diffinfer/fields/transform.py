"""The map from density to model space: a log, then a fixed standardisation."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from diffinfer.errors import InputError
from diffinfer.fields.grid import as_maps
from diffinfer.io import read_json, write_json_atomic


@dataclass(frozen=True)
class Transform:
    """y = (ln(rho) - shift) / scale, with constants fixed for a data set (never per map).

    Parameters
    ----------
    shift
        Mean of ln(rho) over the data set's pixels.
    scale
        Standard deviation of ln(rho) over the data set's pixels.
    """

    shift: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.shift) and math.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"transform needs finite shift and scale > 0, got {self}")

    def forward(self, density: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Density maps (N, N) or (M, N, N) to model space (float64 tensor)."""
        rho = as_maps(density, positive=True, what="density map")
        return (torch.log(rho) - self.shift) / self.scale

    def inverse(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Model-space maps back to density (float64 tensor)."""
        y = as_maps(y, what="model-space map")
        return torch.exp(y * self.scale + self.shift)

    @classmethod
    def fit(cls, density: np.ndarray, *, chunk: int = 512) -> Transform:
        """Constants from a data set: mean and standard deviation of ln(rho) over all pixels.

        Parameters
        ----------
        density
            Maps, shape (M, N, N); a memory map is read in chunks of ``chunk`` maps.
        """
        if np.ndim(density) != 3:
            raise InputError(f"fit needs a stack of maps (M, N, N); got shape {np.shape(density)}")
        total, total_sq, count = 0.0, 0.0, 0
        for i in range(0, len(density), chunk):
            ln = torch.log(as_maps(np.asarray(density[i : i + chunk]), positive=True))
            total += ln.sum().item()
            total_sq += (ln**2).sum().item()
            count += ln.numel()
        mean = total / count
        return cls(shift=mean, scale=math.sqrt(max(total_sq / count - mean**2, 0.0)))

    def to_dict(self) -> dict:
        """JSON-ready description."""
        return {"kind": "log-standardise", "shift": self.shift, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        """Inverse of :meth:`to_dict`."""
        if d.get("kind", "log-standardise") != "log-standardise":
            raise InputError(
                f"unknown transform kind {d.get('kind')!r}; expected 'log-standardise'"
            )
        try:
            return cls(shift=float(d["shift"]), scale=float(d["scale"]))
        except KeyError as exc:
            raise InputError(f"transform description lacks {exc}") from exc

    def save(self, path: str | os.PathLike) -> None:
        """Write the constants as JSON, atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Transform:
        """Read constants written by :meth:`save`."""
        return cls.from_dict(read_json(path, what="transform file"))
