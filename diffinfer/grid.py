"""Grid marginalisation of a 2D posterior: aligned with the posterior, or adaptive.

Two ways to tabulate, one result type (:class:`GridPosterior`):

- **aligned** (when a locator is given): a locator finds the posterior's centre and
  covariance from the likelihood itself (e.g. Gauss-Newton on the diffusion likelihood,
  :meth:`diffinfer.likelihood.DiffusionLikelihood.locate`); the posterior is then tabulated on
  an ``n_aligned``² grid in the whitened coordinates u of that Gaussian (theta = origin +
  basis @ u), over ``radius`` standard deviations along its principal axes. Checks on the
  tabulated density decide whether that grid holds the posterior: mass on its outer ring
  (one re-grid from the measured moments, then a fallback), the prior edge within reach,
  more than one mode, or a failed locator: each falls back to the adaptive grid and says why.
- **adaptive**: a coarse pass covers the whole box; each refinement re-grids the smallest box
  (padded by one cell) that holds all but ``tol`` of the posterior mass found so far, until
  the box stops shrinking.

Nothing is centred on a known truth: the grid follows the posterior alone. The result
integrates the posterior cell by cell (value at the cell centre times cell area) and gives
marginals, the mode, quantiles, highest-posterior-density levels and samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffinfer.errors import InputError
from diffinfer.parameters import PriorBox
from diffinfer.validation import check_float, check_int


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
    origin, basis
        The grid's frame: a cell centre u on the axes is the point theta = origin + basis @ u.
        None for both: the axes are theta itself (the adaptive grid).
    strategy
        ``"aligned"`` or ``"adaptive"``; ``fallback`` says why an aligned grid was not used.
    """

    axes: tuple[np.ndarray, np.ndarray]
    log_density: np.ndarray
    n_evaluations: int
    passes: list[dict] = field(default_factory=list)
    edge_mass: float = 0.0
    origin: np.ndarray | None = None
    basis: np.ndarray | None = None
    strategy: str = "adaptive"
    fallback: str | None = None
    support: PriorBox | None = None
    base: GridPosterior | None = None
    """The evaluated grid this one was interpolated from (:meth:`upsampled`), else None."""
    mc_error: dict | None = None
    """The Monte Carlo error of the tabulated posterior, where its log density is a Monte
    Carlo estimate (set by :class:`~diffinfer.posterior.Posterior`; see
    :mod:`diffinfer.mc_error`)."""

    def _in_support(self, theta: np.ndarray) -> np.ndarray:
        """Whether points theta (..., 2) lie in the support box (all True without one)."""
        if self.support is None:
            return np.ones(theta.shape[:-1], bool)
        return np.asarray(self.support.contains(theta), bool)

    @property
    def steps(self) -> np.ndarray:
        """Cell widths (2,) along the grid axes (in u for an aligned grid)."""
        return np.array([a[1] - a[0] if len(a) > 1 else 1.0 for a in self.axes])

    @property
    def aligned(self) -> bool:
        """Whether the grid axes are a rotated, scaled frame rather than theta itself."""
        return self.basis is not None

    def _to_theta(self, u: np.ndarray) -> np.ndarray:
        return u if self.basis is None else self.origin + u @ self.basis.T

    def _to_u(self, theta: np.ndarray) -> np.ndarray:
        if self.basis is None:
            return theta
        return (theta - self.origin) @ np.linalg.inv(self.basis).T

    def _log_jacobian(self) -> float:
        """log |d theta / d u|: densities in u and in theta differ by this constant."""
        return 0.0 if self.basis is None else float(np.log(abs(np.linalg.det(self.basis))))

    def diagnostics(self) -> dict:
        """Evaluations, strategy (and any fallback reason), passes and edge mass."""
        out = {"n_evaluations": self.n_evaluations, "strategy": self.strategy,
               "fallback": self.fallback, "passes": self.passes,
               "edge_mass": self.edge_mass}  # fmt: skip
        if self.mc_error is not None:
            out["mc_error"] = self.mc_error
        return out

    @property
    def weights(self) -> np.ndarray:
        """Posterior mass of every cell, (n_x, n_y), summing to 1."""
        finite = np.isfinite(self.log_density)
        if self.support is not None:
            finite &= self._in_support(self._centres())
        if not finite.any():
            raise InputError("the posterior is zero everywhere on the grid")
        w = np.where(finite, np.exp(self.log_density - self.log_density[finite].max()), 0.0)
        return w / w.sum()

    def cell_centres(self) -> np.ndarray:
        """Cell centres in theta, (n_x, n_y, 2), in the order of :attr:`weights`."""
        return self._centres()

    def _centres(self) -> np.ndarray:
        """Cell centres in theta, (n_x, n_y, 2)."""
        u = np.stack(np.meshgrid(*self.axes, indexing="ij"), -1)
        return self._to_theta(u)

    def marginal(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Bin centres and the marginal density of parameter j (integrates to 1).

        On the adaptive grid the bins are the cells; on an aligned grid, the cell masses
        are binned by their centres' theta_j into as many bins as the grid has cells per axis.
        """
        if not self.aligned:
            mass = self.weights.sum(axis=1 - j)
            return self.axes[j], mass / self.steps[j]
        x = self._centres()[..., j].ravel()
        n = max(len(a) for a in self.axes)
        edges = np.linspace(x.min(), x.max(), n + 1)
        mass, _ = np.histogram(x, bins=edges, weights=self.weights.ravel())
        return 0.5 * (edges[1:] + edges[:-1]), mass / (edges[1] - edges[0])

    def _moments_u(self) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights
        x, y = np.meshgrid(*self.axes, indexing="ij")
        m = np.array([np.sum(w * x), np.sum(w * y)])
        dx, dy = x - m[0], y - m[1]
        c = np.array([[np.sum(w * dx * dx), np.sum(w * dx * dy)],
                      [np.sum(w * dx * dy), np.sum(w * dy * dy)]])  # fmt: skip
        return m, c + np.diag(self.steps**2 / 12)

    def mean(self) -> np.ndarray:
        """Posterior mean (2,)."""
        return self._to_theta(self._moments_u()[0])

    def cov(self) -> np.ndarray:
        """Posterior covariance (2, 2), with the within-cell (uniform) variance."""
        c = self._moments_u()[1]
        return c if self.basis is None else self.basis @ c @ self.basis.T

    def mode(self) -> np.ndarray:
        """The cell centre of highest density (2,)."""
        i, j = np.unravel_index(np.nanargmax(self.log_density), self.log_density.shape)
        return self._to_theta(np.array([self.axes[0][i], self.axes[1][j]]))

    def quantiles(self, j: int, q) -> np.ndarray:
        """Quantiles of parameter j: linear within cells (uniform density per cell) on the
        adaptive grid; on an aligned grid, from the cumulative mass of the cell centres
        ordered by theta_j (midpoint rule, linear in between)."""
        if self.aligned:
            x = self._centres()[..., j].ravel()
            order = np.argsort(x)
            w = self.weights.ravel()[order]
            cdf = np.cumsum(w) - 0.5 * w
            return np.interp(np.asarray(q), cdf, x[order])
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

        cell_lp = self._cell_log_pdf(masked=False)
        floor = np.where(np.isfinite(cell_lp), cell_lp, np.nan)
        floor = np.where(np.isnan(floor), np.nanmin(floor) - 50.0, floor)
        method = "cubic" if min(floor.shape) >= 4 else "linear"
        interp = RegularGridInterpolator(self.axes, floor, method=method, bounds_error=False,
                                         fill_value=None)  # fmt: skip
        self.__dict__["_interpolator"] = (self.log_density, interp)
        return interp

    def _cell_log_pdf(self, masked: bool = True) -> np.ndarray:
        """Normalised log density in theta at the cell centres (n_x, n_y); ``masked=False``
        keeps the (filled) values of cells outside the support for interpolation."""
        valid = np.isfinite(self.log_density)
        if self.support is not None:
            valid &= self._in_support(self._centres())
        if not valid.any():
            raise InputError("the posterior is zero everywhere on the grid")
        out = self.log_density - self._log_norm(valid)
        return np.where(valid, out, -np.inf) if masked else out

    def _log_norm(self, valid: np.ndarray) -> float:
        """log of the integral over theta of exp(log_density) (cells ``valid``)."""
        peak = self.log_density[valid].max()
        log_z = peak + np.log(np.sum(np.exp(self.log_density[valid] - peak)))
        return float(log_z + np.log(np.prod(self.steps)) + self._log_jacobian())

    def log_density_at(self, theta: np.ndarray) -> np.ndarray:
        """The evaluated (unnormalised) log density at points theta (B, 2), interpolated
        (cubic) between the evaluated cells, on the scale of the function the grid tabulated
        (log prior + log likelihood): what samplers report as ``lp``; -inf off the grid."""
        grid = self.base or self
        valid = np.isfinite(grid.log_density) & grid._in_support(grid._centres())
        return grid.log_pdf(theta) + grid._log_norm(valid)

    def _inside(self, theta: np.ndarray) -> np.ndarray:
        """Whether points theta (B, 2) lie on the tabulated grid."""
        theta = self._to_u(theta)
        half = self.steps / 2
        low = np.array([a[0] for a in self.axes]) - half
        high = np.array([a[-1] for a in self.axes]) + half
        return np.all((theta >= low) & (theta <= high), axis=-1)

    def log_pdf(self, theta: np.ndarray) -> np.ndarray:
        """Normalised log density at points theta (B, 2) (or (2,)), interpolated (cubic)
        between cell centres; -inf outside the tabulated grid."""
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = self._inside(theta) & self._in_support(theta)
        out = np.full(len(theta), -np.inf)
        if inside.any():
            out[inside] = self._log_pdf_interpolator()(self._to_u(theta[inside]))
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
        log_density = interp(pts)
        log_density[~self._in_support(self._to_theta(pts))] = -np.inf
        log_density = log_density.reshape(len(axes[0]), len(axes[1]))
        return GridPosterior((axes[0], axes[1]), log_density, self.n_evaluations,
                             list(self.passes), self.edge_mass, self.origin, self.basis,
                             self.strategy, self.fallback, self.support, base=self,
                             mc_error=self.mc_error)  # fmt: skip

    def evaluated_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The cell centres of the evaluated grid (before any upsampling) in theta, (P, 2),
        and whether each lies in the support (its log density is an evaluation, not the fill
        beyond the prior edge), (P,)."""
        grid = self.base or self
        pts = grid._centres().reshape(-1, 2)
        return pts, grid._in_support(pts)

    def retabulated(self, values: np.ndarray, n_evaluations: int, upsample: int,
                    box: PriorBox) -> GridPosterior:  # fmt: skip
        """The same evaluated grid with new log-density values at its points in the support
        (``values`` (P,), in the order of :meth:`evaluated_points`; those beyond the support
        are ignored and refilled as the aligned grid fills them), its outer-ring mass
        recomputed (except on sides that lie on the prior ``box``), upsampled by
        ``upsample``."""
        grid = self.base or self
        shape = grid.log_density.shape
        _, inside = self.evaluated_points()
        lp = np.where(inside, values, -np.inf).reshape(shape)
        if grid.aligned and not inside.all():
            u = np.stack(np.meshgrid(*grid.axes, indexing="ij"), -1)
            lp = _fill_beyond_edge(u, lp)
        new = GridPosterior(grid.axes, lp, n_evaluations, list(grid.passes), 0.0, grid.origin,
                            grid.basis, grid.strategy, grid.fallback, grid.support)  # fmt: skip
        w = new.weights
        new.edge_mass = float(w[_ring(grid, box)].sum())
        return new.upsampled(upsample)

    def credibility(self, theta: np.ndarray) -> np.ndarray:
        """Credibility level of the smallest highest-density region that contains each
        point of theta (B, 2): the posterior mass of the cells denser than the point (1
        outside the grid). Calibrated posteriors give levels uniform on [0, 1]."""
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = self._inside(theta) & self._in_support(theta)
        lp = np.where(inside, self._log_pdf_interpolator()(self._to_u(theta)), np.inf)
        w = self.weights.ravel()
        cell_lp = self._cell_log_pdf().ravel()
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
        theta = self._to_theta(centre + (rng.random((n, 2)) - 0.5) * self.steps)
        if self.support is not None:  # a cell cut by the support's edge keeps its draws in it
            theta = np.clip(theta, self.support.low, self.support.high)
        return theta


def _cells(low: np.ndarray, high: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    edges = [np.linspace(low[j], high[j], n + 1) for j in range(2)]
    return tuple(0.5 * (e[1:] + e[:-1]) for e in edges)  # type: ignore[return-value]


class LocateError(RuntimeError):
    """A locator could not find the posterior (the grid falls back to the adaptive one)."""


class EdgeError(LocateError):
    """The posterior has mass at the prior edge: a grid aligned with the box serves better."""


Locator = Callable[[], tuple[np.ndarray, np.ndarray, int]]
"""A locator returns the posterior's centre (2,), its covariance (2, 2) and the log-density
evaluations it spent, or raises :class:`LocateError` naming the cause."""


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
    locate: Locator | None = None,
    n_aligned: int = 8,
    radius: float = 4.5,
) -> GridPosterior:
    """Tabulate a posterior: on a grid aligned with it when ``locate`` is given, else (or
    when the aligned grid does not hold it) adaptively over the prior box.

    Parameters
    ----------
    log_density
        Batched log posterior: theta (B, 2) float64 tensor -> (B,), -inf allowed.
    box
        The prior box; the coarse pass of the adaptive grid covers it.
    n_coarse, n_fine
        Adaptive grid: cells per axis of the coarse pass and of every refinement.
    tol
        Adaptive grid: posterior mass allowed outside a refined box.
    max_passes
        Adaptive grid: refinements at most.
    batch
        theta points per call of ``log_density``.
    upsample
        The result is tabulated on cells this many times smaller per axis, the log density
        interpolated (cubic) between the evaluated cells (:meth:`GridPosterior.upsampled`).
    locate
        A :data:`Locator`: centre and covariance of the posterior. With one, the posterior
        is first tabulated on the aligned grid (module docstring).
    n_aligned
        Aligned grid: cells per axis.
    radius
        Aligned grid: half-width in standard deviations along each principal axis.
    """
    _check_grid_options(n_coarse=n_coarse, n_fine=n_fine, tol=tol, max_passes=max_passes,
                        batch=batch, upsample=upsample, n_aligned=n_aligned,
                        radius=radius)  # fmt: skip
    counter = _Counter(log_density, batch)
    fallback = None
    if locate is not None:
        centre = cov = None
        try:
            centre, cov, spent = locate()
            counter.total += int(spent)
            centre, cov = np.asarray(centre, float), np.asarray(cov, float)
            result = _aligned(counter, box, centre, cov, n_aligned, radius)
            return result.upsampled(upsample)
        except EdgeError as exc:
            # a box aligned with the prior's axes about the located posterior (radius sd,
            # cut by the prior), re-grown once from its measured moments if too small
            fallback = str(exc)
            centre = np.clip(centre, box.low, box.high)
            sd = np.sqrt(np.diag(cov))
            for cells in (n_aligned, n_fine):
                start = PriorBox(tuple(np.maximum(centre - radius * sd, box.low)),
                                 tuple(np.minimum(centre + radius * sd, box.high)))  # fmt: skip
                result = _adaptive(counter, box, cells, cells, tol, max_passes, start=start)
                if result.edge_mass <= EDGE_TOL:
                    result.strategy, result.fallback = "located box", fallback
                    return result.upsampled(upsample)
                centre, sd = result.mean(), 1.5 * np.sqrt(np.diag(result.cov()))
            fallback += f"; mass {result.edge_mass:.2g} on the edge of the located box"
        except LocateError as exc:
            fallback = str(exc)
        warnings.warn(f"aligned grid not used: {fallback}; using the adaptive grid",
                      stacklevel=3)  # fmt: skip
    result = _adaptive(counter, box, n_coarse, n_fine, tol, max_passes)
    result.fallback = fallback
    return result.upsampled(upsample)


def _check_grid_options(**opts) -> None:
    """Validate the grid options in one place (errors name the option and the range)."""
    for name in ("n_coarse", "n_fine", "n_aligned"):
        check_int(name, opts[name], low=4, what="cells per axis")
    for name in ("batch", "upsample"):
        check_int(name, opts[name], low=1)
    check_int("max_passes", opts["max_passes"], low=0)
    check_float("tol", opts["tol"], low=0, high=1, low_open=True, high_open=True,
                what="posterior mass")  # fmt: skip
    check_float("radius", opts["radius"], low=2, high=10, what="standard deviations")


class _Counter:
    """Evaluates a batched log density on theta points and counts the evaluations."""

    def __init__(self, log_density: Callable[[torch.Tensor], torch.Tensor], batch: int):
        self.log_density, self.batch, self.total = log_density, int(batch), 0

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(theta), self.batch):
                chunk = torch.as_tensor(theta[i : i + self.batch])
                out.append(self.log_density(chunk).double().numpy())
        self.total += len(theta)
        return np.concatenate(out)


