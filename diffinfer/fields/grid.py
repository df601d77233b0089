"""Geometry of a periodic map: size, box, slab depth, wavenumbers, and input checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffinfer.errors import InputError
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox


@dataclass(frozen=True)
class FieldConfig:
    """A square periodic map of a slab of the matter distribution.

    Parameters
    ----------
    n_pix
        Pixels per side N.
    box_size
        Side length L of the map in Mpc/h.
    depth
        Depth d of the projected slab in Mpc/h.
    prior
        The parameter box the maps are drawn from.

    Notes
    -----
    The default (N = 64, L = 500 Mpc/h, d = 50 Mpc/h) is chosen so that one map constrains
    both parameters; docs/simulator.md gives the Fisher forecast behind the choice.
    """

    n_pix: int = 64
    box_size: float = 500.0
    depth: float = 50.0
    prior: PriorBox = field(default_factory=lambda: DEFAULT_PRIOR)

    def __post_init__(self) -> None:
        if int(self.n_pix) != self.n_pix or self.n_pix < 2 or self.n_pix % 2:
            raise InputError(f"n_pix must be an even integer >= 2, got {self.n_pix}")
        if not (self.box_size > 0 and self.depth > 0):
            raise InputError(
                f"box_size and depth must be positive, got {self.box_size}, {self.depth}"
            )

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in (Mpc/h)^2."""
        return (self.box_size / self.n_pix) ** 2

    @property
    def k_fundamental(self) -> float:
        """Fundamental wavenumber 2 pi / L in h/Mpc."""
        return 2.0 * np.pi / self.box_size

    @property
    def k_nyquist(self) -> float:
        """Nyquist wavenumber pi N / L in h/Mpc."""
        return np.pi * self.n_pix / self.box_size

    def to_dict(self) -> dict:
        """JSON-ready description."""
        return {
            "n_pix": self.n_pix,
            "box_size": self.box_size,
            "depth": self.depth,
            "prior": self.prior.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FieldConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            n_pix=int(d["n_pix"]),
            box_size=float(d["box_size"]),
            depth=float(d["depth"]),
            prior=PriorBox.from_dict(d["prior"]) if "prior" in d else DEFAULT_PRIOR,
        )


def wavenumber_grid(n_pix: int, box_size: float) -> np.ndarray:
    """|k| in h/Mpc of every mode of an N x N DFT (numpy's ``fft2`` layout), shape (N, N)."""
    k1 = 2.0 * np.pi * np.fft.fftfreq(n_pix, d=box_size / n_pix)
    return np.hypot(k1[:, None], k1[None, :])


def as_maps(
    field: np.ndarray | torch.Tensor,
    *,
    n_pix: int | None = None,
    positive: bool = False,
    what: str = "map",
) -> torch.Tensor:
    """Validate one map (N, N) or a stack (M, N, N) and return it as a float64 tensor.

    Parameters
    ----------
    field
        The map(s).
    n_pix
        Required side length, if any.
    positive
        Require strictly positive values (densities).
    what
        Name used in error messages.

    Raises
    ------
    InputError
        Wrong rank, non-square, wrong size, NaN/inf, or non-positive values where
        ``positive`` is set.
    """
    t = torch.as_tensor(np.asarray(field) if not isinstance(field, torch.Tensor) else field)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{what} must be a real-valued array, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if t.ndim not in (2, 3):
        raise InputError(f"{what} must have shape (N, N) or (M, N, N); got shape {tuple(t.shape)}")
    if t.shape[-1] != t.shape[-2]:
        raise InputError(f"{what} must be square; got {t.shape[-2]} x {t.shape[-1]} pixels")
    if n_pix is not None and t.shape[-1] != n_pix:
        raise InputError(
            f"{what} is {t.shape[-1]} x {t.shape[-1]} pixels but this configuration expects "
            f"{n_pix} x {n_pix}; downsample or use a matching configuration"
        )
    if not torch.isfinite(t).all():
        raise InputError(f"{what} contains NaN or inf values; clean or mask them before use")
    if positive and not bool((t > 0).all()):
        raise InputError(
            f"{what} must be a strictly positive density (the transform takes its log); "
            f"minimum value is {t.min().item():.4g}"
        )
    return t
