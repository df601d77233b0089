"""The Monte Carlo error control of a posterior over a stochastic likelihood.

The diffusion likelihood is an importance-sampled estimate; :class:`MonteCarloControl` (a base
of :class:`~diffinfer.inference.posterior.Posterior`) estimates the error it leaves in the
posterior's mean and width (:mod:`diffinfer.inference.mc_error`), and adds timesteps where the
posterior is until the error is below the tolerance or the budget is spent: fitted quadratics
about the posterior where they settle, the grid itself where they do not (docs/posterior.md).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from diffinfer.inference.grid import GridPosterior
from diffinfer.inference.gridding import EDGE_TOL, grid_posterior
from diffinfer.inference.mc_error import QuadraticTerms, design_points, posterior_mc_error
from diffinfer.inference.options import SAMPLER_OPTIONS, sampler_option
from diffinfer.parameters import as_theta

ROUND_GROWTH = 4
"""A round of added timesteps grows the likelihood's timesteps at most this many times."""
GROSS_MOVE, GROSS_NARROWING = 2.5, 0.35
"""A round whose posterior mean lies this many of its design's marginal sd from the
design's centre, or whose marginal sd is this much narrower, ends the refinement unsettled:
the first round of the N-body maps that never settle (docs/nbody.md). It also stops a few
log-normal maps whose 8-timestep error is about 1 sd (2 of 18 at Omega_m < 0.2,
docs/posterior.md): the move allowed should grow with the previous stage's error."""
DIRECT_MAX_FACTOR = 16
"""Where the fitted terms do not settle, the added timesteps are evaluated on the grid itself
(:meth:`Posterior._direct_rounds`), up to this many times the starting timesteps (128 from
8): each costs a network call per grid point."""
FIT_RESIDUAL_MAX = 0.3
"""The largest lack of fit of a round's fitted quadratics that is trusted, in nats: the rms
residual over the 3 x 3 design less its Monte Carlo noise
(:meth:`~diffinfer.inference.mc_error.QuadraticTerms.lack_of_fit`); above it the added
timesteps are evaluated on the grid itself (:meth:`Posterior._direct_rounds`). At
Omega_m < 0.2 the fits were biased by about +0.37 posterior sd in Omega_m where their final
residual exceeded 0.3 nats, and +0.09 below it (docs/posterior.md)."""
RESOLVE_MOVE, RESOLVE_NARROWING = 1.0, 0.7
"""A grid still resolves a posterior tabulated on its points that moved by at most
RESOLVE_MOVE of the previous posterior's sd on it (in that posterior's whitened frame) and
narrowed to no less than RESOLVE_NARROWING of it, with at most :data:`EDGE_TOL` of the mass
on its outer ring: an
aligned 8^2 grid tabulates a Gaussian 1 sd off its centre and 0.7 times as wide with its mean
to 0.001 sd and its sd to 0.3 % (tests/test_fast_posterior.py); further off, the outer ring
catches it. Otherwise a fresh grid is laid out about the new posterior."""
MAX_REDESIGNS = 3
"""Re-designs of the fitted terms about their own posterior before giving up
(:meth:`Posterior._settle`)."""


class MonteCarloWarning(UserWarning):
    """The Monte Carlo error of a posterior's mean stayed above its tolerance."""


