"""A 2D posterior tabulated on a grid (:class:`GridPosterior`), in parameters theta or in the
whitened frame u of a located Gaussian (theta = origin + basis @ u).

It integrates the posterior cell by cell (value at the cell centre times cell area) and gives
marginals, the mode, quantiles, highest-posterior-density levels, interpolated densities and
samples. How the grid is chosen is :mod:`diffinfer.inference.gridding`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

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
    Carlo estimate (set by :class:`~diffinfer.inference.posterior.Posterior`; see
    :mod:`diffinfer.inference.mc_error`)."""

    def in_support(self, theta: np.ndarray) -> np.ndarray:
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

    def to_theta(self, u: np.ndarray) -> np.ndarray:
        """Grid coordinates u (..., 2) as parameters theta (the identity unless aligned)."""
        return u if self.basis is None else self.origin + u @ self.basis.T

    def to_u(self, theta: np.ndarray) -> np.ndarray:
        """Parameters theta (..., 2) in grid coordinates u (the identity unless aligned)."""
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
            finite &= self.in_support(self._centres())
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
        return self.to_theta(u)

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
        return self.to_theta(self._moments_u()[0])

    def cov(self) -> np.ndarray:
        """Posterior covariance (2, 2), with the within-cell (uniform) variance."""
        c = self._moments_u()[1]
        return c if self.basis is None else self.basis @ c @ self.basis.T

    def mode(self) -> np.ndarray:
        """The cell centre of highest density (2,)."""
        i, j = np.unravel_index(np.nanargmax(self.log_density), self.log_density.shape)
        return self.to_theta(np.array([self.axes[0][i], self.axes[1][j]]))

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

        cell_lp = self.cell_log_pdf(masked=False)
        floor = np.where(np.isfinite(cell_lp), cell_lp, np.nan)
        floor = np.where(np.isnan(floor), np.nanmin(floor) - 50.0, floor)
        method = "cubic" if min(floor.shape) >= 4 else "linear"
        interp = RegularGridInterpolator(self.axes, floor, method=method, bounds_error=False,
                                         fill_value=None)  # fmt: skip
        self.__dict__["_interpolator"] = (self.log_density, interp)
        return interp

    def cell_log_pdf(self, masked: bool = True) -> np.ndarray:
        """Normalised log density in theta at the cell centres (n_x, n_y); ``masked=False``
        keeps the (filled) values of cells outside the support for interpolation."""
        valid = np.isfinite(self.log_density)
        if self.support is not None:
            valid &= self.in_support(self._centres())
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
        valid = np.isfinite(grid.log_density) & grid.in_support(grid._centres())
        return grid.log_pdf(theta) + grid._log_norm(valid)

    def inside(self, theta: np.ndarray) -> np.ndarray:
        """Whether points theta (B, 2) lie on the tabulated grid."""
        theta = self.to_u(theta)
        half = self.steps / 2
        low = np.array([a[0] for a in self.axes]) - half
        high = np.array([a[-1] for a in self.axes]) + half
        return np.all((theta >= low) & (theta <= high), axis=-1)

    def log_pdf(self, theta: np.ndarray) -> np.ndarray:
        """Normalised log density at points theta (B, 2) (or (2,)), interpolated (cubic)
        between cell centres; -inf outside the tabulated grid."""
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = self.inside(theta) & self.in_support(theta)
        out = np.full(len(theta), -np.inf)
        if inside.any():
            out[inside] = self._log_pdf_interpolator()(self.to_u(theta[inside]))
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
        log_density[~self.in_support(self.to_theta(pts))] = -np.inf
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
        return pts, grid.in_support(pts)

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
            lp = fill_beyond_edge(u, lp)
        new = GridPosterior(grid.axes, lp, n_evaluations, list(grid.passes), 0.0, grid.origin,
                            grid.basis, grid.strategy, grid.fallback, grid.support)  # fmt: skip
        w = new.weights
        new.edge_mass = float(w[outer_ring(grid, box)].sum())
        return new.upsampled(upsample)

    def credibility(self, theta: np.ndarray) -> np.ndarray:
        """Credibility level of the smallest highest-density region that contains each
        point of theta (B, 2): the posterior mass of the cells denser than the point (1
        outside the grid). Calibrated posteriors give levels uniform on [0, 1]."""
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = self.inside(theta) & self.in_support(theta)
        lp = np.where(inside, self._log_pdf_interpolator()(self.to_u(theta)), np.inf)
        w = self.weights.ravel()
        cell_lp = self.cell_log_pdf().ravel()
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
        theta = self.to_theta(centre + (rng.random((n, 2)) - 0.5) * self.steps)
        if self.support is not None:  # a cell cut by the support's edge keeps its draws in it
            theta = np.clip(theta, self.support.low, self.support.high)
        return theta


def fill_beyond_edge(u: np.ndarray, log_density: np.ndarray) -> np.ndarray:
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
        around = np.stack([other for _, other in neighbours(cap, np.nan)])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods
            lowest = np.nanmin(around, axis=0)
        cap = np.where(np.isnan(cap), lowest, cap)
    return np.where(finite, log_density, np.minimum(c - r2, cap))


def outer_ring(grid: GridPosterior, box: PriorBox) -> np.ndarray:
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


def neighbours(a: np.ndarray, pad: float) -> list[tuple[tuple[int, int], np.ndarray]]:
    """The 8 neighbours of every cell of a 2D array, as ((di, dj), shifted array) pairs;
    cells beyond the border read ``pad``."""
    n_x, n_y = a.shape
    padded = np.pad(a, 1, constant_values=pad)
    return [((di, dj), padded[1 + di : 1 + di + n_x, 1 + dj : 1 + dj + n_y])
            for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]  # fmt: skip
