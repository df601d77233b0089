"""Geometry of a periodic map: size, box, slab depth, wavenumbers, and input checks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffinfer.errors import DataFileError, InputError
from diffinfer.parameters import DEFAULT_PRIOR, PriorBox
from diffinfer.validation import check_int


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
        from diffinfer.validation import check_float, check_int

        if check_int("n_pix", self.n_pix, low=2) % 2:
            raise InputError(f"n_pix must be an even integer >= 2, got {self.n_pix}")
        check_float("box_size", self.box_size, low=0, low_open=True, what="Mpc/h")
        check_float("depth", self.depth, low=0, low_open=True, what="Mpc/h")

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

    def geometry_differences(self, other: FieldConfig) -> list[str]:
        """What differs between two map geometries (pixels, side, depth), as
        ``"box_size 128 against 500"`` phrases; empty when they describe the same maps."""
        import math

        out = [] if self.n_pix == other.n_pix else [f"n_pix {self.n_pix} against {other.n_pix}"]
        for name in ("box_size", "depth"):
            a, b = getattr(self, name), getattr(other, name)
            if not math.isclose(a, b, rel_tol=1e-6):
                out.append(f"{name} {a:g} against {b:g} Mpc/h")
        return out

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
    data_mean
        Mean density of the model's data in its units (1 for density contrasts, the
        default; see :attr:`~diffinfer.diffusion.DiffusionModel.data_mean` for a model trained
        on maps in physical units, e.g. CAMELS M_sun/h per (Mpc/h)^2). The accepted mean range
        scales with it, and the converted kinds are multiplied by it.

    Raises
    ------
    InputError
        Wrong rank, non-square, wrong size, NaN/inf, or non-positive values where
        ``positive`` is set.
    """
    if not isinstance(field, torch.Tensor):
        array = np.asarray(field) if field is not None else np.asarray(np.nan)
        if array.dtype.kind not in "iuf":
            raise InputError(f"{what} must be an array of real numbers (N, N), got "
                             f"{type(field).__name__} of dtype {array.dtype}")  # fmt: skip
        field = array.astype(np.float64) if array.dtype.kind == "u" else array
    t = torch.as_tensor(field)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{what} must be a real-valued array, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if t.ndim not in (2, 3):
        raise InputError(f"{what} must have shape (N, N) or (M, N, N); got shape {tuple(t.shape)}")
    if t.shape[-1] != t.shape[-2]:
        raise InputError(f"{what} must be square; got {t.shape[-2]} x {t.shape[-1]} pixels")
    if n_pix is not None and t.shape[-1] != n_pix:
        n = t.shape[-1]
        hint = "use a model or configuration for this size"
        if n > n_pix and n % n_pix == 0:
            hint = (f"if it covers the model's box, average it down with "
                    f"diffinfer.fields.downsample(map, {n // n_pix}) (`--downsample "
                    f"{n // n_pix}` on the command line), or {hint}")  # fmt: skip
        raise InputError(
            f"{what} is {n} x {n} pixels but this configuration expects {n_pix} x {n_pix}; " + hint
        )
    if not torch.isfinite(t).all():
        raise InputError(f"{what} contains NaN or inf values; clean or mask them before use")
    if positive and not bool((t > 0).all()):
        raise InputError(
            f"{what} must be a strictly positive density (the transform takes its log); "
            f"minimum value is {t.min().item():.4g}"
        )
    return t


def downsample(field: np.ndarray | torch.Tensor, factor: int) -> np.ndarray:
    """Average a map (N, N) or a stack (M, N, N) over blocks of factor x factor pixels.

    The block mean keeps the mean density and the map's physical size: a 256^2 map of a
    model's box, downsampled by 4, is a 64^2 map of the same box. Check the result against
    the model's data (the pixel window of a block mean can differ from the simulator's).

    Parameters
    ----------
    field
        Real values; the side N must be a multiple of ``factor``.
    factor
        Pixels per block side, >= 1.

    Returns
    -------
    numpy.ndarray
        Shape (N / factor, N / factor) (or with the stack's leading axis), float64.
    """
    from diffinfer.validation import check_int

    factor = check_int("downsample factor", factor, low=1)
    a = np.asarray(field.detach().cpu() if isinstance(field, torch.Tensor) else field)
    if a.dtype.kind not in "iuf" or a.ndim not in (2, 3) or a.shape[-1] != a.shape[-2]:
        raise InputError(f"downsample needs square maps (N, N) or (M, N, N) of real numbers, "
                         f"got shape {a.shape} of dtype {a.dtype}")  # fmt: skip
    n = a.shape[-1]
    if n % factor:
        raise InputError(f"a {n} x {n} map cannot be downsampled by {factor}: the factor "
                         f"must divide {n}")  # fmt: skip
    m = n // factor
    blocks = a.astype(np.float64).reshape(*a.shape[:-2], m, factor, m, factor)
    return blocks.mean(axis=(-3, -1))


