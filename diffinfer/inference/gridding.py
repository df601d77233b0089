"""Tabulating a 2D posterior on a grid: aligned with the posterior, or adaptive.

Two ways to tabulate, one result type (:class:`~diffinfer.inference.grid.GridPosterior`):

- **aligned** (when a locator is given): a locator finds the posterior's centre and
  covariance from the likelihood itself (e.g. Gauss-Newton on the diffusion likelihood,
  :meth:`diffinfer.likelihoods.diffusion.DiffusionLikelihood.locate`); the posterior is then
  tabulated on an ``n_aligned``² grid in the whitened coordinates u of that Gaussian
  (theta = origin + basis @ u), over ``radius`` standard deviations along its principal axes.
  Checks on the tabulated density decide whether that grid holds the posterior: mass on its
  outer ring (one re-grid from the measured moments, then a fallback), the prior edge within
  reach, more than one mode, or a failed locator: each falls back to the adaptive grid and
  says why.
- **adaptive**: a coarse pass covers the whole box; each refinement re-grids the smallest box
  (padded by one cell) that holds all but ``tol`` of the posterior mass found so far, until
  the box stops shrinking.

Nothing is centred on a known truth: the grid follows the posterior alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from diffinfer.errors import LocateError
from diffinfer.inference.grid import GridPosterior, fill_beyond_edge, neighbours, outer_ring
from diffinfer.likelihoods.built import Locator
from diffinfer.parameters import PriorBox
from diffinfer.validation import check_bool, check_float, check_int


def _cells(low: np.ndarray, high: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    edges = [np.linspace(low[j], high[j], n + 1) for j in range(2)]
    return tuple(0.5 * (e[1:] + e[:-1]) for e in edges)  # type: ignore[return-value]


class EdgeError(LocateError):
    """The posterior has mass at the prior edge: a grid aligned with the box serves better."""


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
    refine: bool = True,
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
    refine
        Aligned grid: before tabulating, fit a quadratic to the log density itself at
        :data:`REFINE_POINTS` points about the located Gaussian and centre the grid on its
        maximum (:func:`refine_located`); a locator that works on a cheaper, noisier
        version of the likelihood (the diffusion likelihood's plain residuals) can be off
        by about a standard deviation, which costs a re-grid.
    """
    _check_grid_options(n_coarse=n_coarse, n_fine=n_fine, tol=tol, max_passes=max_passes,
                        batch=batch, upsample=upsample, n_aligned=n_aligned,
                        radius=radius)  # fmt: skip
    check_bool("refine", refine)
    counter = _Counter(log_density, batch)
    fallback = None
    if locate is not None:
        centre = cov = None
        try:
            centre, cov, spent = locate()
            counter.total += int(spent)
            centre, cov = np.asarray(centre, float), np.asarray(cov, float)
            located = {"centre": centre.tolist(), "cov": cov.tolist()}
            refined = refine_located(counter, box, centre, cov) if refine else None
            if refined is not None:
                centre, cov = refined
            result = _aligned(counter, box, centre, cov, n_aligned, radius)
            if refined is not None:  # the first pass says where the locator had put it
                result.passes[0]["refined_from"] = located
            return result.upsampled(upsample)
        except EdgeError as exc:
            # a box aligned with the prior's axes about the located posterior (radius sd,
            # cut by the prior), laid out again from its measured moments while its outer
            # ring holds too much (LOCATED_BOX_PASSES)
            fallback = str(exc)
            centre = np.clip(centre, box.low, box.high)
            sd, cells = np.sqrt(np.diag(cov)), n_aligned
            for _ in range(LOCATED_BOX_PASSES):
                start = PriorBox(tuple(np.maximum(centre - radius * sd, box.low)),
                                 tuple(np.minimum(centre + radius * sd, box.high)))  # fmt: skip
                result = _adaptive(counter, box, cells, cells, tol, max_passes, start=start)
                if result.edge_mass <= EDGE_TOL:
                    result.strategy, result.fallback = "located box", fallback
                    return result.upsampled(upsample)
                # the truncated grid underestimates the width, the more the more it cut
                far = result.edge_mass > LOCATED_BOX_FAR
                widen, cells = (LOCATED_BOX_FAR_WIDEN, n_fine) if far else (REGRID_WIDEN, n_aligned)
                centre, sd = result.mean(), widen * np.sqrt(np.diag(result.cov()))
            fallback += f"; mass {result.edge_mass:.2g} on the edge of the located box"
        except LocateError as exc:
            fallback = str(exc)
        warnings.warn(f"aligned grid not used: {fallback}; using the adaptive grid",
                      stacklevel=3)  # fmt: skip
    result = _adaptive(counter, box, n_coarse, n_fine, tol, max_passes)
    result.fallback = fallback
    return result.upsampled(upsample)