EDGE_TOL = 1e-2
"""Aligned grid: largest posterior mass allowed on the outer ring of cells (a Gaussian puts
1.5e-3 there at the default radius of 4.5 sigma with 8 cells, 5e-3 when it is 1.1 times wider
than located, 1.4e-2 when 1.2 times; the mass beyond the grid is about a fifth of the
ring's)."""


def _aligned(counter: _Counter, box: PriorBox, centre: np.ndarray, cov: np.ndarray,
             n: int, radius: float) -> GridPosterior:  # fmt: skip
    """Tabulate on an n x n grid in the whitened frame of (centre, cov); one re-grid from the
    measured moments if the first does not hold the posterior; LocateError otherwise.

    Where the prior edge cuts the grid, the points beyond it (log density -inf) are filled
    (:func:`_fill_beyond_edge`) for the interpolation only, and the tabulated
    posterior is cut at the edge (:attr:`GridPosterior.support`), cell by cell after
    upsampling.
    """
    passes: list[dict] = []
    for attempt in range(2):
        if not (np.all(np.isfinite(centre)) and np.all(np.isfinite(cov))):
            raise LocateError("the located centre or covariance is not finite")
        evals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        if evals.min() <= 0:
            raise LocateError("the located covariance is not positive definite")
        if not bool(box.contains(centre)):
            raise EdgeError(f"the likelihood peaks outside the prior box (at "
                              f"{np.round(centre, 4).tolist()})")  # fmt: skip
        basis = vecs * np.sqrt(evals)  # columns: principal axes scaled to 1 sigma
        axes = _cells(np.full(2, -radius), np.full(2, radius), n)
        u = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        theta = centre + u.reshape(-1, 2) @ basis.T
        inside = np.asarray(box.contains(theta), bool)
        if not inside.all():  # predict from the located Gaussian before spending evaluations
            _check_edge(np.where(inside, -0.5 * np.sum(u.reshape(-1, 2) ** 2, -1),
                                 -np.inf).reshape(n, n))  # fmt: skip
        values = np.full(len(theta), -np.inf)
        if inside.any():
            values[inside] = counter(theta[inside])
        log_density = values.reshape(n, n)
        passes.append({"centre": centre.tolist(), "cov": cov.tolist(), "cells": n,
                       "radius": radius})  # fmt: skip
        finite = np.isfinite(log_density)
        if finite.sum() < 12:
            raise LocateError("fewer than 12 points of the aligned grid have a finite density")
        if (~finite & inside.reshape(n, n)).any():
            raise LocateError("the log density is -inf inside the prior box")
        peaks = _local_maxima(log_density)
        if peaks > 1:
            raise LocateError(f"the posterior is not unimodal ({peaks} local maxima on the "
                              "aligned grid)")  # fmt: skip
        if not finite.all():
            _check_edge(log_density)
        filled = log_density if finite.all() else _fill_beyond_edge(u, log_density)
        result = GridPosterior(axes, filled, counter.total, passes, 0.0, centre, basis,
                               "aligned", support=box)  # fmt: skip
        w = result.weights
        ring = np.zeros((n, n), bool)
        ring[[0, -1], :] = ring[:, [0, -1]] = True
        result.edge_mass = float(w[ring].sum())
        c_u = result._moments_u()[1]
        sd_u = np.sqrt(np.diag(c_u))
        too_narrow = np.any(sd_u < 0.6 * result.steps)
        if result.edge_mass <= EDGE_TOL and not too_narrow:
            return result
        if attempt == 0:  # re-grid once from what this grid measured
            centre, cov = result.mean(), result.cov()
            if result.edge_mass > EDGE_TOL:
                cov = cov * 1.2**2  # the truncated grid underestimates the width
    reason = (f"posterior mass {result.edge_mass:.2g} on the outer ring of the aligned grid"
              if result.edge_mass > EDGE_TOL else
              "the posterior is narrower than the aligned grid's cells")  # fmt: skip
    raise LocateError(reason + " after a re-grid")