FIELD_KINDS = ("density", "overdensity", "mass", "log10")
"""What a user's map may hold (the ``kind`` argument of :func:`as_density`):

- ``"density"``: the density contrast rho / rho_mean (positive, mean about 1), the models'
  data units;
- ``"overdensity"``: delta = rho / rho_mean - 1 (converted to 1 + delta);
- ``"mass"``: mass, counts or density in any unit per pixel (divided by the map's own mean;
  the map's mean then carries no information);
- ``"log10"``: log10 of the density contrast (converted to 10**map).
"""

DENSITY_MEAN_RANGE = (0.2, 5.0)
"""Accepted mean of a density-contrast map: maps of the prior box have means 0.58-1.75
(3,000 log-normal maps at each corner and the centre: ``scripts/density_convention.py``)."""

MIN_LOG_STD = 0.02
"""Least standard deviation of ln rho of a map with structure (log-normal maps of the prior:
0.44-0.97, ``scripts/density_convention.py``)."""


_KIND_WORDS = {
    "density": "the density contrast rho/rho_mean, pass kind='density'",
    "overdensity": "the overdensity delta = rho/rho_mean - 1, pass kind='overdensity'",
    "log10": "log10 of the density contrast, pass kind='log10'",
    "mass": "mass or counts per pixel, pass kind='mass'",
}


def _kind_hint(raw: torch.Tensor, given: str) -> str:
    """The fix for a map that is not what ``given`` says: the kinds its values could be
    (values <= 0 rule out density and mass, except zero counts; a mean far from 0 rules out
    delta; values below -1 rule out delta too; a mean far from 1 rules out density), not every
    other kind."""
    lo, mean = float(raw.min()), float(raw.mean())
    fits = []
    if lo > 0 and DENSITY_MEAN_RANGE[0] <= mean <= DENSITY_MEAN_RANGE[1]:
        fits.append("density")
    if lo >= -1 and abs(mean) < 0.2 and lo < 0:
        fits.append("overdensity")
    if lo < 0 and float(raw.max()) < 3 and -1.5 < mean < 0.5:
        fits.append("log10")
    if lo >= 0:
        fits.append("mass")
    fits = [k for k in fits if k != given] or [k for k in FIELD_KINDS if k != given]
    return (
        "if it holds "
        + "; if ".join(_KIND_WORDS[k] for k in fits)
        + " (the --kind option on the command line)"
    )