def _principal_basis(cov: np.ndarray) -> np.ndarray | None:
    """The principal axes of a covariance scaled to 1 sigma (columns; theta = centre +
    basis @ u whitens it), or None when it is not positive definite."""
    evals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    if not (np.all(np.isfinite(evals)) and evals.min() > 0):
        return None
    return vecs * np.sqrt(evals)


REFINE_STEP = 1.5
""":func:`refine_located`: distance of its design points from the located centre, in located
standard deviations (whitened units)."""

REFINE_POINTS = 6
"""Evaluations :func:`refine_located` spends: the centre, two more points along each
principal axis, one off the axes (a full quadratic in two dimensions)."""

REFINE_MAX_MOVE = 3.0
"""Largest move of the centre :func:`refine_located` accepts, in located sd; a larger one
means the quadratic does not describe the density there, and the located Gaussian stays."""

REFINE_MAX_RESCALE = 2.0
"""Largest factor by which :func:`refine_located` may change a principal sd."""


def _refine_design(centre: np.ndarray, basis: np.ndarray, box: PriorBox) -> np.ndarray | None:
    """The :data:`REFINE_POINTS` design points of :func:`refine_located` in the whitened
    frame u (theta = centre + basis @ u), all inside the prior box, or None.

    Preferred: u = 0, +-h e_1, +-h e_2 and (h, h) / sqrt(2), h = :data:`REFINE_STEP`. Near the
    prior edge a point beyond it is replaced by one on the other side: +h e_j by -2h e_j (two
    points on one side still fix the curvature along that axis), the diagonal point by the
    first of its sign flips inside the box. Any such choice fixes the quadratic exactly.
    """
    h, d = REFINE_STEP, REFINE_STEP / np.sqrt(2.0)
    e1, e2 = np.array([h, 0.0]), np.array([0.0, h])
    diagonal = [np.array([d, d]), np.array([d, -d]), np.array([-d, d]), np.array([-d, -d])]
    options = [[np.zeros(2)], [e1, -2 * e1], [-e1, 2 * e1], [e2, -2 * e2], [-e2, 2 * e2],
               diagonal]  # fmt: skip
    design = []
    for choices in options:
        u = np.array(choices)
        inside = np.asarray(box.contains(centre + u @ basis.T), bool)
        if not inside.any():
            return None
        design.append(u[np.argmax(inside)])
    return np.array(design)


