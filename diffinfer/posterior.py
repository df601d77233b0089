"""``diffinfer.posterior(field)``: the posterior of (Omega_m, sigma_8) given one map.

Every sampler sees one batched function, theta (B, 2) -> log posterior (B,), built from a
likelihood (the diffusion likelihood of a model, or the exact log-normal one) and a prior.
Methods: ``grid`` (adaptive grid marginaliser), ``emcee`` (affine-invariant ensemble,
vectorised, run until the chain is 50 autocorrelation times long), ``nuts`` (Pyro NUTS in the
unconstrained space, several chains).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch

from diffinfer.diffusion.model import DiffusionModel
from diffinfer.errors import InputError
from diffinfer.fields.grid import as_density
from diffinfer.fields.lognormal import LognormalSimulator
from diffinfer.grid import EDGE_TOL, GridPosterior, LocateError, grid_posterior
from diffinfer.likelihood import (  # noqa: F401 (the defaults, re-exported where users look)
    DEFAULT_CV_TIMESTEPS,
    DEFAULT_TERMS,
    DEFAULT_VLB_TIMESTEPS,
    DiffusionLikelihood,
)
from diffinfer.mc_error import QuadraticTerms, design_points, posterior_mc_error
from diffinfer.parameters import DERIVED_NAMES, PARAM_NAMES, as_theta, derived
from diffinfer.prior import Prior
from diffinfer.progress import EvaluationBar
from diffinfer.provenance import environment, model_provenance
from diffinfer.samples import (
    SUMMARY_LEVELS,
    Samples,
    add_mcse,
    summary_entry,
    weighted_summary,
)
from diffinfer.validation import check_bool, check_choice, check_float, check_int

METHODS = ("grid", "emcee", "nuts")
_LIKELIHOOD_OPTIONS = ("n_noise", "n_timesteps", "max_batch", "precision", "noise_sigma",
                       "box_size", "temperature", "spectrum", "proposal",
                       "control_variate", "npe")  # fmt: skip
MC_OPTIONS = ("mc_tol", "max_timesteps")
"""Options of the Monte Carlo error control (every method; ignored by the references)."""
DEFAULT_MC_TOL = 0.1
"""Default ``mc_tol``: the largest Monte Carlo standard error of the posterior mean, in units
of the posterior's standard deviation, before timesteps are added (docs/posterior.md)."""
DEFAULT_MAX_TIMESTEPS_FACTOR = 64
"""Default ``max_timesteps``: this many times the starting timesteps (512 from the 8 of the
control variate; docs/posterior.md)."""
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
MAX_REDESIGNS = 3
"""Re-designs of the fitted terms about their own posterior before giving up
(:meth:`Posterior._settle`)."""
REFERENCE_LIKELIHOODS = ("exact", "power", "npe", "npe-power")
"""The reference analyses: the exact log-normal likelihood, the Gaussian power-spectrum
likelihood, and neural posterior estimators (sbi) on P(k) + a CNN or on P(k) alone."""
LOCATE_PLAN = 14
"""Likelihood evaluations the progress bar plans for the locator (Levenberg-Marquardt: 13.6
on average over the 100 maps of calibration/lognormal64-fast-test, whose posteriors cost 77.6
evaluations with the 64 of the aligned grid)."""
NPE_GRID = {"n_coarse": 16, "n_fine": 24}
"""The adaptive grid of the NPE references (likelihood ``"npe"``, ``"npe-power"``): finer than
the default, which misrepresents a flow's sharp density (docs/posterior.md)."""
GRID_CHAINS = 4
"""Grid draws are independent; they are split into this many chains so that R-hat and ESS
(ArviZ) apply to them as to MCMC chains."""
RHAT_MAX, ESS_MIN = 1.01, 400
"""emcee's chain counts as converged at R-hat <= 1.01 and bulk ESS >= 400 (over its
walkers, after burn-in), besides being ``min_tau_multiple`` autocorrelation times long."""
SAMPLER_OPTIONS = {
    "grid": ("n_coarse", "n_fine", "tol", "max_passes", "upsample", "aligned", "n_aligned",
             "radius"),
    "emcee": ("n_walkers", "max_steps", "min_tau_multiple", "surrogate"),
    "nuts": ("num_chains", "warmup_steps", "max_tree_depth", "surrogate"),
}


class MonteCarloWarning(UserWarning):
    """The Monte Carlo error of a posterior's mean stayed above its tolerance."""