def _neighbours(a: np.ndarray, pad: float) -> list[tuple[tuple[int, int], np.ndarray]]:
    """The 8 neighbours of every cell of a 2D array, as ((di, dj), shifted array) pairs;
    cells beyond the border read ``pad``."""
    n_x, n_y = a.shape
    padded = np.pad(a, 1, constant_values=pad)
    return [((di, dj), padded[1 + di : 1 + di + n_x, 1 + dj : 1 + dj + n_y])
            for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]  # fmt: skip


def _check_edge(log_density: np.ndarray) -> None:
    """EdgeError if the cells next to the -inf ones (beyond the prior edge) hold more than
    EDGE_TOL of the mass: the edge cuts the posterior, not only its far tails."""
    finite = np.isfinite(log_density)
    lp = np.where(finite, log_density, -np.inf)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    near = np.any([other for _, other in _neighbours(~finite, False)], axis=0)
    if float(w[near & finite].sum()) > EDGE_TOL:
        raise EdgeError("the prior edge cuts the posterior")


def _fill_beyond_edge(u: np.ndarray, log_density: np.ndarray) -> np.ndarray:
    """log_density with its -inf points (beyond the prior edge, where only the interpolation
    sees them) replaced by the located Gaussian c - |u|^2 / 2 at the level of the finite
    points within 10 nats of the peak, capped by the lowest finite value among their
    neighbours (spread outwards): a fill above the evaluated tail would make the cubic
    interpolation overshoot inside the prior."""
    finite = np.isfinite(log_density)
    near = finite & (log_density > log_density[finite].max() - 10)
    r2 = 0.5 * np.sum(u**2, axis=-1)
    c = float(np.median(log_density[near] + r2[near]))
    cap = np.where(finite, log_density, np.nan)
    while np.isnan(cap).any():
        neighbours = np.stack([other for _, other in _neighbours(cap, np.nan)])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods
            lowest = np.nanmin(neighbours, axis=0)
        cap = np.where(np.isnan(cap), lowest, cap)
    return np.where(finite, log_density, np.minimum(c - r2, cap))