def refine_located(
    counter: Callable[[np.ndarray], np.ndarray], box: PriorBox, centre: np.ndarray, cov: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The maximum and curvature of the log density near a located Gaussian (centre, cov):
    a quadratic through :data:`REFINE_POINTS` evaluations of the density itself.

    In the whitened frame u of the located Gaussian (theta = centre + basis @ u), the
    points are u = 0, +-h e_1, +-h e_2 and (h, h) / sqrt(2) with h = :data:`REFINE_STEP`,
    replaced near the prior edge by points on the other side (:func:`_refine_design`);
    they determine the quadratic c + g.u + u'Hu / 2 exactly. Returns the new centre and
    covariance (-H^-1, mapped back), or None, keeping the located Gaussian, when no such
    design fits inside the prior box or a density is not finite, H is not negative definite,
    the maximum lies more than :data:`REFINE_MAX_MOVE` sd away or outside the prior box, or
    a principal sd would change by more than :data:`REFINE_MAX_RESCALE` times.
    """
    basis = _principal_basis(cov)
    if basis is None:
        return None
    u = _refine_design(centre, basis, box)
    if u is None:
        return None
    f = counter(centre + u @ basis.T)
    if not np.all(np.isfinite(f)):
        return None
    # f = c + g1 u1 + g2 u2 + h11 u1^2 / 2 + h22 u2^2 / 2 + h12 u1 u2, solved exactly
    a = np.stack([np.ones(len(u)), u[:, 0], u[:, 1], 0.5 * u[:, 0] ** 2, 0.5 * u[:, 1] ** 2,
                  u[:, 0] * u[:, 1]], axis=1)  # fmt: skip
    _, g1, g2, h11, h22, h12 = np.linalg.solve(a, f)
    g = np.array([g1, g2])
    hess = np.array([[h11, h12], [h12, h22]])
    curv = np.linalg.eigvalsh(hess)
    if not (np.all(np.isfinite(curv)) and curv.max() < 0):
        return None
    cov_u = np.linalg.inv(-hess)
    move = cov_u @ g
    scale = np.sqrt(np.linalg.eigvalsh(cov_u))
    if np.linalg.norm(move) > REFINE_MAX_MOVE or not (
        1 / REFINE_MAX_RESCALE <= scale.min() and scale.max() <= REFINE_MAX_RESCALE
    ):
        return None
    new_centre = centre + basis @ move
    if not bool(box.contains(new_centre)):
        return None
    return new_centre, basis @ cov_u @ basis.T


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


REGRID_WIDEN = 1.2
"""A grid laid out again because its outer ring held more than :data:`EDGE_TOL` takes the
measured standard deviations times this (the truncated grid underestimates them)."""

LOCATED_BOX_PASSES = 3
"""Located box: passes at most, each from the previous one's measured moments, before the
adaptive grid over the whole prior box takes over."""

LOCATED_BOX_FAR, LOCATED_BOX_FAR_WIDEN = 0.05, 1.5
"""Located box: a pass whose outer ring held more than LOCATED_BOX_FAR of the mass was far
too small, and its measured sd far too narrow: the next pass widens them by
LOCATED_BOX_FAR_WIDEN (else :data:`REGRID_WIDEN`) with ``n_fine`` cells per axis, so that
its cells stay about as fine (else ``n_aligned``). A Gaussian cut by the edge and located
2x too narrow leaves 9 % on the first pass's ring (tests/test_fast_posterior.py)."""

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
    (:func:`fill_beyond_edge`) for the interpolation only, and the tabulated
    posterior is cut at the edge (:attr:`GridPosterior.support`), cell by cell after
    upsampling.
    """
    passes: list[dict] = []
    for attempt in range(2):
        if not (np.all(np.isfinite(centre)) and np.all(np.isfinite(cov))):
            raise LocateError("the located centre or covariance is not finite")
        basis = _principal_basis(cov)
        if basis is None:
            raise LocateError("the located covariance is not positive definite")
        if not bool(box.contains(centre)):
            raise EdgeError(f"the likelihood peaks outside the prior box (at "
                              f"{np.round(centre, 4).tolist()})")  # fmt: skip
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
        filled = log_density if finite.all() else fill_beyond_edge(u, log_density)
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
                cov = cov * REGRID_WIDEN**2  # the truncated grid underestimates the width
    reason = (f"posterior mass {result.edge_mass:.2g} on the outer ring of the aligned grid"
              if result.edge_mass > EDGE_TOL else
              "the posterior is narrower than the aligned grid's cells")  # fmt: skip
    raise LocateError(reason + " after a re-grid")


def _check_edge(log_density: np.ndarray) -> None:
    """EdgeError if the cells next to the -inf ones (beyond the prior edge) hold more than
    EDGE_TOL of the mass: the edge cuts the posterior, not only its far tails."""
    finite = np.isfinite(log_density)
    lp = np.where(finite, log_density, -np.inf)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    near = np.any([other for _, other in neighbours(~finite, False)], axis=0)
    if float(w[near & finite].sum()) > EDGE_TOL:
        raise EdgeError("the prior edge cuts the posterior")


def _local_maxima(log_density: np.ndarray, depth: float = 5.0) -> int:
    """Local maxima (8 neighbours; a plateau of equal values counts once) of a tabulated log
    density within ``depth`` nats of its peak (bumps in the far tail do not count)."""
    lp = np.where(np.isfinite(log_density), log_density, -np.inf)
    is_max = np.ones_like(lp, bool)
    for offset, other in neighbours(lp, -np.inf):
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
    result.edge_mass = float(result.weights[outer_ring(result, box)].sum())
    result.n_evaluations = counter.total
    result.passes = passes
    return result
