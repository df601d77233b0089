"""Summary statistics of maps: the binned isotropic power spectrum and the one-point PDF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffinfer.errors import InputError
from diffinfer.fields.grid import as_maps, wavenumber_grid


@dataclass(frozen=True)
class PowerSpectrum:
    """A binned isotropic 2D power spectrum.

    Attributes
    ----------
    k
        Mean |k| of the modes in each bin, h/Mpc, shape (n_bins,).
    power
        Mean power of the modes in each bin, (Mpc/h)^2; shape (n_bins,) for one map or
        (M, n_bins) for a stack.
    n_modes
        Number of Fourier modes (k and -k counted separately) in each bin.
    edges
        Bin edges in h/Mpc, shape (n_bins + 1,).
    """

    k: np.ndarray
    power: np.ndarray
    n_modes: np.ndarray
    edges: np.ndarray


def default_bins(n_pix: int, box_size: float) -> np.ndarray:
    """Linear bins one fundamental mode wide, centred on 1, 2, ..., N/2 times 2 pi / L."""
    kf = 2.0 * np.pi / box_size
    return kf * (np.arange(n_pix // 2 + 1) + 0.5)


def bin_modes(
    values: np.ndarray, box_size: float, edges: np.ndarray | None = None
) -> PowerSpectrum:
    """Average any quantity defined on the DFT modes of a map over |k| bins.

    Parameters
    ----------
    values
        Values on the modes in numpy's ``fft2`` layout, shape (..., N, N); e.g. a model
        spectrum P_2D(|k|) on the grid, to compare with :func:`power_spectrum`.
    box_size
        Side length of the map in Mpc/h.
    edges
        Bin edges in h/Mpc; default :func:`default_bins`. Modes outside every bin, and the
        k = 0 mode with the default bins, are left out.
    """
    values = np.asarray(values, dtype=np.float64)
    n_pix = values.shape[-1]
    kmag = wavenumber_grid(n_pix, box_size).ravel()
    edges = default_bins(n_pix, box_size) if edges is None else np.asarray(edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InputError("bin edges must be a 1D increasing array with at least two entries")
    idx = np.digitize(kmag, edges) - 1
    ok = (idx >= 0) & (idx < edges.size - 1)
    n_bins = edges.size - 1
    counts = np.bincount(idx[ok], minlength=n_bins).astype(float)
    ksum = np.bincount(idx[ok], weights=kmag[ok], minlength=n_bins)
    flat = values.reshape(-1, n_pix * n_pix)[:, ok]
    sums = np.stack([np.bincount(idx[ok], weights=row, minlength=n_bins) for row in flat])
    with np.errstate(invalid="ignore", divide="ignore"):
        power = sums / counts
        k = ksum / counts
    power = power.reshape((*values.shape[:-2], n_bins))
    return PowerSpectrum(k=k, power=power, n_modes=counts.astype(np.int64), edges=edges)


def power_spectrum(
    field: np.ndarray | torch.Tensor, box_size: float, *, edges: np.ndarray | None = None
) -> PowerSpectrum:
    """Binned isotropic power spectrum of a map or a stack of maps.

    P(k) = |FT[f](k)|^2 / L^2 with the continuous Fourier convention, i.e.
    (L / N^2)^2 |DFT|^2; the map mean (k = 0) is excluded by the default bins.

    Parameters
    ----------
    field
        Map (N, N) or maps (M, N, N) of a real field (e.g. the overdensity, or ln rho).
    box_size
        Side length in Mpc/h.
    edges
        Bin edges in h/Mpc; default :func:`default_bins`.

    Returns
    -------
    PowerSpectrum
        k in h/Mpc, power in (Mpc/h)^2, mode counts.
    """
    from diffinfer.validation import check_float

    check_float("box_size", box_size, low=0, low_open=True, what="map side in Mpc/h")
    f = as_maps(field, what="map").numpy()
    n_pix = f.shape[-1]
    modes = np.abs(np.fft.fft2(f)) ** 2 * (box_size / n_pix**2) ** 2
    return bin_modes(modes, box_size, edges)


def one_point_pdf(
    field: np.ndarray | torch.Tensor,
    *,
    bins: int | np.ndarray = 50,
    value_range: tuple[float, float] | None = None,
    log: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram estimate of the one-point PDF over all pixels.

    Parameters
    ----------
    field
        Map(s), shape (N, N) or (M, N, N). Must be positive when ``log`` is set.
    bins
        Number of bins or bin edges.
    value_range
        (low, high) of the bins; default the data range.
    log
        Histogram ln(field) instead of the field (the natural variable for densities).

    Returns
    -------
    centres, density
        Bin centres and the normalised PDF in each bin.
    """
    f = as_maps(field, positive=log, what="map").numpy()
    v = np.log(f) if log else f
    density, edges = np.histogram(v.ravel(), bins=bins, range=value_range, density=True)
    return 0.5 * (edges[1:] + edges[:-1]), density