def _local_maxima(log_density: np.ndarray, depth: float = 5.0) -> int:
    """Local maxima (8 neighbours; a plateau of equal values counts once) of a tabulated log
    density within ``depth`` nats of its peak (bumps in the far tail do not count)."""
    lp = np.where(np.isfinite(log_density), log_density, -np.inf)
    is_max = np.ones_like(lp, bool)
    for offset, other in _neighbours(lp, -np.inf):
        # a tie counts once: for the first cell of the pair in raster order
        is_max &= lp >= other if offset > (0, 0) else lp > other
    return int(np.sum(is_max & (lp > lp.max() - depth)))


def _adaptive(counter: _Counter, box: PriorBox, n_coarse: int, n_fine: int, tol: float,
              max_passes: int, start: PriorBox | None = None) -> GridPosterior:  # fmt: skip
    """The adaptive grid over the prior box (module docstring); its first pass covers
    ``start`` (a box inside the prior box) instead of the whole box if given."""
    low, high = np.asarray(box.low, float), np.asarray(box.high, float)
    passes: list[dict] = []

    def evaluate(axes: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        return counter(theta).reshape(len(axes[0]), len(axes[1]))

    lo, hi = (low, high) if start is None else (np.asarray(start.low), np.asarray(start.high))
    axes = _cells(lo, hi, n_coarse)
    result = GridPosterior(axes, evaluate(axes), 0)
    passes.append({"low": lo.tolist(), "high": hi.tolist(), "cells": n_coarse})
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
    result.edge_mass = float(result.weights[_ring(result, box)].sum())
    result.n_evaluations = counter.total
    result.passes = passes
    return result


def _ring(grid: GridPosterior, box: PriorBox) -> np.ndarray:
    """The outer ring of cells of an evaluated grid, (n_x, n_y) bool: all of it on an
    aligned grid; on the adaptive grid, the sides that do not lie on the prior boundary."""
    ring = np.zeros(grid.log_density.shape, bool)
    if grid.aligned:
        ring[[0, -1], :] = ring[:, [0, -1]] = True
        return ring
    low, high = np.asarray(box.low, float), np.asarray(box.high, float)
    h = grid.steps
    lo = np.array([a[0] for a in grid.axes]) - h / 2
    hi = np.array([a[-1] for a in grid.axes]) + h / 2
    if lo[0] > low[0] + 1e-12 * h[0]:
        ring[0, :] = True
    if hi[0] < high[0] - 1e-12 * h[0]:
        ring[-1, :] = True
    if lo[1] > low[1] + 1e-12 * h[1]:
        ring[:, 0] = True
    if hi[1] < high[1] - 1e-12 * h[1]:
        ring[:, -1] = True
    return ring
