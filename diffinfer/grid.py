"""Adaptive grid marginalisation of a 2D posterior over the prior box.

A coarse pass covers the whole box; each refinement re-grids the smallest box (padded by one
cell) that holds all but ``tol`` of the posterior mass found so far, until the box stops
shrinking. Nothing is centred on a known truth: the grid follows the posterior alone. The
result integrates the posterior cell by cell (value at the cell centre times cell area) and
gives marginals, the mode, quantiles, highest-posterior-density levels and samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffinfer.errors import InputError
from diffinfer.parameters import PriorBox


@dataclass
class GridPosterior:
    """A posterior tabulated on a regular grid of cells.

    Attributes
    ----------
    axes
        Cell centres along Omega_m and sigma_8.
    log_density
        Unnormalised log posterior at the cell centres, shape (n_x, n_y).
    n_evaluations
        Log-density evaluations spent over all passes.
    passes
        Box and resolution of every pass.
    edge_mass
        Posterior mass in the outermost ring of cells that is not on the prior boundary: a
        check that the refined grid holds the whole posterior.
    """

    axes: tuple[np.ndarray, np.ndarray]
    log_density: np.ndarray
    n_evaluations: int
    passes: list[dict] = field(default_factory=list)
    edge_mass: float = 0.0

    @property
    def steps(self) -> np.ndarray:
        """Cell widths (2,)."""
        return np.array([a[1] - a[0] if len(a) > 1 else 1.0 for a in self.axes])

    @property
    def weights(self) -> np.ndarray:
        """Posterior mass of every cell, (n_x, n_y), summing to 1."""
        finite = np.isfinite(self.log_density)
        if not finite.any():
            raise InputError("the posterior is zero everywhere on the grid")
        w = np.where(finite, np.exp(self.log_density - self.log_density[finite].max()), 0.0)
        return w / w.sum()

    def marginal(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres and the marginal density of parameter j (integrates to 1)."""
        mass = self.weights.sum(axis=1 - j)
        return self.axes[j], mass / self.steps[j]

    def mean(self) -> np.ndarray:
        """Posterior mean (2,)."""
        w = self.weights
        return np.array([np.sum(w.sum(axis=1 - j) * self.axes[j]) for j in range(2)])

    def cov(self) -> np.ndarray:
        """Posterior covariance (2, 2), with the within-cell (uniform) variance."""
        w = self.weights
        x, y = np.meshgrid(*self.axes, indexing="ij")
        m = self.mean()
        dx, dy = x - m[0], y - m[1]
        c = np.array([[np.sum(w * dx * dx), np.sum(w * dx * dy)],
                      [np.sum(w * dx * dy), np.sum(w * dy * dy)]])  # fmt: skip
        return c + np.diag(self.steps**2 / 12)

    def mode(self) -> np.ndarray:
        """The cell centre of highest density (2,)."""
        i, j = np.unravel_index(np.nanargmax(self.log_density), self.log_density.shape)
        return np.array([self.axes[0][i], self.axes[1][j]])

    def quantiles(self, j: int, q) -> np.ndarray:
        """Quantiles of parameter j, linear within cells (uniform density per cell)."""
        centres, density = self.marginal(j)
        h = self.steps[j]
        edges = np.concatenate([centres - h / 2, [centres[-1] + h / 2]])
        cdf = np.concatenate([[0.0], np.cumsum(density * h)])
        return np.interp(np.asarray(q), cdf / cdf[-1], edges)

    def hpd_levels(self, probabilities=(0.68, 0.95)) -> np.ndarray:
        """Log-density thresholds whose superlevel sets hold each probability mass."""
        w = self.weights.ravel()
        order = np.argsort(w)[::-1]
        cdf = np.cumsum(w[order])
        idx = np.minimum(np.searchsorted(cdf, np.asarray(probabilities)), len(w) - 1)
        return self.log_density.ravel()[order][idx]

    def _log_pdf_interpolator(self):
        """Cubic interpolator of the normalised log density between cell centres (empty
        cells clamped to a finite floor so interpolation stays finite next to them); built
        once per grid."""
        from scipy.interpolate import RegularGridInterpolator

        cached = self.__dict__.get("_interpolator")
        if cached is not None and cached[0] is self.log_density:
            return cached[1]

        with np.errstate(divide="ignore"):
            cell_lp = np.log(self.weights) - np.log(np.prod(self.steps))
        floor = np.where(np.isfinite(cell_lp), cell_lp, np.nan)
        floor = np.where(np.isnan(floor), np.nanmin(floor) - 50.0, floor)
        method = "cubic" if min(floor.shape) >= 4 else "linear"
        interp = RegularGridInterpolator(self.axes, floor, method=method, bounds_error=False,
                                         fill_value=None)  # fmt: skip
        self.__dict__["_interpolator"] = (self.log_density, interp)
        return interp

    def _inside(self, theta: np.ndarray) -> np.ndarray:
        half = self.steps / 2
        low = np.array([a[0] for a in self.axes]) - half
        high = np.array([a[-1] for a in self.axes]) + half
        return np.all((theta >= low) & (theta <= high), axis=-1)

    def log_pdf(self, theta: np.ndarray) -> np.ndarray:
        """Normalised log density at points theta (B, 2) (or (2,)), interpolated (cubic)
        between cell centres; -inf outside the tabulated grid."""
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = self._inside(theta)
        out = np.full(len(theta), -np.inf)
        if inside.any():
            out[inside] = self._log_pdf_interpolator()(theta[inside])
        return out

    def upsampled(self, factor: int) -> GridPosterior:
        """The same posterior on cells ``factor`` times smaller per axis, its log density
        interpolated (cubic) from the evaluated cells: moments, quantiles, HPD levels and
        draws then no longer carry the cell size of the evaluations."""
        if factor <= 1:
            return self
        interp = self._log_pdf_interpolator()
        axes = []
        for a, h in zip(self.axes, self.steps, strict=True):
            edges = np.linspace(a[0] - h / 2, a[-1] + h / 2, len(a) * factor + 1)
            axes.append(0.5 * (edges[1:] + edges[:-1]))
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        log_density = interp(pts).reshape(len(axes[0]), len(axes[1]))
        return GridPosterior((axes[0], axes[1]), log_density, self.n_evaluations,
                             list(self.passes), self.edge_mass)  # fmt: skip

    def credibility(self, theta: np.ndarray) -> np.ndarray:
        """Credibility level of the smallest highest-density region that contains each
        point of theta (B, 2): the posterior mass of the cells denser than the point (1
        outside the grid). Calibrated posteriors give levels uniform on [0, 1]."""
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = self._inside(theta)
        lp = np.where(inside, self._log_pdf_interpolator()(theta), np.inf)
        w = self.weights.ravel()
        with np.errstate(divide="ignore"):
            cell_lp = np.log(w) - np.log(np.prod(self.steps))
        order = np.argsort(cell_lp)
        sorted_lp, tail = cell_lp[order], np.cumsum(w[order][::-1])[::-1]
        idx = np.searchsorted(sorted_lp, lp, side="right")
        mass = np.where(idx < len(w), tail[np.minimum(idx, len(w) - 1)], 0.0)
        return np.where(inside, mass, 1.0)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n draws (n, 2): cells chosen by mass, positions uniform within the cell."""
        rng = np.random.default_rng(seed)
        w = self.weights.ravel()
        cells = rng.choice(w.size, size=n, p=w)
        i, j = np.unravel_index(cells, self.log_density.shape)
        centre = np.stack([self.axes[0][i], self.axes[1][j]], axis=-1)
        return centre + (rng.random((n, 2)) - 0.5) * self.steps


def _cells(low: np.ndarray, high: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    edges = [np.linspace(low[j], high[j], n + 1) for j in range(2)]
    return tuple(0.5 * (e[1:] + e[:-1]) for e in edges)  # type: ignore[return-value]


def grid_posterior(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    box: PriorBox,
    *,
    n_coarse: int = 8,
    n_fine: int = 12,
    tol: float = 1e-4,
    max_passes: int = 5,
    batch: int = 4096,
    upsample: int = 8,
) -> GridPosterior:
    """Tabulate a posterior adaptively.

    Parameters
    ----------
    log_density
        Batched log posterior: theta (B, 2) float64 tensor -> (B,), -inf allowed.
    box
        The prior box; the coarse pass covers it.
    n_coarse, n_fine
        Cells per axis of the coarse pass and of every refinement.
    tol
        Posterior mass allowed outside a refined box.
    max_passes
        Refinements at most.
    batch
        theta points per call of ``log_density``.
    upsample
        The result is tabulated on cells this many times smaller per axis, the log density
        interpolated (cubic) between the evaluated cells (:meth:`GridPosterior.upsampled`).
    """
    if n_coarse < 4 or n_fine < 4:
        raise InputError("grids need at least 4 cells per axis")
    low, high = np.asarray(box.low, float), np.asarray(box.high, float)
    total = 0
    passes: list[dict] = []

    def evaluate(axes: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        nonlocal total
        theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        out = []
        with torch.no_grad():
            for i in range(0, len(theta), batch):
                out.append(log_density(torch.as_tensor(theta[i : i + batch])).double().numpy())
        total += len(theta)
        return np.concatenate(out).reshape(len(axes[0]), len(axes[1]))

    axes = _cells(low, high, n_coarse)
    result = GridPosterior(axes, evaluate(axes), 0)
    passes.append({"low": low.tolist(), "high": high.tolist(), "cells": n_coarse})
    lo, hi = low, high
    for _ in range(max_passes):
        w = result.weights
        order = np.argsort(w.ravel())[::-1]
        keep = order[: np.searchsorted(np.cumsum(w.ravel()[order]), 1 - tol) + 1]
        i, j = np.unravel_index(keep, w.shape)
        h = result.steps
        new_lo = np.maximum(np.array([axes[0][i.min()], axes[1][j.min()]]) - 1.5 * h, low)
        new_hi = np.minimum(np.array([axes[0][i.max()], axes[1][j.max()]]) + 1.5 * h, high)
        shrink = (new_hi - new_lo) / (hi - lo)
        if np.all(shrink > 0.7) and len(axes[0]) == n_fine:
            break
        lo, hi = new_lo, new_hi
        axes = _cells(lo, hi, n_fine)
        result = GridPosterior(axes, evaluate(axes), 0)
        passes.append({"low": lo.tolist(), "high": hi.tolist(), "cells": n_fine})
    # mass in the outer ring of cells, except where the ring lies on the prior boundary
    w = result.weights
    ring = np.zeros_like(w, dtype=bool)
    h = result.steps
    if lo[0] > low[0] + 1e-12 * h[0]:
        ring[0, :] = True
    if hi[0] < high[0] - 1e-12 * h[0]:
        ring[-1, :] = True
    if lo[1] > low[1] + 1e-12 * h[1]:
        ring[:, 0] = True
    if hi[1] < high[1] - 1e-12 * h[1]:
        ring[:, -1] = True
    result.n_evaluations = total
    result.passes = passes
    result.edge_mass = float(w[ring].sum())
    return result.upsampled(upsample)
