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
from diffinfer.errors import InputError, LocateError
from diffinfer.fields.grid import as_density
from diffinfer.inference.emcee import run_emcee
from diffinfer.inference.grid import GridPosterior
from diffinfer.inference.gridding import REFINE_POINTS, grid_posterior
from diffinfer.inference.mc_control import MonteCarloControl
from diffinfer.inference.mc_error import QuadraticTerms
from diffinfer.inference.nuts import run_nuts
from diffinfer.inference.options import (
    DEFAULT_MAX_TIMESTEPS_FACTOR,
    DEFAULT_MC_TOL,
    LIKELIHOOD_OPTIONS,
    NPE_GRID,
    SAMPLER_OPTIONS,
    check_posterior_options,
    sampler_option,
)
from diffinfer.inference.samples import (
    SUMMARY_LEVELS,
    Samples,
    add_mcse,
    summary_entry,
    weighted_summary,
)
from diffinfer.likelihoods.diffusion import DiffusionLikelihood, diffusion_likelihood
from diffinfer.likelihoods.exact import exact_likelihood
from diffinfer.likelihoods.npe import npe_likelihood, npe_reference
from diffinfer.likelihoods.spectrum import power_likelihood
from diffinfer.likelihoods.terms import DEFAULT_TERMS
from diffinfer.parameters import DERIVED_NAMES, PARAM_NAMES, as_theta, derived
from diffinfer.prior import Prior
from diffinfer.progress import EvaluationBar
from diffinfer.provenance import environment, model_provenance
from diffinfer.simulators.lognormal import LognormalSimulator
from diffinfer.validation import check_bool, check_float, check_int

LOCATE_PLAN = 14
"""Likelihood evaluations the progress bar plans for the locator (Levenberg-Marquardt: 13.6
on average over the 100 maps of calibration/lognormal64-fast-test, whose posteriors cost 77.6
evaluations with the 64 of the aligned grid)."""


GRID_CHAINS = 4
"""Grid draws are independent; they are split into this many chains so that R-hat and ESS
(ArviZ) apply to them as to MCMC chains."""


SCALE_CUT_EDGE_MASS = 1e-3
"""Mass in the outer ring of the grid above which :meth:`Posterior.scale_cut` warns."""