class MonteCarloControl:
    """The Monte Carlo error control of :class:`~diffinfer.inference.posterior.Posterior`:
    its grid's error estimate and the rounds that add timesteps."""

    # ------------------------------------------------------- Monte Carlo error
    def _grid_terms(self, theta: np.ndarray) -> np.ndarray:
        """The likelihood's per-term contributions at points theta (P, 2) as the grid uses
        them: the first round's terms evaluated, each added round's from its quadratic fit
        (:class:`~diffinfer.inference.mc_error.QuadraticTerms`); (P, K)."""
        like = self._chunked
        k1 = like.n_timesteps_used if self._direct else like.rounds[0]
        with torch.no_grad():
            first = like.term_log_l(torch.as_tensor(theta), columns=slice(0, k1)).numpy()
        if self._direct:  # every term evaluated at these points (_direct_rounds)
            return first
        # the fits hold -log L terms per unit weight: apply the weights of all rounds now
        w = like.plan.weights.numpy()
        fitted = [-fit(theta) * w[fit.columns] for fit in self._fits]
        return np.concatenate([first, *fitted], axis=1)

    def _grid_log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        """The log posterior the grid tabulates once timesteps were added (a batched
        function like :meth:`log_prob`): prior + (first-round terms + fitted added rounds +
        the control variate's closed form) / temperature; -inf outside the prior."""
        theta = as_theta(theta)
        lp = self.prior.log_prob(theta)
        out = torch.full_like(lp, -math.inf)
        ok = torch.isfinite(lp)
        if bool(ok.any()):
            pts = theta[ok].detach()
            like = self._chunked
            # points evaluated before cost nothing: count the new ones
            k1 = like.n_timesteps_used if self._direct else like.rounds[0]
            self.n_evaluations += int((~np.isfinite(like.cached_terms(pts.numpy())[:, :k1])
                                       ).any(axis=1).sum())  # fmt: skip
            with torch.no_grad():
                log_l = self._grid_terms(pts.numpy()).sum(axis=1) + like.gaussian_log_l(pts).numpy()
            tau = float(self.info.get("temperature", 1.0))
            out[ok] = lp[ok] + torch.as_tensor(log_l) / tau
        return out

    def _mc_error(self, g: GridPosterior) -> dict:
        """The Monte Carlo error of grid g's mean and widths
        (:mod:`diffinfer.inference.mc_error`)."""
        like = self._chunked
        pts, inside = g.evaluated_points()
        weights = (g.base or g).weights.ravel()
        terms = np.full((len(pts), like.n_timesteps_used), np.nan)
        terms[inside] = self._grid_terms(pts[inside])
        err = posterior_mc_error(pts, np.where(inside, weights, 0.0), terms,
                                 like.plan.timesteps.numpy(),
                                 temperature=float(self.info.get("temperature", 1.0)))  # fmt: skip
        return {"mean": err["mean"], "sd": err["sd"], "n_timesteps": like.n_timesteps_used,
                "n_denoiser_calls": like.n_denoiser_calls,
                "posterior_mean": g.mean().tolist(),
                "posterior_sd": np.sqrt(np.diag(g.cov())).tolist()}  # fmt: skip

    def _control_mc_error(self, g: GridPosterior, upsample: int) -> GridPosterior:
        """Estimate grid g's Monte Carlo error and, while the error of its mean exceeds
        ``mc_tol`` posterior standard deviations, add timesteps to the likelihood (rounds
        growing at most :data:`ROUND_GROWTH` times, up to ``max_timesteps``) and re-tabulate
        the grid (:meth:`_add_round`); then make sure the fitted terms describe the posterior
        they produced (:meth:`_settle`). Warns when the budget runs out before the tolerance
        is met. Likelihoods without a Monte Carlo part get an error of zero."""
        like = self._chunked
        if like is None:
            g.mc_error = {"mean": [0.0, 0.0], "sd": [0.0, 0.0], "stochastic": False}
            return g
        self._fits = []
        self._direct = False
        first = g
        stages = [self._mc_error(g)]
        budget = self.max_timesteps or like.n_timesteps_used
        settled = True
        if self.mc_refine == "grid" and like.adaptive and max(stages[-1]["mean"]) > self.mc_tol:
            settled = False  # every added term evaluated at the grid's points (mc_refine)
        while (settled and max(stages[-1]["mean"]) > self.mc_tol and like.adaptive
               and like.n_timesteps_used < budget):  # fmt: skip
            k = like.n_timesteps_used
            g = self._add_round(g, self._round_target(stages[-1], budget) - k, upsample)
            stages.append(self._mc_error(g))
            stages[-1].update(self._fit_residual())
            if stages[-1]["fit_lack_of_fit_nats"] > FIT_RESIDUAL_MAX:
                # the added terms are far from quadratic across the design: a quadratic
                # fitted there is biased the same way for every seed (Omega_m < 0.2)
                settled = False
                break
            if self._gross:
                # far outside the design its terms were fitted on: the likelihood is far from
                # quadratic across the posterior, and re-designs do not settle it (N-body
                # maps, docs/nbody.md); stop before spending more
                settled = False
                break
        if self._fits and settled:
            g, redesigns, settled = self._settle(g, upsample)
            if redesigns:
                stages.append(self._mc_error(g))
            stages[-1]["redesigns"] = redesigns
            stages[-1].update(self._fit_residual())
            settled = settled and stages[-1]["fit_lack_of_fit_nats"] <= FIT_RESIDUAL_MAX
        if not settled and like.adaptive:
            # the fits cannot be trusted (the likelihood is far from quadratic across the
            # posterior), or mc_refine="grid": evaluate the added terms on the grid itself
            direct_budget = min(budget, DIRECT_MAX_FACTOR * like.rounds[0])
            if like.n_timesteps_used > direct_budget:
                # fits that lacked fit only after many rounds: evaluating all their timesteps
                # at every grid point would cost up to 4 times the grid's budget; start again
                # from the first round, as mc_refine="grid" does (the same timesteps and grids)
                like.drop_added_timesteps()
                g = first
            g, direct = self._direct_rounds(g, direct_budget, upsample)
            stages += direct
        final = stages[-1]
        met = max(final["mean"]) <= self.mc_tol
        g.mc_error = {"mean": final["mean"], "sd": final["sd"], "stochastic": True,
                      "tolerance": self.mc_tol, "max_timesteps": budget,
                      "n_timesteps": final["n_timesteps"], "met": bool(met),
                      "fit_settled": bool(settled), "direct": bool(self._direct),
                      "refine": self.mc_refine,
                      "n_denoiser_calls": like.n_denoiser_calls, "stages": stages}  # fmt: skip
        if not met and not settled:
            warnings.warn(
                f"{self.name}: "
                + ("the added timesteps were evaluated on the grid itself (mc_refine='grid')"
                   if self.mc_refine == "grid" else
                   "the likelihood is far from quadratic across the posterior, so the added "
                   "timesteps were evaluated on the grid itself")
                + ", up to "
                f"{final['n_timesteps']} (max_timesteps={budget}, at most "
                f"{DIRECT_MAX_FACTOR} times the starting ones there); the Monte Carlo error of "
                f"the mean is still {final['mean'][0]:.2f} / {final['mean'][1]:.2f} posterior "
                "sd (Omega_m / sigma_8): treat the posterior as approximate",
                MonteCarloWarning, stacklevel=4,
            )  # fmt: skip
        elif not met:
            e = final["mean"]
            warnings.warn(
                f"{self.name}: the posterior mean's Monte Carlo error is {e[0]:.2f} / "
                f"{e[1]:.2f} posterior sd (Omega_m / sigma_8), above mc_tol={self.mc_tol:g}, "
                f"with {final['n_timesteps']} timesteps "
                + (f"(the budget, max_timesteps={budget}); raise max_timesteps for a "
                   "more precise posterior" if like.adaptive else
                   "(this likelihood cannot add timesteps)"),
                MonteCarloWarning, stacklevel=4,
            )  # fmt: skip
        return g

    def _fit_residual(self) -> dict:
        """The added terms' quadratic fit over its design, in nats of the tempered
        log-likelihood: the rms residual and its part that is not Monte Carlo noise
        (:meth:`~diffinfer.inference.mc_error.QuadraticTerms.lack_of_fit`)."""
        fit = self._fits[0]
        like = self._chunked
        w = like.plan.weights.numpy()[fit.columns] / float(self.info.get("temperature", 1.0))
        t = like.plan.timesteps.numpy()[fit.columns]
        return {
            "fit_residual_nats": fit.residual_rms(w),
            "fit_lack_of_fit_nats": fit.lack_of_fit(w, t),
        }

    def _round_target(self, stage: dict, budget: int) -> int:
        """The timesteps of the next round after ``stage``: the error falls as 1 / sqrt(K),
        so aim at the tolerance with a 20 % margin, in whole multiples of the first round,
        growing at most :data:`ROUND_GROWTH`-fold (each round is laid out about the previous
        round's posterior, which comes closer as K grows), up to ``budget``."""
        like = self._chunked
        k, k0 = like.n_timesteps_used, like.rounds[0]
        need = k * (max(stage["mean"]) / self.mc_tol) ** 2 * 1.2
        return min(budget, ROUND_GROWTH * k, max(k + k0, math.ceil(need / k0) * k0))

    def _direct_rounds(self, start: GridPosterior, budget: int,
                       upsample: int) -> tuple[GridPosterior, list]:  # fmt: skip
        """The posterior with every added term evaluated at the grid's points (no fits),
        in rounds of added timesteps (growing at most :data:`ROUND_GROWTH` times, up to
        ``budget``) until the Monte Carlo error of the mean is below ``mc_tol``.

        The first round re-tabulates the points of ``start`` (the last grid: its fitted
        posterior is the best guess of where the direct one lies), each later round the
        points of the round before, with every term evaluated there; a fresh aligned grid is
        laid out only where the posterior moved or narrowed beyond what those points resolve
        (:func:`_resolves`, :meth:`_regrid`), or where the terms missing at the last grid's
        points cost more than a fresh aligned grid's (a 12^2 located box at the prior's edge,
        docs/performance.md). Costs (grid points) x (timesteps) network calls; the terms of
        points evaluated before are reused. Returns the grid and its stages."""
        like = self._chunked
        self._fits, self._direct = [], True
        stages: list[dict] = []
        g = start
        while True:
            pts, inside = g.evaluated_points()
            self._stage_direct(len(pts))  # a fresh grid plans its own points
            if self._missing_terms(pts[inside]) <= self._fresh_grid_terms():
                new = self._retabulated(g, upsample)
                g = new if _resolves(g, new) else self._regrid(new, widen=1.2)
            else:
                g = self._regrid(g, widen=1.2)
            stages.append({**self._mc_error(g), "direct": True})
            k = like.n_timesteps_used
            if max(stages[-1]["mean"]) <= self.mc_tol or k >= budget:
                return g, stages
            like.add_timesteps(self._round_target(stages[-1], budget) - k)

    def _missing_terms(self, points: np.ndarray) -> int:
        """The (point, term) pairs of the likelihood's timesteps not yet evaluated at
        ``points`` (P, 2) inside the prior: what re-tabulating them costs, in terms."""
        k = self._chunked.n_timesteps_used
        return int(np.isnan(self._chunked.cached_terms(points)[:, :k]).sum())

    def _fresh_grid_terms(self) -> int:
        """The terms a fresh aligned grid costs at the likelihood's timesteps: n_aligned^2
        new points, each with every term."""
        n = int(sampler_option("grid", self._grid_options(), "n_aligned"))
        return n * n * self._chunked.n_timesteps_used

    def _stage_direct(self, points: int) -> None:
        """Show a direct round on the progress bar: re-tabulating ``points`` theta points."""
        if self._bar is not None:
            self._bar.stage(f"Monte Carlo error: {self._chunked.n_timesteps_used} timesteps "
                            "on the grid")  # fmt: skip
            self._bar.plan(points)

    def _regrid(self, g: GridPosterior, widen: float) -> GridPosterior:
        """A fresh aligned grid of :meth:`_grid_log_prob` about grid g's moments (covariance
        widened by ``widen`` per axis), re-centred (up to 3 times) while the posterior it
        finds is not resolved by it (:func:`_resolves`): a grid laid out for a wider
        posterior would not resolve it."""
        for _ in range(4):
            new = self._fresh_grid(g, widen)
            if _resolves(g, new):
                return new
            g, widen = new, 1.2
        return new

    def _add_round(self, g: GridPosterior, add: int, upsample: int) -> GridPosterior:
        """Add ``add`` timesteps and fit every added term on a design about grid g's
        posterior (:meth:`_redesign`)."""
        like = self._chunked
        k = like.n_timesteps_used
        if self._bar is not None:
            self._bar.stage(f"Monte Carlo error: {k} -> {k + add} timesteps")
        like.add_timesteps(add)
        return self._redesign(g, upsample)

    def _redesign(self, g: GridPosterior, upsample: int) -> GridPosterior:
        """Evaluate every added term (all rounds after the first) on a 3 x 3 design about
        grid g's posterior (:func:`~diffinfer.inference.mc_error.design_points`), fit each by a
        quadratic in theta, and tabulate the posterior with them (:meth:`_retabulate`)."""
        like = self._chunked
        k1, k = like.rounds[0], like.n_timesteps_used
        centre, cov = g.mean(), g.cov()
        box = self.prior.box
        design = design_points(centre, cov, np.asarray(box.low), np.asarray(box.high))
        cols = slice(k1, k)
        if self._bar is not None:
            self._bar.plan(9 * (k - k1) / (k * like.n_noise))  # the design, in theta points
        with torch.no_grad():
            values = like.term_log_l(torch.as_tensor(design), columns=cols).numpy()
        self.n_evaluations += len(design)
        # fit the squared errors themselves (-term / weight): the weights change as rounds
        # are added (each term's is w_t / (K q(t)) with K the timesteps of all rounds)
        errors = -values / like.plan.weights.numpy()[cols]
        self._fits = [QuadraticTerms(design, errors, centre, cov, cols)]
        return self._retabulate(g, upsample)

    def _retabulated(self, g: GridPosterior, upsample: int) -> GridPosterior:
        """Grid g's points with the log density the grid now tabulates
        (:meth:`_grid_log_prob`): only terms added since they were evaluated cost calls."""
        pts, inside = g.evaluated_points()
        values = np.full(len(pts), -np.inf)
        values[inside] = self._grid_log_prob(torch.as_tensor(pts[inside])).numpy()
        return g.retabulated(values, g.n_evaluations, upsample, self.prior.box)

    def _retabulate(self, g: GridPosterior, upsample: int) -> GridPosterior:
        """Grid g's points with the log density of the added terms' fits
        (:meth:`_retabulated`); a fresh aligned grid from the new moments where the
        posterior is not resolved by g's points (:func:`_resolves`)."""
        new = self._retabulated(g, upsample)
        sd = np.sqrt(np.diag(g.cov()))
        self._gross = bool(
            np.max(np.abs(new.mean() - g.mean()) / sd) > GROSS_MOVE
            or np.min(np.sqrt(np.diag(new.cov())) / sd) < GROSS_NARROWING
        )
        if self._gross:
            return new  # the refinement stops (_control_mc_error): no fresh grid for it
        if _resolves(g, new):
            return new
        return self._fresh_grid(new, 1.2)

    def _grid_options(self) -> dict:
        """The grid's options among this posterior's options."""
        return {k: v for k, v in self.options.items() if k in SAMPLER_OPTIONS["grid"]}

    def _fresh_grid(self, g: GridPosterior, widen: float) -> GridPosterior:
        """An aligned grid of :meth:`_grid_log_prob` located at grid g's moments, its
        covariance widened by ``widen`` per axis. The moments are a tabulated posterior's,
        not a locator's guess: they are not refined (6 evaluations saved per grid)."""
        opts = self._grid_options()
        opts.pop("aligned", None)
        opts["refine"] = False
        centre, cov, spent = g.mean(), g.cov() * widen**2, g.n_evaluations
        if self._bar is not None:
            self._bar.plan(int(sampler_option("grid", opts, "n_aligned")) ** 2)
        return grid_posterior(self._grid_log_prob, self.prior.box,
                              locate=lambda: (centre, cov, spent), **opts)  # fmt: skip

    def _settle(self, g: GridPosterior, upsample: int) -> tuple[GridPosterior, int, bool]:
        """A trust region for the fitted terms: the quadratics describe the likelihood near
        their design, so the posterior they produce must lie there: its mean within 1 sd of
        the design's centre and its width within 0.5-2 times the design's, in the design's
        whitened frame. Otherwise re-design about the new posterior (all added terms on 9
        new points), up to :data:`MAX_REDESIGNS` times. Returns the grid, the re-designs
        and whether it settled."""
        for redesigns in range(MAX_REDESIGNS + 1):
            fit = self._fits[0]
            u, s = _in_frame(g.mean(), g.cov(), fit.centre, fit.cov)
            if np.max(np.abs(u)) <= 1.0 and np.min(s) >= 0.5 and np.max(s) <= 2.0:
                return g, redesigns, True
            if redesigns == MAX_REDESIGNS:
                break
            if self._bar is not None:
                self._bar.stage("Monte Carlo error: re-design about the posterior")
            g = self._redesign(g, upsample)
        return g, MAX_REDESIGNS, False


def _resolves(g: GridPosterior, new: GridPosterior) -> bool:
    """Whether grid g's cells resolve the posterior ``new`` tabulated on them: at most
    :data:`EDGE_TOL` of its mass in the outer ring, its mean within :data:`RESOLVE_MOVE` of
    g's sd of g's, its widths at least :data:`RESOLVE_NARROWING` of g's."""
    u, s = _in_frame(new.mean(), new.cov(), g.mean(), g.cov())
    return (new.edge_mass <= EDGE_TOL and np.max(np.abs(u)) <= RESOLVE_MOVE
            and np.min(s) >= RESOLVE_NARROWING)  # fmt: skip


def _in_frame(mean: np.ndarray, cov: np.ndarray, centre: np.ndarray,
              ref_cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A Gaussian (mean, cov) in the whitened frame of (centre, ref_cov): its centre u (2,)
    and its standard deviations along that frame's principal axes s (2,)."""
    evals, vecs = np.linalg.eigh(0.5 * (ref_cov + ref_cov.T))
    whiten = (vecs / np.sqrt(evals)).T
    c = whiten @ cov @ whiten.T
    return whiten @ (np.asarray(mean) - centre), np.sqrt(np.clip(np.linalg.eigvalsh(c), 0, None))