class Posterior:
    """A posterior over theta: log density, samples, summary, diagnostics.

    Build it with :func:`posterior`.
    """

    def __init__(
        self,
        log_likelihood: Callable[[torch.Tensor], torch.Tensor],
        prior: Prior,
        *,
        method: str,
        seed: int,
        sampler_options: dict,
        info: dict,
        locator: Callable[[], tuple[np.ndarray, np.ndarray, int]] | None = None,
        progress: bool = True,
        chunked: DiffusionLikelihood | None = None,
        mc_tol: float = DEFAULT_MC_TOL,
        max_timesteps: int | None = None,
    ) -> None:
        self.log_likelihood = log_likelihood
        self.mc_tol = float(mc_tol)
        self.max_timesteps = max_timesteps
        self._fits: list[QuadraticTerms] = []
        self._gross = False
        self._direct = False  # added terms evaluated on the grid, not fitted (_direct_rounds)
        self._gof: dict | None = None
        self.gof_source: tuple | None = None
        """(density map, simulator, model-space noise sigma) for :meth:`goodness_of_fit`,
        where the maps the model describes can be simulated; set by :func:`posterior`."""
        self.name = "this map"
        """How warnings name the map (the CLI and calibration studies set its path or index)."""
        self.locator = locator
        self.progress = check_bool("progress", progress)
        self._chunked = chunked
        self._bar: EvaluationBar | None = None
        self._ticked = 0.0
        self.sampler = None
        """The sampler object of the last :meth:`sample` (MCMC methods), for diagnostics of
        one's own: the ``emcee.EnsembleSampler`` (method ``"emcee"``), the list of
        ``pyro.infer.MCMC`` runs, one per chain (plain ``"nuts"``); None for the grid and
        for NUTS with delayed acceptance (whose chains are in the returned Samples)."""
        self.prior = prior
        self.method = method
        self.seed = seed
        self.options = sampler_options
        self.info = info
        self._grid: GridPosterior | None = None
        self._samples: Samples | None = None
        self.n_evaluations = 0

    def log_prob(
        self, theta: np.ndarray | torch.Tensor, *, normalized: bool = False
    ) -> torch.Tensor:
        """Log posterior density at each row of theta (B, 2); -inf outside the prior.

        Parameters
        ----------
        theta
            Points (B, 2) or one point (2,).
        normalized
            False (default): log prior + log likelihood, up to a constant, evaluated
            afresh (the function the samplers use; differentiable for a theta that requires
            gradients). True: the normalised density, from the grid posterior (computed
            once, whatever the method; the interpolated log density of the tabulated
            posterior, integrating to 1 over theta), as sbi's ``log_prob`` returns it.
        """
        if check_bool("normalized", normalized):
            pts = as_theta(theta).detach().numpy()
            return torch.as_tensor(self.grid().log_pdf(pts), dtype=torch.float64)
        theta = as_theta(theta)
        lp = self.prior.log_prob(theta)
        out = torch.full_like(lp, -math.inf)
        ok = torch.isfinite(lp)
        if bool(ok.any()):
            idx = torch.nonzero(ok)[:, 0]
            self.n_evaluations += len(idx)
            ticked = self._ticked
            out = out.index_put((idx,), lp[idx] + self.log_likelihood(theta[idx]))
            if self._bar is not None:  # the part the likelihood did not count chunk by chunk
                self._bar.advance(len(idx) - (self._ticked - ticked))
        return out

    @contextlib.contextmanager
    def _progress(self, desc: str, total: float) -> Iterator[EvaluationBar]:
        """The bar of one computation (re-entrant: an inner one, e.g. the grid of a
        two-stage sampler, adds its plan to the outer bar)."""
        if self._bar is not None:
            self._bar.plan(self._bar.total - self._bar.n + total)
            yield self._bar
            return
        bar = EvaluationBar(self.progress, desc, total)
        self._bar = bar
        if self._chunked is not None:
            self._chunked.on_chunk = self._tick
        try:
            yield bar
        finally:
            self._bar = None
            if self._chunked is not None:
                self._chunked.on_chunk = None
            bar.close()

    def _tick(self, amount: float) -> None:
        self._ticked += amount
        if self._bar is not None:
            self._bar.advance(amount)

    # ---------------------------------------------------------------- methods
    def locate(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Centre and covariance of the posterior from the likelihood itself (its maximum
        and inverse Fisher information, widened by the temperature), and the evaluations
        spent; :class:`~diffinfer.grid.LocateError` if the likelihood has no locator."""
        if self.locator is None:
            raise LocateError("this likelihood has no locator")
        ticked = self._ticked
        if self._bar is not None:
            self._bar.stage("locating the maximum")
        centre, cov, spent = self.locator()
        self.n_evaluations += int(spent)
        if self._bar is not None:
            self._bar.advance(int(spent) - (self._ticked - ticked))
            n_grid = int(self.options.get("n_aligned", 8)) ** 2
            self._bar.plan(n_grid)
            self._bar.stage("aligned grid")
        return centre, cov * float(self.info.get("temperature", 1.0)), spent

    def grid(self) -> GridPosterior:
        """The grid posterior (computed once): aligned with the located posterior where the
        likelihood can be located (``aligned=True``, the default), else adaptive."""
        if self._grid is None:
            opts = self._grid_options()
            aligned = opts.pop("aligned", True)
            if not isinstance(aligned, bool):
                raise InputError(f"aligned must be True or False, got {aligned!r}")
            locate = self.locate if aligned and self.locator is not None else None
            if locate is not None:
                plan = LOCATE_PLAN + int(opts.get("n_aligned", 8)) ** 2
            else:
                plan = int(opts.get("n_coarse", 8)) ** 2 + 2 * int(opts.get("n_fine", 12)) ** 2
            with self._progress("posterior (grid)", plan) as bar:
                bar.stage("locating the maximum" if locate else "adaptive grid")
                g = grid_posterior(self.log_prob, self.prior.box, locate=locate, **opts)
                self._grid = self._control_mc_error(g, int(opts.get("upsample", 8)))
        return self._grid

    # ------------------------------------------------------- Monte Carlo error
    def _grid_terms(self, theta: np.ndarray) -> np.ndarray:
        """The likelihood's per-term contributions at points theta (P, 2) as the grid uses
        them: the first round's terms evaluated, each added round's from its quadratic fit
        (:class:`~diffinfer.mc_error.QuadraticTerms`); (P, K)."""
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
        """The Monte Carlo error of grid g's mean and widths (:mod:`diffinfer.mc_error`)."""
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
        while (max(stages[-1]["mean"]) > self.mc_tol and like.adaptive
               and like.n_timesteps_used < budget):  # fmt: skip
            k = like.n_timesteps_used
            g = self._add_round(g, self._round_target(stages[-1], budget) - k, upsample)
            stages.append(self._mc_error(g))
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
            fit = self._fits[0]
            stages[-1]["fit_residual_nats"] = fit.residual_rms(
                like.plan.weights.numpy()[fit.columns] / float(self.info.get("temperature", 1.0)))
        if not settled:
            # the fits cannot be trusted (the likelihood is far from quadratic across the
            # posterior): evaluate the added terms on the grid itself instead
            g, direct = self._direct_rounds(first, min(budget, DIRECT_MAX_FACTOR * like.rounds[0]))
            stages += direct
        final = stages[-1]
        met = max(final["mean"]) <= self.mc_tol
        g.mc_error = {"mean": final["mean"], "sd": final["sd"], "stochastic": True,
                      "tolerance": self.mc_tol, "max_timesteps": budget,
                      "n_timesteps": final["n_timesteps"], "met": bool(met),
                      "fit_settled": bool(settled), "direct": bool(self._direct),
                      "n_denoiser_calls": like.n_denoiser_calls, "stages": stages}  # fmt: skip
        if not met and not settled:
            warnings.warn(
                f"{self.name}: the likelihood is far from quadratic across the posterior, so "
                f"the added timesteps were evaluated on the grid itself, up to "
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

    def _round_target(self, stage: dict, budget: int) -> int:
        """The timesteps of the next round after ``stage``: the error falls as 1 / sqrt(K),
        so aim at the tolerance with a 20 % margin, in whole multiples of the first round,
        growing at most :data:`ROUND_GROWTH`-fold (each round is laid out about the previous
        round's posterior, which comes closer as K grows), up to ``budget``."""
        like = self._chunked
        k, k0 = like.n_timesteps_used, like.rounds[0]
        need = k * (max(stage["mean"]) / self.mc_tol) ** 2 * 1.2
        return min(budget, ROUND_GROWTH * k, max(k + k0, math.ceil(need / k0) * k0))

    def _direct_rounds(self, first: GridPosterior, budget: int) -> tuple[GridPosterior, list]:
        """The posterior with every added term evaluated at the grid's points (no fits):
        an aligned grid about ``first`` (widened), then rounds of added timesteps (growing
        at most :data:`ROUND_GROWTH` times, up to ``budget``) until the Monte Carlo error
        of the mean is below ``mc_tol``. Costs (grid points) x (timesteps) network calls;
        the terms of points evaluated before are reused. Returns the grid and its stages."""
        like = self._chunked
        self._fits, self._direct = [], True
        stages = []
        g = first
        while True:
            if self._bar is not None:
                self._bar.stage(f"Monte Carlo error: {like.n_timesteps_used} timesteps on "
                                "the grid")  # fmt: skip
            g = self._regrid(g, widen=1.5 if not stages else 1.2)
            stages.append({**self._mc_error(g), "direct": True})
            k = like.n_timesteps_used
            if max(stages[-1]["mean"]) <= self.mc_tol or k >= budget:
                return g, stages
            like.add_timesteps(self._round_target(stages[-1], budget) - k)

    def _regrid(self, g: GridPosterior, widen: float) -> GridPosterior:
        """A fresh aligned grid of :meth:`_grid_log_prob` about grid g's moments (covariance
        widened by ``widen`` per axis), re-centred (up to 3 times) while the posterior it
        finds moved by more than half of the previous sd, narrowed below 0.7 of it or
        reaches the outer ring: a grid laid out for a wider posterior would not resolve it."""
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
        grid g's posterior (:func:`~diffinfer.mc_error.design_points`), fit each by a
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

    def _retabulate(self, g: GridPosterior, upsample: int) -> GridPosterior:
        """Grid g's points with the log density of the added terms' fits
        (:meth:`_grid_log_prob`); a fresh aligned grid from the new moments where the
        posterior reaches g's outer ring, moved by more than half of g's standard deviation
        or narrowed below 0.7 of it (g's cells would not resolve it)."""
        pts, inside = g.evaluated_points()
        values = np.full(len(pts), -np.inf)
        values[inside] = self._grid_log_prob(torch.as_tensor(pts[inside])).numpy()
        new = g.retabulated(values, g.n_evaluations, upsample, self.prior.box)
        sd = np.sqrt(np.diag(g.cov()))
        self._gross = bool(np.max(np.abs(new.mean() - g.mean()) / sd) > GROSS_MOVE
                           or np.min(np.sqrt(np.diag(new.cov())) / sd) < GROSS_NARROWING)
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
        covariance widened by ``widen`` per axis."""
        opts = self._grid_options()
        opts.pop("aligned", None)
        centre, cov, spent = g.mean(), g.cov() * widen**2, g.n_evaluations
        if self._bar is not None:
            self._bar.plan(int(opts.get("n_aligned", 8)) ** 2)
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

    def sample(self, n: int | tuple[int] = 4000) -> Samples:
        """Draw about n samples (per the method; MCMC keeps its chains) as :class:`Samples`.

        ``n`` may also be a sample shape ``(n,)``, as sbi and torch distributions take it.
        """
        if isinstance(n, (tuple, list, torch.Size)):
            if len(n) != 1:
                raise InputError(f"a sample shape must be (n,), got {tuple(n)!r}")
            n = n[0]
        n = check_int("n", n, low=1, what="posterior draws")
        if self.method == "grid":
            g = self.grid()
            per_chain = math.ceil(n / GRID_CHAINS)
            theta = g.sample(per_chain * GRID_CHAINS, seed=self.seed)
            theta = theta.reshape(GRID_CHAINS, per_chain, 2)
            lp = g.log_density_at(theta.reshape(-1, 2)).reshape(GRID_CHAINS, per_chain)
            samples = Samples(theta, "grid", {"lp": lp, **self._log_likelihood(theta, lp)},
                              info={**self.info, "diagnostics": g.diagnostics()})  # fmt: skip
        elif self.method == "emcee":
            samples = self._emcee(n)
        else:
            samples = self._nuts(n)
        if self.method != "grid" and self.mc_error() is not None:
            samples.info["diagnostics"]["mc_error"] = self.mc_error()
        self._samples = samples
        return samples

    def _log_likelihood(self, theta: np.ndarray, lp: np.ndarray) -> dict[str, np.ndarray]:
        """The per-draw log likelihood the posterior used (tempered where it is): the log
        posterior ``lp`` (chains, draws) less the log prior, for ArviZ's ``log_likelihood``."""
        with torch.no_grad():
            log_prior = self.prior.log_prob(torch.as_tensor(np.asarray(theta).reshape(-1, 2)))
        return {"log_likelihood": np.asarray(lp, np.float64) - log_prior.numpy().reshape(lp.shape)}

    def save(self, path: str | os.PathLike, format: str = "npz"):
        """Write the draws of the last :meth:`sample` (:meth:`Samples.save`: ``"npz"``, or
        GetDist chain files with ``format="getdist"``); refused before any draws exist."""
        if self._samples is None:
            raise InputError(f"this posterior has no samples yet to write as {format}: call "
                             f"samples = post.sample(4000), then samples.save(path, "
                             f"format={format!r}) (or post.save again)")  # fmt: skip
        return self._samples.save(path, format=format)

    def map(self) -> np.ndarray:
        """Maximum a posteriori theta (2,).

        Grid: the maximum of the interpolated grid density (no further likelihood calls).
        MCMC: the best draw, refined by a local optimiser on the log posterior.
        """
        from scipy.optimize import minimize

        if self.method == "grid" or self._samples is None:
            g = self.grid()
            start = g.mode()

            def f(x: np.ndarray) -> float:
                v = g.log_pdf(x[None])[0]
                return -v if math.isfinite(v) else 1e300
        else:
            start = self._samples.flat[np.argmax(self._samples.stats["lp"].reshape(-1))]

            def f(x: np.ndarray) -> float:
                with torch.no_grad():
                    v = self.log_prob(torch.as_tensor(x[None])).item()
                return -v if math.isfinite(v) else 1e300

        res = minimize(f, start, method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 400})  # fmt: skip
        return res.x if res.fun <= f(start) else start

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, std, median and 68/95 % equal-tailed intervals per parameter and of the
        derived ``S_8`` = sigma_8 (Omega_m / 0.3)^(1/2); ``mcse_mean`` / ``mcse_sd``: the
        likelihood's Monte Carlo error (theta only)."""
        if self.method == "grid":
            g = self.grid()
            mean, std = g.mean(), np.sqrt(np.diag(g.cov()))
            out = {name: summary_entry(mean[j], std[j], g.quantiles(j, SUMMARY_LEVELS))
                   for j, name in enumerate(PARAM_NAMES)}  # fmt: skip
            cells = g.cell_centres().reshape(-1, 2)
            for name in DERIVED_NAMES:  # over the (upsampled) cells, weighted by their mass
                out[name] = weighted_summary(derived(name, cells), g.weights.ravel())
        else:
            out = (self._samples or self.sample()).summary()
        return add_mcse(out, self.mc_error())

    def mc_error(self) -> dict | None:
        """The Monte Carlo error of the likelihood's estimate on this posterior (computed with
        its grid: :mod:`diffinfer.mc_error`), or None where no grid was computed (MCMC on a
        likelihood without a grid surrogate). ``mean``: standard error of the posterior
        mean per parameter in posterior sd; ``sd``: relative standard error of the sd; zero
        for the references, whose likelihoods are deterministic."""
        if self._grid is None and self.method == "grid":
            self.grid()
        return None if self._grid is None else self._grid.mc_error

    def diagnostics(self) -> dict:
        """Evaluations, the method's convergence checks, the Monte Carlo error of the
        likelihood (``mc_error``) and the goodness of fit of the map
        (:meth:`goodness_of_fit`)."""
        if self.method == "grid":
            out = self.grid().diagnostics()
        else:
            out = dict((self._samples or self.sample()).info["diagnostics"])
        out["goodness_of_fit"] = self.goodness_of_fit()
        return out

    def goodness_of_fit(self, n_sims: int = 200) -> dict:
        """Whether the map is like the model's maps: the posterior predictive p-value of its
        power spectrum and one-point PDF against ``n_sims`` maps simulated at parameters
        drawn from this posterior (:mod:`diffinfer.goodness_of_fit`; computed once). Warns
        (:class:`~diffinfer.goodness_of_fit.GoodnessOfFitWarning`) below
        :data:`~diffinfer.goodness_of_fit.GOF_THRESHOLD`. Where no simulator of the model's
        maps is at hand (an N-body model), returns ``{"available": False, "reason": ...}``."""
        from diffinfer.goodness_of_fit import GoodnessOfFitWarning, goodness_of_fit

        if self.gof_source is None:
            return {"available": False,
                    "reason": "no fast simulator of this model's maps (log-normal maps only)"}
        if self._gof is None:
            n_sims = check_int("n_sims", n_sims, low=20, what="simulated maps")
            if self.method == "grid" or self._samples is None:
                draws = self.grid().sample(n_sims, seed=self.seed + 1)
            else:
                flat = self._samples.flat
                draws = flat[np.random.default_rng(self.seed).choice(len(flat), n_sims)]
            field, sim, noise = self.gof_source
            self._gof = {"available": True, **goodness_of_fit(field, draws, sim,
                                                              noise_sigma=noise,
                                                              seed=self.seed)}  # fmt: skip
            if self._gof["p_value"] < self._gof["threshold"]:
                warnings.warn(
                    f"{self.name}: unlike the model's maps at its posterior "
                    f"(posterior predictive p = {self._gof['p_value']:.3g} for its power "
                    f"spectrum and one-point PDF against {n_sims} simulated maps): "
                    "undeclared pixel noise (noise_sigma), smoothing, another box size or "
                    "simulator? The posterior assumes a map like the model's.",
                    GoodnessOfFitWarning, stacklevel=2,
                )  # fmt: skip
        return self._gof

    # ---------------------------------------------------------------- samplers
    def _emcee(self, n: int) -> Samples:
        """Run until the chain is ``min_tau_multiple`` autocorrelation times long, holds at
        least n draws after a 2 tau burn-in and thinning by tau / 2, and those draws reach
        R-hat <= :data:`RHAT_MAX` and bulk ESS >= :data:`ESS_MIN` (walkers as chains);
        return all of them."""
        import emcee

        opts = self.options
        walkers = int(opts.get("n_walkers", 16))
        max_steps = int(opts.get("max_steps", 20000))
        multiple = float(opts.get("min_tau_multiple", 50))
        surrogate = self._surrogate()
        rng = np.random.default_rng(self.seed)
        # start from a quick grid when there is one, else from the prior
        start = self.prior.sample(walkers, seed=self.seed)
        if self._grid is not None:
            start = self._grid.sample(walkers, seed=self.seed)

        def log_prob(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.log_prob(torch.as_tensor(x)).numpy()

        moves = None
        if surrogate is not None:
            from diffinfer.two_stage import independence_move

            moves = independence_move(surrogate)
        sampler = emcee.EnsembleSampler(walkers, 2, log_prob, vectorize=True, moves=moves)
        self.sampler = sampler
        sampler.random_state = np.random.RandomState(int(rng.integers(2**31))).get_state()
        state, tau, converged = start, np.inf, False
        block = 500 if surrogate is None else 25  # independence proposals mix in a few steps
        # emcee evaluates each walker about once per step (the stretch move: two halves)
        with self._progress("posterior (emcee)", walkers * min(block, max_steps)) as bar:
            while sampler.iteration < max_steps:
                state = sampler.run_mcmc(state, min(block, max_steps - sampler.iteration),
                                         progress=False)  # fmt: skip
                with np.errstate(invalid="ignore", divide="ignore"):
                    tau = float(np.max(sampler.get_autocorr_time(tol=0)))
                if not math.isfinite(tau):  # a walker that has not moved yet
                    bar.plan(walkers * min(block, max_steps - sampler.iteration))
                    continue
                kept = (sampler.iteration - 2 * tau) / max(1, int(tau / 2)) * walkers
                if sampler.iteration >= multiple * tau and kept >= n:
                    checks = _chain_convergence(sampler, tau)
                    if checks["rhat"] <= RHAT_MAX and checks["ess_bulk"] >= ESS_MIN:
                        converged = True
                        break
                    # long enough by tau, not yet by R-hat / ESS: another block
                    bar.plan(walkers * min(block, max_steps - sampler.iteration))
                    bar.stage(f"step {sampler.iteration}, R-hat {checks['rhat']:.3f}, "
                              f"ESS {checks['ess_bulk']:.0f}")  # fmt: skip
                    continue
                # the chain length this tau asks for: multiple * tau, and n draws kept
                need = max(multiple * tau, 2 * tau + n / walkers * max(1, int(tau / 2)))
                steps = min(max_steps, math.ceil(need)) - sampler.iteration
                bar.plan(walkers * max(steps, min(block, max_steps - sampler.iteration)))
                bar.stage(f"step {sampler.iteration}, autocorrelation time {tau:.0f}")
        if not math.isfinite(tau):
            tau = float(sampler.iteration)  # no walker-wise estimate: the most pessimistic
        checks = _chain_convergence(sampler, tau)
        if not converged:
            warnings.warn(
                f"emcee stopped at its budget of {max_steps} steps with a chain "
                f"{sampler.iteration / tau:.0f} autocorrelation times long (target {multiple:g}), "
                f"R-hat {checks['rhat']:.3f} (target <= {RHAT_MAX}) and bulk ESS "
                f"{checks['ess_bulk']:.0f} (target >= {ESS_MIN}); raise max_steps",
                stacklevel=3,
            )  # fmt: skip
        burn = int(min(2 * tau, sampler.iteration // 2))
        thin = max(1, int(tau / 2))
        chain = sampler.get_chain(discard=burn, thin=thin)  # (draws, walkers, 2)
        lp = sampler.get_log_prob(discard=burn, thin=thin)
        # every draw after burn-in and thinning: the draws R-hat and ESS were judged on (at
        # least n once converged)
        chain, lp = np.swapaxes(chain, 0, 1), lp.T
        diag = {"n_evaluations": int(self.n_evaluations), "steps": sampler.iteration,
                "first_stage": "grid independence proposals" if surrogate else None,
                "autocorrelation_time": tau, "converged": converged,
                "convergence": {"rhat_max": RHAT_MAX, "ess_min": ESS_MIN,
                                "min_tau_multiple": multiple, **checks},
                "acceptance_fraction": float(np.mean(sampler.acceptance_fraction)),
                "burn_in": burn, "thin": thin}  # fmt: skip
        samples = Samples(chain, "emcee", {"lp": lp, **self._log_likelihood(chain, lp)},
                          {**self.info, "diagnostics": diag})  # fmt: skip
        _add_convergence(samples, diag)
        return samples

    def _surrogate(self):
        """The grid surrogate of the two-stage samplers, or None for the plain ones.

        Option ``surrogate``: ``"grid"`` or ``None``; default ``"grid"`` for a network's
        diffusion likelihood (each evaluation costs network calls), None otherwise.
        """
        choice = self.options.get("surrogate", "default")
        if choice == "default":
            choice = "grid" if self.info.get("expensive") else None
        if choice is None:
            return None
        if choice != "grid":
            raise InputError(f"surrogate must be 'grid' or None, got {choice!r}")
        from diffinfer.two_stage import GridSurrogate

        return GridSurrogate(self.grid())

    def _nuts(self, n: int) -> Samples:
        from pyro.infer import MCMC, NUTS

        opts = self.options
        chains = int(opts.get("num_chains", 4))
        warmup = int(opts.get("warmup_steps", 500))
        per_chain = max(1, math.ceil(n / chains))
        prior = self.prior
        surrogate = self._surrogate()
        if surrogate is not None:
            from diffinfer.two_stage import delayed_acceptance_nuts

            self.sampler = None
            theta, lp, diag = delayed_acceptance_nuts(
                self.log_prob, surrogate, prior, chains=chains, warmup=warmup, draws=per_chain,
                max_tree_depth=int(opts.get("max_tree_depth", 8)), seed=self.seed,
                progress=self.progress,
            )  # fmt: skip
            diag["n_evaluations"] = int(self.n_evaluations)
            diag["first_stage"] = "NUTS on the grid surrogate (delayed acceptance)"
            samples = Samples(theta, "nuts", {"lp": lp, **self._log_likelihood(theta, lp)},
                              {**self.info, "diagnostics": diag})  # fmt: skip
            _add_convergence(samples, diag)
            return samples

        def potential(params: dict) -> torch.Tensor:
            z = params["z"]
            theta = prior.from_unconstrained(z[None])
            lp = self.log_prob(theta)[0] + prior.log_abs_det_jacobian(z[None])[0]
            return -lp

        draws, lps, divergent, accept = [], [], [], []
        self.sampler = []
        start = self.prior.sample(chains, seed=self.seed)
        if self._grid is not None:
            start = self._grid.sample(chains, seed=self.seed)
        for c in range(chains):  # sequential chains: no process pool needed on any machine
            torch.manual_seed(self.seed * 1000 + c)
            kernel = NUTS(potential_fn=potential,
                          max_tree_depth=int(opts.get("max_tree_depth", 8)))  # fmt: skip
            z0 = prior.to_unconstrained(torch.as_tensor(start[c : c + 1]))[0]
            mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=warmup,
                        initial_params={"z": z0}, disable_progbar=not self.progress)  # fmt: skip
            mcmc.run()
            self.sampler.append(mcmc)
            z = mcmc.get_samples()["z"]
            theta = prior.from_unconstrained(z)
            draws.append(theta.numpy())
            with torch.no_grad():
                lps.append(self.log_prob(theta).numpy())
            report = mcmc.diagnostics()
            div = np.zeros(per_chain, bool)
            div[np.asarray(report.get("divergences", {}).get("chain 0", []), int)] = True
            divergent.append(div)
            accept.append(float(report.get("acceptance rate", {}).get("chain 0", np.nan)))
        theta = np.stack(draws)
        diag = {"n_evaluations": int(self.n_evaluations), "divergences": int(np.sum(divergent)),
                "chains": chains, "warmup_steps": warmup,
                "acceptance_rate": [float(a) for a in accept]}  # fmt: skip
        lp = np.stack(lps)
        samples = Samples(theta, "nuts", {"lp": lp, "diverging": np.stack(divergent),
                                          **self._log_likelihood(theta, lp)},
                          {**self.info, "diagnostics": diag})  # fmt: skip
        _add_convergence(samples, diag)
        return samples


def _chain_convergence(sampler, tau: float) -> dict[str, float]:
    """The largest R-hat and smallest bulk ESS over the parameters of the draws an emcee
    chain gives (after a 2 tau burn-in, thinned by tau / 2; walkers as chains; ArviZ)."""
    import arviz as az

    burn = int(min(2 * tau, sampler.iteration // 2))
    thin = max(1, int(tau / 2))
    chain = np.swapaxes(sampler.get_chain(discard=burn, thin=thin), 0, 1)  # (walkers, draws, 2)
    if chain.shape[1] < 4:
        return {"rhat": math.inf, "ess_bulk": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: ArviZ warns; the values say it
        rhat = max(float(az.rhat(chain[..., j])) for j in range(chain.shape[-1]))
        ess = min(float(az.ess(chain[..., j], method="bulk")) for j in range(chain.shape[-1]))
    return {"rhat": rhat if math.isfinite(rhat) else math.inf, "ess_bulk": ess}


def _add_convergence(samples: Samples, diag: dict) -> None:
    """R-hat and bulk ESS per parameter (ArviZ, optional) into a diagnostics dict."""
    try:
        import arviz as az
    except ImportError:  # ArviZ is optional for the samplers themselves
        return
    idata = samples.to_arviz()
    diag["rhat"] = {k: float(v) for k, v in az.rhat(idata).items()}
    diag["ess_bulk"] = {k: float(v) for k, v in az.ess(idata, method="bulk").items()}


def posterior(
    field: np.ndarray | torch.Tensor,
    model: str | DiffusionModel | None = "lognormal64",
    likelihood: str | list[int] = DEFAULT_TERMS,
    method: str = "grid",
    prior: Prior | None = None,
    seed: int = 0,
    kind: str = "density",
    progress: bool = True,
    **options,
) -> Posterior:
    """The posterior of (Omega_m, sigma_8) given one map, or several maps of one cosmology.

    Parameters
    ----------
    field
        The map (N, N) in the data units of the model card (density), a .npy / .npz file
        holding it, or several maps of one cosmology (a list of maps or files, or a stack
        (M, N, N)): their likelihoods multiply (the diffusion, exact and power-spectrum
        likelihoods; the NPE references estimate the posterior of one map and refuse).
    model
        A model name or directory, a :class:`DiffusionModel` (e.g. the oracle); with
        ``likelihood="exact"`` it only sets the geometry and transform (None: the default
        log-normal configuration).
    likelihood
        ``"vlb"`` (default: the variational bound, estimated from
        :data:`DEFAULT_CV_TIMESTEPS` importance-sampled timesteps with the control variate,
        else :data:`DEFAULT_VLB_TIMESTEPS`, unless ``n_timesteps`` is
        given), ``"l0"``, a list of term indices (diffusion likelihood); ``"exact"``
        (log-normal maps only: the closed-form likelihood, the reference); ``"power"`` (the
        Gaussian likelihood of the binned power spectrum, fitted to simulations:
        :class:`~diffinfer.spectrum_likelihood.PowerSpectrumLikelihood`); ``"npe"`` and
        ``"npe-power"`` (neural posterior estimators trained with sbi on the power spectrum
        plus a CNN embedding, or on the power spectrum alone: the density q(theta | map)
        serves as the likelihood under the box prior it was trained with; option ``npe``
        names the reference, default :data:`~diffinfer.npe.DEFAULT_REFERENCES`).
    method
        ``"grid"``, ``"emcee"`` or ``"nuts"``.
    prior
        A :class:`Prior` (default: uniform on the model's box).
    seed
        Seeds the likelihood's noise and the sampler.
    kind
        What ``field`` holds: ``"density"`` (default: the density contrast rho / rho_mean,
        positive with mean about 1, the models' data units), ``"overdensity"`` (delta),
        ``"mass"`` (mass or counts per pixel, any unit: divided by the map's mean) or
        ``"log10"`` (log10 of the density contrast). A map that does not look like its kind
        (values <= 0, a mean far from 1, no structure) is refused with a message naming the
        kind that fits (:func:`~diffinfer.fields.grid.as_density`).
    progress
        Show a progress bar while the posterior is computed (likelihood evaluations with
        the remaining time; Pyro's own bar for NUTS); False: silent. Bars appear after half
        a second, so fast posteriors print nothing.
    **options
        Likelihood options (n_noise, n_timesteps, max_batch, precision, noise_sigma,
        box_size, proposal, control_variate: see
        :class:`~diffinfer.likelihood.DiffusionLikelihood`; ``temperature``: the posterior
        uses L^(1/temperature), default the value
        the model card records for this term set (see :mod:`diffinfer.calibration`), else 1,
        and 1 opts out; ``spectrum``: a fitted power-spectrum likelihood or its file, default
        fitted to the log-normal simulator; ``npe``: an NPE reference, its name or
        directory), the Monte Carlo error control of the diffusion likelihood (``mc_tol``:
        the largest standard error of the posterior mean, in posterior sd, default
        :data:`DEFAULT_MC_TOL`; ``max_timesteps``: the timesteps it may grow to, default
        :data:`DEFAULT_MAX_TIMESTEPS_FACTOR` times the starting ones; docs/posterior.md) and
        sampler options (grid: n_coarse, n_fine,
        tol, max_passes; emcee: n_walkers, max_steps, min_tau_multiple; nuts: num_chains,
        warmup_steps, max_tree_depth).
    """
    check_posterior_options(likelihood, method, seed, options)
    check_bool("progress", progress)
    if prior is not None and not isinstance(prior, Prior):
        raise InputError(f"prior must be a diffinfer.Prior (e.g. di.Prior.gaussian(mean, std)) "
                         f"or None, got {prior!r}")  # fmt: skip
    like_opts = {k: v for k, v in options.items() if k in _LIKELIHOOD_OPTIONS}
    mc_tol = options.get("mc_tol")
    mc_tol = DEFAULT_MC_TOL if mc_tol is None else float(mc_tol)
    max_timesteps = options.get("max_timesteps")
    temperature = like_opts.pop("temperature", None)
    spectrum = like_opts.pop("spectrum", None)
    sampler_opts = {k: v for k, v in options.items() if k in SAMPLER_OPTIONS[method]}
    if method == "grid" and isinstance(likelihood, str) and likelihood.startswith("npe"):
        # a flow's density can be sharp (piled against the prior's edge): the default 8^2 +
        # 12^2 cells misplace it by up to 1 sd, while 16^2 + 24^2 agree with 48^2 + 64^2
        # (C2ST <= 0.51, docs/posterior.md); its evaluations cost about 1 ms
        for name, cells in NPE_GRID.items():
            sampler_opts.setdefault(name, cells)
    if isinstance(model, str):
        from diffinfer.diffusion.checkpoint import load_model

        model = load_model(model)
    elif isinstance(model, os.PathLike):
        from diffinfer.diffusion.checkpoint import load_model

        model = load_model(model)
    elif model is not None and not isinstance(model, DiffusionModel):
        raise InputError(f"model must be a model name, a directory, a DiffusionModel or None, "
                         f"got {type(model).__name__}")  # fmt: skip
    npe = _npe_reference(likelihood, like_opts.pop("npe", None))
    if npe is not None:
        n_pix, data_mean = npe.field.n_pix, 1.0
    elif model is not None:
        n_pix, data_mean = model.field.n_pix, model.data_mean
    else:
        n_pix, data_mean = LognormalSimulator().config.n_pix, 1.0
    field = _as_maps(field, kind, n_pix, data_mean)
    n_maps = 1 if field.ndim == 2 else len(field)
    if npe is not None and n_maps > 1:
        raise InputError(
            f"likelihood={likelihood!r} is a posterior estimate q(theta | one map): a product "
            f"over {n_maps} maps would count the prior {n_maps} times and is not what it was "
            "trained for; give one map, or use the diffusion, 'exact' or 'power' likelihood "
            "for several maps of one cosmology"
        )
    if npe is not None:
        summary = npe.summarise(field)

        def log_like(theta: torch.Tensor) -> torch.Tensor:
            return npe.log_prob(theta, summary)

        box, locator = npe.prior, None
        description = f"neural posterior estimate ({npe.name}: {npe.summary})"
        calibration, terms_info, chunked = None, {}, None
        settings = {"npe": npe.name, "summary": npe.summary,
                    "weights_sha256": (npe.card.get("weights") or {}).get("sha256")}  # fmt: skip
    elif likelihood in ("exact", "power"):
        if model is None:
            sim = LognormalSimulator()
        else:
            sim = LognormalSimulator(model.field, model.transform)
        box = sim.config.prior
        if likelihood == "exact":
            y = sim.transform.forward(field)
            ys = y if n_maps > 1 else y[None]
            sigma = like_opts.get("noise_sigma") or 0.0

            def log_like(theta: torch.Tensor) -> torch.Tensor:
                return sum(sim.exact_log_prob(one, theta, outside="-inf", noise_sigma=sigma)
                           for one in ys)  # fmt: skip

            # its evaluations cost 0.2 ms: the adaptive grid unless an aligned one is asked
            # for (Fisher scoring, noiseless single maps only, costs about 3 s)
            wanted = options.get("aligned") is True and not sigma and n_maps == 1
            locator = _exact_locator(sim, y) if wanted else None
            description = "exact log-normal likelihood"
            settings = {"noise_sigma": float(sigma)}
        else:
            trained_on = ((model.card or {}).get("data") or {}).get("simulator") if model else None
            if spectrum is None and trained_on not in (None, "lognormal", "unknown"):
                name = (model.card or {}).get("name", "the model")
                raise InputError(
                    f"the default power-spectrum likelihood is fitted to log-normal maps, but "
                    f"{name} describes {trained_on} maps: give spectrum=FILE fitted to them "
                    f"(shipped: diffinfer/models/{name}-power.npz; "
                    "scripts/train_references.py fits one)"
                )
            spec = _spectrum_likelihood(spectrum, sim, like_opts.get("noise_sigma") or 0.0)
            per_map = [spec.for_map(one) for one in (field if n_maps > 1 else field[None])]

            def log_like(theta: torch.Tensor) -> torch.Tensor:
                return sum(f(theta) for f in per_map)

            box = spec.field.prior
            description = f"power-spectrum likelihood ({spec.n_bins} bins, {spec.correction})"
            locator = None
            settings = {"n_bins": spec.n_bins, "correction": spec.correction,
                        "noise_sigma": float(like_opts.get("noise_sigma") or 0.0),
                        "spectrum": None if spectrum is None else str(spectrum)}  # fmt: skip
        calibration, terms_info, chunked = None, {}, None
    else:
        if model is None:
            raise InputError(
                "the diffusion likelihood needs a model: give one (a name, a directory or "
                "'oracle'), or use likelihood='exact' or 'power'"
            )
        like = DiffusionLikelihood(model, field, terms=likelihood, seed=seed, progress=progress,
                                   **like_opts)  # fmt: skip
        log_like = chunked = like
        start = like.n_timesteps_used
        if max_timesteps is None:
            max_timesteps = DEFAULT_MAX_TIMESTEPS_FACTOR * start if like.adaptive else start
        elif like.adaptive and int(max_timesteps) < start:
            raise InputError(f"max_timesteps={max_timesteps} is below the {start} timesteps "
                             f"the likelihood starts from; give max_timesteps >= {start} "
                             f"(or fewer n_timesteps)")  # fmt: skip

        def locator() -> tuple[np.ndarray, np.ndarray, int]:
            loc = like.locate()
            return loc.theta, loc.cov, loc.n_evaluations

        box = model.field.prior
        description = f"diffusion likelihood ({like.description}, {like.n_noise} noise draws)"
        calibration = _card_temperature(model, like)
        terms_info = {"terms": like.description, "n_noise": like.n_noise,
                      "expensive": not model.is_oracle}  # fmt: skip
        settings = {"terms": likelihood, "n_timesteps": like.n_timesteps_used,
                    "n_noise": like.n_noise, "precision": like.precision,
                    "control_variate": bool(like.control_variate),
                    "proposal": like.proposal if isinstance(like.proposal, str) else "given",
                    "noise_sigma": float(like.noise_sigma or 0.0), "max_batch": like.max_batch,
                    "mc_tol": mc_tol, "max_timesteps": max_timesteps,
                    "likelihood_seed": int(seed)}  # fmt: skip
    if temperature is None:
        temperature = calibration if calibration is not None else 1.0
    # the option was checked above; this also checks a temperature read from the card
    temperature = check_float("temperature", temperature, low=0, low_open=True)
    verdict = None
    if chunked is not None and not model.is_oracle:
        from diffinfer.calibration.verdicts import warn_if_uncalibrated

        verdict = warn_if_uncalibrated(model.card or {}, chunked.description, chunked.n_noise,
                                       float(chunked.noise_sigma or 0.0), temperature)  # fmt: skip
    if temperature != 1.0:
        untempered = log_like

        def log_like(theta: torch.Tensor) -> torch.Tensor:
            return untempered(theta) / temperature

        description += f", tempered by {temperature:.3g}"
    if n_maps > 1:
        description += f", product over {n_maps} maps"
    prior = prior or Prior(box)
    info = {
        "likelihood": description,
        "model": None if model is None else model.card.get("name", "unnamed"),
        "prior": prior.name,
        "prior_box": prior.box.to_dict(),
        "method": method,
        "seed": seed,
        "label": f"{method}, {description}",
        "n_maps": n_maps,
        "temperature": temperature,
        **terms_info,
    }
    if chunked is not None and not model.is_oracle:  # the card's verdict on this setting
        info["calibration"] = ({"verdict": "no study on record"} if verdict is None else
                               {k: verdict[k] for k in ("verdict", "study", "n_maps", "failed")})
    info["provenance"] = {
        "model": model_provenance(model),
        "likelihood": likelihood if isinstance(likelihood, str) else list(likelihood),
        "settings": settings,
        "temperature": temperature,
        "seed": int(seed),
        **environment(model.device if model is not None else "cpu"),
    }
    post = Posterior(log_like, prior, method=method, seed=seed, sampler_options=sampler_opts,
                     info=info, locator=locator, progress=progress, chunked=chunked,
                     mc_tol=mc_tol, max_timesteps=max_timesteps)  # fmt: skip
    if n_maps == 1:
        post.gof_source = _gof_source(field, model, npe, like_opts.get("noise_sigma") or 0.0)
    return post


def _as_maps(field, kind: str, n_pix: int, data_mean: float) -> np.ndarray | torch.Tensor:
    """The map(s) of :func:`posterior` as densities: one map (N, N), or the maps of one
    cosmology (M, N, N) from a stack or a list; files (.npy / .npz) are read. A list of
    maps of different shapes, or a map unlike its kind, is refused naming the first one."""
    from diffinfer.io import read_map

    if isinstance(field, (str, os.PathLike)):
        field = read_map(field)
    elif isinstance(field, (list, tuple)):
        if not field:
            raise InputError("no maps given: pass a map, a .npy file, or a list of the maps "
                             "of one cosmology")  # fmt: skip
        maps = [read_map(f) if isinstance(f, (str, os.PathLike)) else
                np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f)
                for f in field]  # fmt: skip
        for i, m in enumerate(maps):
            if m.shape != maps[0].shape:
                raise InputError(f"map {i} of the list has shape {m.shape}, unlike map 0's "
                                 f"{maps[0].shape}: the maps of one posterior share one "
                                 "geometry")  # fmt: skip
            if m.ndim != 2:
                raise InputError(f"map {i} of the list has shape {m.shape}: each entry must "
                                 "be one map (N, N)")  # fmt: skip
        densities = []
        for i, m in enumerate(maps):  # one by one, so that a refusal names the map
            try:
                densities.append(as_density(m, kind=kind, n_pix=n_pix, data_mean=data_mean))
            except InputError as exc:
                raise InputError(f"map {i} of the list: {exc}") from exc
        return torch.stack(densities) if len(densities) > 1 else densities[0]
    return as_density(field, kind=kind, n_pix=n_pix, data_mean=data_mean)


def _gof_source(field: np.ndarray, model: DiffusionModel | None, npe, noise: float):
    """What :meth:`Posterior.goodness_of_fit` simulates from: the log-normal simulator of
    the model's geometry where the model describes log-normal maps, else None."""
    if npe is not None:
        return None
    if model is not None:
        described = ((model.card or {}).get("data") or {}).get("simulator", "lognormal")
        if not model.is_oracle and described not in ("lognormal", None):
            return None
        sim = LognormalSimulator(model.field, model.transform)
    else:
        sim = LognormalSimulator()
    return np.asarray(field, np.float64), sim, float(noise)


def _resolves(g: GridPosterior, new: GridPosterior) -> bool:
    """Whether grid g's cells resolve the posterior ``new`` tabulated on them: none of its
    mass in the outer ring, its mean within half of g's sd of g's, its widths at least 0.7
    of g's."""
    u, s = _in_frame(new.mean(), new.cov(), g.mean(), g.cov())
    return new.edge_mass <= EDGE_TOL and np.max(np.abs(u)) <= 0.5 and np.min(s) >= 0.7


def _in_frame(mean: np.ndarray, cov: np.ndarray, centre: np.ndarray,
              ref_cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A Gaussian (mean, cov) in the whitened frame of (centre, ref_cov): its centre u (2,)
    and its standard deviations along that frame's principal axes s (2,)."""
    evals, vecs = np.linalg.eigh(0.5 * (ref_cov + ref_cov.T))
    whiten = (vecs / np.sqrt(evals)).T
    c = whiten @ cov @ whiten.T
    return whiten @ (np.asarray(mean) - centre), np.sqrt(np.clip(np.linalg.eigvalsh(c), 0, None))


def check_posterior_options(likelihood: object, method: object, seed: object,
                            options: dict) -> None:  # fmt: skip
    """Validate the arguments of :func:`posterior` in one place, before anything is computed.

    Raises
    ------
    InputError
        An unknown method or option (with the close matches), or an option value of the
        wrong type or range; the message names the option, the value and what is expected.
    """
    import difflib

    check_choice("method", method, METHODS)
    check_int("seed", seed, low=0)
    if isinstance(likelihood, str):
        check_choice("likelihood", likelihood, ("vlb", "l0", *REFERENCE_LIKELIHOODS))
    elif not (isinstance(likelihood, (list, tuple)) and likelihood):
        raise InputError("likelihood must be 'vlb', 'l0', 'exact', 'power', 'npe', 'npe-power' "
                         f"or a non-empty list of term indices, got {likelihood!r}")  # fmt: skip
    else:
        for i in likelihood:
            check_int("likelihood term index", i, low=0)
    allowed = [*_LIKELIHOOD_OPTIONS, *MC_OPTIONS, *SAMPLER_OPTIONS[method]]
    for name in options:
        if name not in allowed:
            near = difflib.get_close_matches(name, allowed + [o for m in METHODS
                                             for o in SAMPLER_OPTIONS[m]], n=1)  # fmt: skip
            hint = f"; did you mean {near[0]!r}?" if near else ""
            if near and near[0] not in allowed:
                hint = f"; {near[0]!r} is an option of another method"
            raise InputError(f"unknown option {name!r} for method {method!r}{hint} "
                             f"(options: {allowed})")  # fmt: skip
    o = {k: v for k, v in options.items() if v is not None}
    if o.get("n_timesteps") == "auto":  # the default, said out loud
        del o["n_timesteps"]
    ints = {"n_noise": 1, "max_batch": 1, "n_coarse": 4, "n_fine": 4, "n_aligned": 4,
            "upsample": 1, "max_passes": 0, "n_walkers": 4, "max_steps": 1, "num_chains": 1,
            "warmup_steps": 0, "n_timesteps": 1}  # fmt: skip
    for name, low in ints.items():
        if name in o:
            check_int(name, o[name], low=low)
    if "mc_tol" in o:
        check_float("mc_tol", o["mc_tol"], low=0, low_open=True,
                    what="Monte Carlo error of the posterior mean, in posterior sd")  # fmt: skip
    if "max_timesteps" in o:
        check_int("max_timesteps", o["max_timesteps"], low=1)
        if int(o.get("n_timesteps") or 0) > int(o["max_timesteps"]):
            raise InputError(f"max_timesteps={o['max_timesteps']} is below "
                             f"n_timesteps={o['n_timesteps']}; give max_timesteps >= "
                             "n_timesteps")  # fmt: skip
    if "n_walkers" in o and int(o["n_walkers"]) % 2:
        raise InputError(f"n_walkers must be even (emcee's stretch move), got {o['n_walkers']}")
    if "max_tree_depth" in o:
        check_int("max_tree_depth", o["max_tree_depth"], low=1, high=15)
    if "tol" in o:
        check_float("tol", o["tol"], low=0, high=1, low_open=True, high_open=True,
                    what="posterior mass")  # fmt: skip
    if "radius" in o:
        check_float("radius", o["radius"], low=2, high=10, what="standard deviations")
    for name in ("temperature", "box_size", "min_tau_multiple"):
        if name in o:
            check_float(name, o[name], low=0, low_open=True)
    if "noise_sigma" in o:
        check_float("noise_sigma", o["noise_sigma"], low=0, what="model-space pixel noise")
    if "precision" in o:
        check_choice("precision", o["precision"], ("auto", "fp32", "bf16"))
    if "aligned" in o:
        check_bool("aligned", o["aligned"])
    if "control_variate" in o and o["control_variate"] != "auto":
        check_bool("control_variate", o["control_variate"])
    if "surrogate" in options and options["surrogate"] not in (None, "grid"):
        raise InputError(f"surrogate must be 'grid' or None, got {options['surrogate']!r}")
    if "npe" in o and not (isinstance(likelihood, str) and likelihood.startswith("npe")):
        raise InputError(f"option npe names a neural posterior estimator; it applies to "
                         f"likelihood='npe' or 'npe-power', not {likelihood!r}")  # fmt: skip
    if "npe" in o and not isinstance(o["npe"], (str, os.PathLike)):
        from diffinfer.npe import NPEReference

        if not isinstance(o["npe"], NPEReference):
            raise InputError(f"npe must be a reference name, a directory or an NPEReference, "
                             f"got {type(o['npe']).__name__}")  # fmt: skip
    if isinstance(likelihood, str) and likelihood in REFERENCE_LIKELIHOODS:
        diffusion_only = sorted({"n_noise", "n_timesteps", "max_batch", "precision",
                                 "proposal", "control_variate"} & set(options))  # fmt: skip
        if diffusion_only:
            raise InputError(f"options {diffusion_only} apply to the diffusion likelihood, "
                             f"not to likelihood={likelihood!r}")  # fmt: skip


def _exact_locator(sim: LognormalSimulator, y: torch.Tensor):
    """Locator of the exact likelihood: its maximum and inverse Fisher matrix (Fisher scoring;
    an iteration counts as one evaluation)."""

    def locator() -> tuple[np.ndarray, np.ndarray, int]:
        fit = sim.maximum_likelihood(y)
        return fit.theta[0], fit.cov[0], int(fit.n_iter)

    return locator


def _card_temperature(model: DiffusionModel, like: DiffusionLikelihood) -> float | None:
    """The likelihood temperature fitted for this model and term set (model card), if any."""
    entries = model.card.get("calibration") or []
    for entry in [entries] if isinstance(entries, dict) else entries:
        if (
            entry.get("likelihood") == like.description
            and entry.get("n_noise") == like.n_noise
            and float(entry.get("noise_sigma", 0.0)) == float(like.noise_sigma or 0.0)
        ):
            return float(entry["temperature"])
    return None


_NPE_CACHE: dict[str, object] = {}


def _npe_reference(likelihood: object, npe: object):
    """The NPE reference of ``likelihood="npe"`` / ``"npe-power"`` (loaded once per process
    by name or directory), else None; a reference of the other summary is refused."""
    if not (isinstance(likelihood, str) and likelihood.startswith("npe")):
        return None
    from diffinfer.npe import DEFAULT_REFERENCES, NPEReference

    if npe is None:
        npe = DEFAULT_REFERENCES[likelihood]
    if not isinstance(npe, NPEReference):
        key = os.fspath(npe)
        if key not in _NPE_CACHE:
            _NPE_CACHE[key] = NPEReference.load(key)
        npe = _NPE_CACHE[key]
    wanted = "power" if likelihood == "npe-power" else "power+cnn"
    if npe.summary != wanted:
        raise InputError(f"likelihood={likelihood!r} needs an NPE reference on {wanted!r}; "
                         f"{npe.name} is trained on {npe.summary!r}")  # fmt: skip
    return npe


_SPECTRUM_CACHE: dict[tuple, object] = {}


def _spectrum_likelihood(spectrum, sim: LognormalSimulator, noise_sigma: float):
    """The power-spectrum likelihood: given, read from a file, or fitted once per process to
    the log-normal simulator (200 cosmologies x 10 maps, seeded)."""
    from diffinfer.spectrum_likelihood import PowerSpectrumLikelihood

    if isinstance(spectrum, PowerSpectrumLikelihood):
        return spectrum
    if spectrum is not None:
        return PowerSpectrumLikelihood.load(spectrum)
    key = (repr(sim.config), repr(sim.transform), float(noise_sigma))
    if key not in _SPECTRUM_CACHE:
        _SPECTRUM_CACHE[key] = PowerSpectrumLikelihood.from_simulator(sim, noise_sigma=noise_sigma)
    return _SPECTRUM_CACHE[key]