def as_density(
    field: np.ndarray | torch.Tensor,
    *,
    kind: str = "density",
    n_pix: int | None = None,
    what: str = "density map",
    data_mean: float = 1.0,
) -> torch.Tensor:
    """A user's map(s) in the data units of a model (default: density contrast
    rho / rho_mean), float64, checked for that convention.

    Parameters
    ----------
    field
        One map (N, N) or a stack (M, N, N).
    kind
        What the map holds: one of :data:`FIELD_KINDS` (default ``"density"``).
    n_pix
        Required side length, if any.
    what
        Name used in error messages.

    Raises
    ------
    InputError
        Not a map (see :func:`as_maps`); values that are not positive; a mean far from 1 or
        no structure, i.e. a map that is not a density contrast: the message names the
        ``kind`` that converts it.
    """
    if kind not in FIELD_KINDS:
        raise InputError(f"kind must be one of {list(FIELD_KINDS)} (what the map holds), "
                         f"got {kind!r}")  # fmt: skip
    t = as_maps(field, n_pix=n_pix, what=what)
    raw = t
    if kind in ("overdensity", "log10") and float(t.min()) >= 0:
        raise InputError(
            f"{what} has no negative values, but as kind={kind!r} it must: underdense pixels "
            f"have {'delta < 0' if kind == 'overdensity' else 'log10 rho < 0'}. Its mean is "
            f"{float(t.mean()):.4g}: if it holds the density contrast rho/rho_mean, pass "
            "kind='density'"
        )
    if kind == "overdensity":
        t = 1.0 + t
    elif kind == "log10":
        if float(t.abs().max()) > 30:
            raise InputError(f"{what} holds values up to {float(t.abs().max()):.3g}: not the "
                             "log10 of a density contrast (kind='log10')")  # fmt: skip
        t = 10.0**t
    hint = _kind_hint(raw, kind)
    low = float(t.min())
    if low <= 0:
        extra = " (empty pixels: smooth the map or add a floor first)" if low == 0 else ""
        given = "" if kind == "density" else f" as kind={kind!r}"
        raise InputError(
            f"{what}{given} has density values <= 0 (minimum {low:.4g}){extra}, but a "
            f"density contrast rho/rho_mean is positive; {hint}"
        )
    if kind == "mass":
        t = t / t.mean(dim=(-2, -1), keepdim=True)
    if kind != "density" and data_mean != 1.0:
        t = t * data_mean  # a density contrast, in the model's units
    means = t.mean(dim=(-2, -1)).reshape(-1) / data_mean
    lo, hi = DENSITY_MEAN_RANGE
    bad = (means < lo) | (means > hi)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        where = "" if t.ndim == 2 else f" (map {i})"
        expected = (
            "a density contrast rho/rho_mean has mean about 1"
            if data_mean == 1.0
            else f"this model's maps have mean about {data_mean:.4g}"
        )
        raise InputError(
            f"{what}{where} has mean {float(means[i]) * data_mean:.4g}, but {expected} "
            f"({lo:g}-{hi:g} times that for single maps); {hint}"
        )
    log_std = torch.log(t).std(dim=(-2, -1)).reshape(-1)
    flat = log_std < MIN_LOG_STD
    if bool(flat.any()):
        i = int(torch.nonzero(flat)[0, 0])
        where = "" if t.ndim == 2 else f" (map {i})"
        raise InputError(
            f"{what}{where} has almost no structure (std of ln rho {float(log_std[i]):.3g}; "
            "maps of the prior have 0.44-0.97): is it a constant or a mask?"
        )
    return t


_block_mean = downsample  # read_map's argument ``downsample`` shadows the function


def read_map(
    path: str | os.PathLike,
    index: int | None = None,
    downsample: int | None = None,
    *,
    option_prefix: str = "",
) -> np.ndarray:
    """One map from a .npy file, or from a .npz file (its only array or the one named
    ``map``), or map ``index`` of a stack, averaged over ``downsample`` x ``downsample``
    pixel blocks if given; no pickles. Errors name the file and the fix (``option_prefix``:
    how the options are written in them, ``"--"`` on the command line)."""
    idx, down = f"{option_prefix}index", f"{option_prefix}downsample"
    p = Path(path)
    if p.is_dir():
        raise DataFileError(f"map {path} is a directory; give a .npy or .npz file")
    if not p.is_file():
        raise DataFileError(f"map file not found: {path}")
    import zipfile
    import zlib

    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                names = list(data.files)
                if len(names) != 1 and "map" not in names:
                    raise DataFileError(f"{path} holds arrays {names}: name the map 'map' or "
                                        "save one array per file")  # fmt: skip
                data = data["map" if "map" in names else names[0]]
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot read map {path} ({exc}); expected a .npy or .npz file of "
                            f"numbers (N x N, or a stack with {idx})") from exc  # fmt: skip
    if data.dtype.kind not in "iuf":
        raise DataFileError(f"map {path} holds {data.dtype} values; expected real numbers")
    if data.ndim == 3:
        if index is None:
            pick = f"{idx} I" if option_prefix else f"{idx}=I"
            raise InputError(f"{path} holds a stack of {data.shape[0]} maps; pick one with "
                             f"{pick}" + ("" if option_prefix else ", or pass the maps of one "
                                          "cosmology as a list"))  # fmt: skip
        check_int(idx, index, low=-data.shape[0], high=data.shape[0] - 1,
                  what=f"the stack holds {data.shape[0]} maps")  # fmt: skip
        data = data[index]
    elif index is not None:
        raise InputError(f"{idx} given but {path} holds one map of shape {data.shape}")
    if downsample is not None:
        check_int(down, downsample, low=1, what="pixels per block side")
        if data.ndim != 2 or data.shape[0] != data.shape[1]:
            raise InputError(f"{down} needs a square map; {path} has shape {data.shape}")
        if data.shape[0] % downsample:
            raise InputError(f"{down} {downsample} does not divide the map's "
                             f"{data.shape[0]} pixels")  # fmt: skip
        data = _block_mean(data, downsample)
    return data