class Posterior(MonteCarloControl):
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
        mc_refine: str = "fit",
    ) -> None:
        self.log_likelihood = log_likelihood
        self.mc_tol = float(mc_tol)
        self.max_timesteps = max_timesteps
        self.mc_refine = mc_refine
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

    @property
    def stochastic(self) -> DiffusionLikelihood | None:
        """The diffusion likelihood whose Monte Carlo error this posterior controls (None for
        the exact, power-spectrum and NPE likelihoods)."""
        return self._chunked

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
        spent; :class:`~diffinfer.errors.LocateError` if the likelihood has no locator."""
        if self.locator is None:
            raise LocateError("this likelihood has no locator")
        ticked = self._ticked
        if self._bar is not None:
            self._bar.stage("locating the maximum")
        centre, cov, spent = self.locator()
        self.n_evaluations += int(spent)
        if self._bar is not None:
            self._bar.advance(int(spent) - (self._ticked - ticked))
            n_grid = int(sampler_option("grid", self.options, "n_aligned")) ** 2
            self._bar.plan(n_grid)
            self._bar.stage("aligned grid")
        return centre, cov * float(self.info.get("temperature", 1.0)), spent

    def grid(self) -> GridPosterior:
        """The grid posterior (computed once): aligned with the located posterior where the
        likelihood can be located (``aligned=True``, the default), else adaptive."""
        if self._grid is None:
            opts = self._grid_options()
            aligned = opts.pop("aligned", True)  # checked with the other options
            locate = self.locate if aligned and self.locator is not None else None
            if locate is not None:
                plan = LOCATE_PLAN + int(sampler_option("grid", opts, "n_aligned")) ** 2
                plan += REFINE_POINTS if sampler_option("grid", opts, "refine") else 0
            else:
                plan = int(sampler_option("grid", opts, "n_coarse")) ** 2
                plan += 2 * int(sampler_option("grid", opts, "n_fine")) ** 2
            with self._progress("posterior (grid)", plan) as bar:
                bar.stage("locating the maximum" if locate else "adaptive grid")
                g = grid_posterior(self.log_prob, self.prior.box, locate=locate, **opts)
                self._grid = self._control_mc_error(
                    g, int(sampler_option("grid", opts, "upsample"))
                )
        return self._grid

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
        """The Monte Carlo error of the likelihood's estimate on this posterior (computed
        with its grid: :mod:`diffinfer.inference.mc_error`), or None where no grid was
        computed (MCMC on a likelihood without a grid surrogate). ``mean``: standard error
        of the posterior
        mean per parameter in posterior sd; ``sd``: relative standard error of the sd; zero
        for the references, whose likelihoods are deterministic."""
        if self._grid is None and self.method == "grid":
            self.grid()
        return None if self._grid is None else self._grid.mc_error

    def scale_cut(self, t_min: int, temperature: float = 1.0) -> GridPosterior:
        """The grid posterior under this likelihood cut to its terms at t >= ``t_min``,
        from the terms its grid has already evaluated: no network calls.

        The terms at t < t_min are dropped from the importance-sampled sum and every kept
        term keeps its weight w_t / (K q(t)), so the sum stays an unbiased estimate of the
        band's (docs/likelihood.md, "Scale cuts"), with the Monte Carlo error of the terms
        it keeps (``mc_error`` of the result: the same estimator as :meth:`mc_error`, the
        dropped terms counted as zeros of the stratified sample); the control variate's
        closed form is summed from t_min. Use it for a ladder of cuts on the same maps; a
        single cut is computed afresh, with its own timesteps, by
        ``posterior(..., t_min=t_min)``.

        The points are this posterior's grid, laid out for the whole bound. A cut
        posterior that is much wider reaches the grid's edge: ``edge_mass`` of the result
        says how much mass lies in its outer ring, and a warning names it above 1e-3.

        Parameters
        ----------
        t_min
            The lowest timestep kept: at least the likelihood's own ``t_min`` (1 unless
            the posterior was computed with a cut), at most the schedule's T.
        temperature
            The cut posterior uses L^(1/temperature). Default 1: a temperature fitted for
            the whole bound (a model card's) does not apply to a band of it.

        Returns
        -------
        GridPosterior
            The cut posterior on the same cells, with ``mc_error`` (``mean``, ``sd``,
            ``t_min``, ``n_timesteps``: the timesteps kept, of ``n_timesteps_total``).

        Raises
        ------
        InputError
            A posterior without a diffusion likelihood of the full bound (references,
            ``"l0"``, term lists, MCMC methods), t_min outside its range, or a cut that
            keeps none of the sampled timesteps.
        """
        from diffinfer.inference.mc_error import posterior_mc_error

        like = self._chunked
        if like is None or like.terms != "vlb" or self.method != "grid":
            raise InputError(
                "scale_cut needs the grid posterior of the diffusion likelihood of the full "
                f"bound (likelihood='vlb', method='grid'); this one is {self.info.get('terms')!r} "
                f"with method {self.method!r}"
            )  # fmt: skip
        T = like.model.schedule.n_steps
        t_min = check_int("t_min", t_min, low=like.t_min, high=T,
                          what=f"lowest timestep kept ({like.t_min} ... {T})")  # fmt: skip
        temperature = check_float("temperature", temperature, low=0, low_open=True)
        g = self.grid()
        timesteps = like.plan.timesteps.numpy()
        keep = timesteps >= t_min
        if not keep.any():
            raise InputError(
                f"none of the {len(timesteps)} timesteps of this posterior's likelihood lies "
                f"at t >= {t_min} (the largest is {int(timesteps.max())}): compute the cut "
                f"posterior afresh with posterior(..., t_min={t_min})"
            )
        pts, inside = g.evaluated_points()
        terms = np.zeros((len(pts), len(timesteps)))
        terms[inside] = np.where(keep, self._grid_terms(pts[inside]), 0.0)
        theta = torch.as_tensor(pts[inside])
        with torch.no_grad():
            log_l = terms[inside].sum(axis=1) + like.gaussian_log_l(theta, t_min).numpy()
        values = np.full(len(pts), -np.inf)
        values[inside] = self.prior.log_prob(theta).numpy() + log_l / temperature
        upsample = int(sampler_option("grid", self._grid_options(), "upsample"))
        cut = g.retabulated(values, g.n_evaluations, upsample, self.prior.box)
        weights = (cut.base or cut).weights.ravel()
        err = posterior_mc_error(pts, np.where(inside, weights, 0.0), terms, timesteps,
                                 temperature=temperature)  # fmt: skip
        cut.mc_error = {"mean": err["mean"], "sd": err["sd"], "stochastic": True,
                        "t_min": t_min, "temperature": temperature,
                        "n_timesteps": int(keep.sum()),
                        "n_timesteps_total": len(timesteps)}  # fmt: skip
        if cut.edge_mass > SCALE_CUT_EDGE_MASS:
            warnings.warn(
                f"{self.name}: the posterior cut at t >= {t_min} puts {cut.edge_mass:.2g} of "
                "its mass in the outer ring of the grid laid out for the whole bound; compute "
                f"it afresh with posterior(..., t_min={t_min})",
                UserWarning, stacklevel=2,
            )  # fmt: skip
        return cut

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
        drawn from this posterior (:mod:`diffinfer.inference.goodness_of_fit`; computed
        once). Warns (:class:`~diffinfer.inference.goodness_of_fit.GoodnessOfFitWarning`)
        below :data:`~diffinfer.inference.goodness_of_fit.GOF_THRESHOLD`. Where no simulator
        of the model's maps is at hand (an N-body model), returns
        ``{"available": False, "reason": ...}``."""
        from diffinfer.inference.goodness_of_fit import GoodnessOfFitWarning, goodness_of_fit

        if self.gof_source is None:
            return {
                "available": False,
                "reason": "no fast simulator of this model's maps (log-normal maps only)",
            }
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
    def _start(self, n: int) -> np.ndarray:
        """n starting points: draws from the grid where it was computed, else the prior."""
        if self._grid is not None:
            return self._grid.sample(n, seed=self.seed)
        return self.prior.sample(n, seed=self.seed)

    def _emcee(self, n: int) -> Samples:
        """emcee (:func:`~diffinfer.inference.emcee.run_emcee`) on this posterior, with grid
        independence proposals where there is a surrogate; all draws after burn-in and
        thinning."""
        opts = {k: v for k, v in self.options.items() if k != "surrogate"}
        surrogate = self._surrogate()
        moves = None
        if surrogate is not None:
            from diffinfer.inference.two_stage import independence_move

            moves = independence_move(surrogate)

        def log_prob(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.log_prob(torch.as_tensor(x)).numpy()

        self.sampler, chain, lp, run = run_emcee(
            log_prob, n, self._start, self._progress, seed=self.seed, moves=moves, **opts
        )
        first = "grid independence proposals" if surrogate else None
        diag = {"n_evaluations": int(self.n_evaluations), "first_stage": first, **run}
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
        from diffinfer.inference.two_stage import GridSurrogate

        return GridSurrogate(self.grid())

    def _nuts(self, n: int) -> Samples:
        """NUTS (:func:`~diffinfer.inference.nuts.run_nuts`) on this posterior, or delayed
        acceptance on the grid surrogate where there is one."""
        opts = {k: v for k, v in self.options.items() if k != "surrogate"}
        surrogate = self._surrogate()
        if surrogate is not None:
            import math

            from diffinfer.inference.two_stage import delayed_acceptance_nuts

            chains = int(sampler_option("nuts", opts, "num_chains"))
            warmup = int(sampler_option("nuts", opts, "warmup_steps"))
            depth = int(sampler_option("nuts", opts, "max_tree_depth"))
            self.sampler = None
            theta, lp, diag = delayed_acceptance_nuts(
                self.log_prob, surrogate, self.prior, chains=chains, warmup=warmup,
                draws=max(1, math.ceil(n / chains)), max_tree_depth=depth, seed=self.seed,
                progress=self.progress,
            )  # fmt: skip
            diag["n_evaluations"] = int(self.n_evaluations)
            diag["first_stage"] = "NUTS on the grid surrogate (delayed acceptance)"
            samples = Samples(theta, "nuts", {"lp": lp, **self._log_likelihood(theta, lp)},
                              {**self.info, "diagnostics": diag})  # fmt: skip
            _add_convergence(samples, diag)
            return samples
        self.sampler, theta, lp, divergent, run = run_nuts(
            self.log_prob, self.prior, n, self._start, seed=self.seed, progress=self.progress,
            **opts,
        )  # fmt: skip
        diag = {"n_evaluations": int(self.n_evaluations), **run}
        samples = Samples(theta, "nuts", {"lp": lp, "diverging": divergent,
                                          **self._log_likelihood(theta, lp)},
                          {**self.info, "diagnostics": diag})  # fmt: skip
        _add_convergence(samples, diag)
        return samples


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
        :data:`~diffinfer.likelihoods.terms.DEFAULT_CV_TIMESTEPS` importance-sampled
        timesteps with the control variate, else
        :data:`~diffinfer.likelihoods.terms.DEFAULT_VLB_TIMESTEPS`, unless ``n_timesteps``
        is given), ``"l0"``, a list of term indices (diffusion likelihood); ``"exact"``
        (log-normal maps only: the closed-form likelihood, the reference); ``"power"`` (the
        Gaussian likelihood of the binned power spectrum, fitted to simulations:
        :class:`~diffinfer.likelihoods.spectrum.PowerSpectrumLikelihood`); ``"npe"``,
        ``"npe-power"`` and ``"npe-diffusion"`` (neural posterior estimators trained with
        sbi on the power spectrum plus a CNN embedding, on the power spectrum alone, or on
        the power spectrum plus the diffusion likelihood's located maximum and Fisher
        covariance: the density q(theta | map) serves as the likelihood under the box prior
        it was trained with; option ``npe`` names the reference, default
        :data:`~diffinfer.likelihoods.npe.DEFAULT_REFERENCES`).
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
        box_size, proposal, control_variate, t_min (a scale cut): see
        :class:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood`; ``temperature``: the
        posterior uses L^(1/temperature), default the value the model card records for
        this term set (see :mod:`diffinfer.calibration`), else 1, and 1 opts out;
        ``spectrum``: a fitted power-spectrum likelihood or its file, default
        fitted to the log-normal simulator; ``npe``: an NPE reference, its name or
        directory), the Monte Carlo error control of the diffusion likelihood (``mc_tol``:
        the largest standard error of the posterior mean, in posterior sd, default
        :data:`DEFAULT_MC_TOL`; ``max_timesteps``: the timesteps it may grow to, default
        :data:`DEFAULT_MAX_TIMESTEPS_FACTOR` times the starting ones; ``mc_refine``:
        ``"fit"`` (default: fitted quadratics where they fit, the grid where they do not)
        or ``"grid"``, how added timesteps enter the grid,
        :data:`~diffinfer.inference.options.MC_REFINE`; docs/posterior.md) and
        sampler options (grid: n_coarse, n_fine,
        tol, max_passes; emcee: n_walkers, max_steps, min_tau_multiple; nuts: num_chains,
        warmup_steps, max_tree_depth).
    """
    check_posterior_options(likelihood, method, seed, options)
    check_bool("progress", progress)
    if prior is not None and not isinstance(prior, Prior):
        raise InputError(f"prior must be a diffinfer.Prior (e.g. di.Prior.gaussian(mean, std)) "
                         f"or None, got {prior!r}")  # fmt: skip
    like_opts = {k: v for k, v in options.items() if k in LIKELIHOOD_OPTIONS}
    mc_tol = options.get("mc_tol")
    mc_tol = DEFAULT_MC_TOL if mc_tol is None else float(mc_tol)
    max_timesteps = options.get("max_timesteps")
    mc_refine = options.get("mc_refine") or "fit"
    temperature = like_opts.pop("temperature", None)
    spectrum = like_opts.pop("spectrum", None)
    sampler_opts = {k: v for k, v in options.items() if k in SAMPLER_OPTIONS[method]}
    if method == "grid" and isinstance(likelihood, str) and likelihood.startswith("npe"):
        # a flow's density can be sharp (piled against the prior's edge): the default 8^2 +
        # 12^2 cells misplace it by up to 1 sd, while 16^2 + 24^2 agree with 48^2 + 64^2
        # (C2ST <= 0.51, docs/posterior.md); its evaluations cost about 1 ms
        for name, cells in NPE_GRID.items():
            sampler_opts.setdefault(name, cells)
    if isinstance(model, (str, os.PathLike)):
        from diffinfer.diffusion.checkpoint import load_model

        model = load_model(model)
    elif model is not None and not isinstance(model, DiffusionModel):
        raise InputError(f"model must be a model name, a directory, a DiffusionModel or None, "
                         f"got {type(model).__name__}")  # fmt: skip
    npe = None
    if isinstance(likelihood, str) and likelihood.startswith("npe"):
        npe = npe_reference(likelihood, like_opts.pop("npe", None))
    if npe is not None:
        n_pix, data_mean = npe.field.n_pix, 1.0
    elif model is not None:
        n_pix, data_mean = model.field.n_pix, model.data_mean
    else:
        n_pix, data_mean = LognormalSimulator().config.n_pix, 1.0
    field = _as_maps(field, kind, n_pix, data_mean)
    n_maps = 1 if field.ndim == 2 else len(field)
    noise_sigma = float(like_opts.get("noise_sigma") or 0.0)
    if npe is not None:
        built = npe_likelihood(npe, field, likelihood)
    elif likelihood == "exact":
        # an aligned grid (Fisher scoring) only when asked for: evaluations cost 0.2 ms
        built = exact_likelihood(LognormalSimulator.for_model(model), field, noise_sigma,
                                 aligned=options.get("aligned") is True)  # fmt: skip
    elif likelihood == "power":
        card = None if model is None else model.card
        built = power_likelihood(LognormalSimulator.for_model(model), field, spectrum,
                                 noise_sigma, card=card)  # fmt: skip
    elif model is None:
        raise InputError(
            "the diffusion likelihood needs a model: give one (a name, a directory or "
            "'oracle'), or use likelihood='exact' or 'power'"
        )
    else:
        built = diffusion_likelihood(model, field, likelihood, seed, progress, **like_opts)
        like = built.stochastic
        start = like.n_timesteps_used
        if max_timesteps is None:
            max_timesteps = DEFAULT_MAX_TIMESTEPS_FACTOR * start if like.adaptive else start
        elif like.adaptive and int(max_timesteps) < start:
            raise InputError(f"max_timesteps={max_timesteps} is below the {start} timesteps "
                             f"the likelihood starts from; give max_timesteps >= {start} "
                             f"(or fewer n_timesteps)")  # fmt: skip
        built.settings.update(mc_tol=mc_tol, max_timesteps=max_timesteps, mc_refine=mc_refine)
    log_like, locator, chunked = built.log_like, built.locator, built.stochastic
    description, calibration, settings = built.description, built.temperature, built.settings
    terms_info, box = built.info, built.box
    if temperature is None:  # the option was checked with the others; the card's is here
        temperature = (
            1.0
            if calibration is None
            else check_float("the temperature in the model card", calibration, low=0, low_open=True)
        )
    temperature = float(temperature)
    verdict = None
    if chunked is not None and not model.is_oracle:
        from diffinfer.inference.verdicts import warn_if_uncalibrated

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
        info["calibration"] = (
            {"verdict": "no study on record"}
            if verdict is None
            else {k: verdict[k] for k in ("verdict", "study", "n_maps", "failed")}
        )
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
                     mc_tol=mc_tol, max_timesteps=max_timesteps,
                     mc_refine=mc_refine)  # fmt: skip
    if n_maps == 1:
        post.gof_source = _gof_source(field, model, npe, noise_sigma)
    return post


def _as_maps(field, kind: str, n_pix: int, data_mean: float) -> np.ndarray | torch.Tensor:
    """The map(s) of :func:`posterior` as densities: one map (N, N), or the maps of one
    cosmology (M, N, N) from a stack or a list; files (.npy / .npz) are read. A list of
    maps of different shapes, or a map unlike its kind, is refused naming the first one."""
    from diffinfer.fields.grid import read_map

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
    return np.asarray(field, np.float64), LognormalSimulator.for_model(model), float(noise)
