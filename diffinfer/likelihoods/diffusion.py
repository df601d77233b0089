"""The diffusion likelihood: log L(theta) ~ log p(map | theta) from the terms of the VLB.

For a model-space map y and x_t = sqrt(a_t) y + sqrt(1 - a_t) eps (a_t = alpha_bar_t), the
negative variational lower bound of a DDPM is L_T + sum_{t=2}^T L_{t-1} + L_0 with

    L_{t-1} = w_t E ||eps - eps_hat(x_t, t, theta)||^2,  w_t = beta_t / (2 alpha_t (1 - a_{t-1})),

(the KL between q(x_{t-1} | x_t, y) and the reverse step with variance
beta_t (1 - a_{t-1}) / (1 - a_t), whose constant cancels), and a continuous Gaussian decoder

    L_0 = -log N(y; mu_hat(x_1, 1, theta), beta_1 I)
        = ||eps - eps_hat(x_1, 1, theta)||^2 / (2 alpha_1) + const.

L_T and every constant are independent of theta and drop out of any posterior, so

    log L(theta) = - sum_{i in S} w_{i+1} mean_m ||eps_im - eps_hat(x_{i+1}^(m), i+1, theta)||^2

for a set S of term indices (term i is L_i and uses timestep t = i + 1): ``"l0"`` = {0}, a list,
or ``"vlb"`` = all T terms (or an unbiased, stratified importance-sampled estimate from
``n_timesteps`` of them). The noise (and the sampled timesteps) are drawn once from ``seed``
and shared by every theta (common random numbers), so log L is deterministic and smooth in
theta, and differentiable through the denoiser.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch

from diffinfer.diffusion.batching import SharedNetwork, denoise
from diffinfer.diffusion.model import DiffusionModel, resolve_precision
from diffinfer.errors import InputError
from diffinfer.likelihoods.built import BuiltLikelihood
from diffinfer.likelihoods.locate import GaussNewtonLocator
from diffinfer.likelihoods.terms import (
    DEFAULT_TERMS,
    TermPlan,
    control_variate_applies,
    default_max_batch,
    default_timesteps,
    plan_terms,
    term_weights,
    timestep_proposal,
)
from diffinfer.parameters import as_theta
from diffinfer.validation import check_bool, check_float, check_int

PROGRESS_MIN_CALLS = 256
"""Denoiser calls above which a direct call of the likelihood shows a progress bar (a few
seconds of a network on a CPU)."""


class DiffusionLikelihood(GaussNewtonLocator):
    """log L(theta) of one map, or of several maps of one cosmology (the product of their
    likelihoods), under a diffusion model, batched over theta.

    Parameters
    ----------
    model
        A trained :class:`~diffinfer.diffusion.DiffusionModel` (or the oracle).
    field
        The map, (N, N), or a stack of maps of one cosmology, (M, N, N): a density in the data
        units of the model card (``space="density"``) or already in model space
        (``space="model"``). A stack gives the sum of the maps' log likelihoods, each map
        with its own noise draws at the shared timesteps (so the Monte Carlo machinery sees
        one term per timestep, summed over the maps).
    terms
        ``"vlb"`` (default: the full variational bound), ``"l0"`` (the paper's choice, which
        cannot tell cosmologies apart on these maps: docs/likelihood.md) or a list of term
        indices.
    n_noise
        Noise draws averaged per term.
    seed
        Seeds the noise and any sampled timesteps (common random numbers).
    n_timesteps
        With ``terms="vlb"``: an importance-sampled estimate from this many timesteps.
        ``"auto"`` (default, as :func:`diffinfer.posterior` and the Pyro distributions):
        :data:`DEFAULT_CV_TIMESTEPS` with the control variate, else
        :data:`DEFAULT_VLB_TIMESTEPS` (:func:`default_timesteps`); None: every term,
        exactly (1,000 timesteps: slow).
    max_batch
        Denoiser evaluations per call (bounds memory). Default: :func:`default_max_batch`
        (per device: measured on CPUs in docs/performance.md; on a GPU from its memory).
    precision
        ``"fp32"``, ``"bf16"`` (autocast of the network) or ``"auto"``: bf16 where the
        device computes it natively (a GPU, or a CPU with AVX-512 bf16 / AMX), else fp32
        (emulated bf16 is several times slower: docs/performance.md).
    proposal
        With ``terms="vlb"`` and ``n_timesteps``: the timestep proposal. ``"card"`` (default):
        the one fitted for this model and stored in its card
        (:func:`diffinfer.likelihoods.proposal.fit_timestep_proposal`), else ``"default"``: q(t)
        proportional to w_t alpha_bar_t; or an array of T numbers.
    space
        ``"density"`` or ``"model"``.
    kind
        With ``space="density"``: what the map holds, ``"density"`` (rho / rho_mean, mean
        about 1; checked), ``"overdensity"``, ``"mass"`` or ``"log10"`` (converted; see
        :func:`~diffinfer.fields.grid.as_density`).
    noise_sigma
        Standard deviation of Gaussian white noise added to the map in model space (an
        observed map y + sigma_n n). Such a map is a diffusion state: sqrt(a*) (y + sigma_n n)
        with a* = 1 / (1 + sigma_n^2). The likelihood starts at the first timestep t* whose
        noise-to-signal ratio (1 - a_t*) / a_t* reaches sigma_n^2 (the small remainder of noise
        is added from ``seed``) and sums the terms of the reverse chain above it, each the KL
        between q(x_{t-1} | x_t, x_t*) and the model's reverse step; ``"l0"`` is the single
        term at t* + 1.
    box_size
        Side of the map in Mpc/h, if known: checked against the model card (a map of another
        physical size has another spectrum, whatever its pixel count).
    progress
        Show a progress bar (theta points, with the remaining time) on calls that take
        more than :data:`PROGRESS_MIN_CALLS` denoiser calls; False: silent.
    control_variate
        With ``terms="vlb"`` and a network with a spectral branch (a learned Wiener filter,
        :mod:`diffinfer.diffusion.spectral`): write each term as the error of the branch's
        filter alone plus the rest, and replace the first by its expectation over the noise,
        summed over every timestep in closed form
        (:meth:`~diffinfer.diffusion.spectral.SpectralBranch.expected_error`). Only the rest
        (what the U-Net adds) is estimated from the sampled timesteps and noise, so the
        estimate stays unbiased and its Monte Carlo noise shrinks to that of the U-Net's
        share (docs/likelihood.md). ``"auto"`` (default): on wherever it applies (not for
        ``noise_sigma``, ``"l0"`` or term lists, nor the oracle, whose fast path is exact
        per draw); True: required (an error where it does not apply); False: off.
    t_min
        A scale cut, the analogue of a power-spectrum analysis's k_max: with ``terms="vlb"``,
        sum only the terms at timesteps t >= ``t_min`` (1, the default, keeps every term).
        The low-noise terms, which carry the map's smallest scales, are dropped; the
        timestep proposal is renormalised to t >= t_min, and the control variate's
        closed-form part sums over the same timesteps. With ``noise_sigma`` the terms start
        at the later of t_min and the noise level's first timestep. The result is the sum
        of a band of the bound's terms, not the likelihood of a smoothed map: calibrate it
        (a temperature fitted for the full bound does not apply to it; the description
        names the cut). See docs/likelihood.md.

    Notes
    -----
    ``likelihood(theta)`` returns log L in nats up to a theta-independent constant: use
    differences. Outside the model's prior box it returns -inf (never raises), so samplers
    can call it anywhere.
    """

    fast_oracle: bool = True
    """With the oracle, evaluate in Fourier space (:meth:`_oracle_log_l`); False calls the
    denoiser like a network (the tests compare the two)."""

    on_chunk: Callable[[float], None] | None = None
    """Called after each chunk of denoiser calls with the theta points it completed (a
    fraction of a point when a point's calls span chunks); the posterior's progress bar sets
    it (:mod:`diffinfer.progress`). When None, a call of more than
    :data:`PROGRESS_MIN_CALLS` denoiser calls shows its own bar unless ``progress=False``."""

    def __init__(
        self,
        model: DiffusionModel,
        field: np.ndarray | torch.Tensor,
        *,
        terms: str | list[int] = DEFAULT_TERMS,
        n_noise: int = 1,
        seed: int = 0,
        n_timesteps: int | str | None = "auto",
        max_batch: int | None = None,
        precision: str = "auto",
        space: str = "density",
        kind: str = "density",
        noise_sigma: float | None = None,
        box_size: float | None = None,
        proposal: str | np.ndarray = "card",
        progress: bool = True,
        control_variate: bool | str = "auto",
        t_min: int = 1,
    ) -> None:
        if space not in ("density", "model"):
            raise InputError(f"space must be 'density' or 'model', got {space!r}")
        check_int("seed", seed, low=0)
        if noise_sigma is not None:
            check_float("noise_sigma", noise_sigma, low=0, what="model-space pixel noise")
        if int(n_noise) != n_noise or n_noise < 1:
            raise InputError(f"n_noise must be a positive integer, got {n_noise}")
        if box_size is not None and not math.isclose(box_size, model.field.box_size, rel_tol=1e-6):
            raise InputError(
                f"the map covers {box_size:g} Mpc/h but the model was trained on "
                f"{model.field.box_size:g} Mpc/h maps; use a model trained for this box"
            )
        if max_batch is None:
            max_batch = default_max_batch(model)
        if int(max_batch) != max_batch or max_batch < 1:
            raise InputError(f"max_batch must be a positive integer, got {max_batch}")
        precision = resolve_precision(model.device, precision)
        self.model = model
        if space == "density":
            self.y = model.to_model_space(field, kind=kind)
        else:
            self.y = model.check_maps(field)
        self.maps = self.y if self.y.ndim == 3 else self.y[None]
        """The model-space maps, (M, N, N) (M = 1 for one map)."""
        self.terms, self.n_noise, self.seed = terms, int(n_noise), int(seed)
        if n_timesteps == "auto":
            n_timesteps = default_timesteps(model, terms, noise_sigma, control_variate)
        elif isinstance(n_timesteps, str):
            raise InputError(f"n_timesteps must be a positive integer, None (every term) or "
                             f"'auto', got {n_timesteps!r}")  # fmt: skip
        self._draws = self.n_noise * len(self.maps)  # per term: every map's noise draws
        self.n_timesteps, self.max_batch, self.precision = n_timesteps, int(max_batch), precision
        self.noise_sigma = noise_sigma
        self.progress = check_bool("progress", progress)
        self.control_variate = self._check_control_variate(control_variate, terms, noise_sigma)
        self._fourier: dict | None = None
        self._cache: dict[bytes, np.ndarray] = {}
        self.n_denoiser_calls = 0
        """Denoiser evaluations spent so far (each one map through the network)."""
        self.network: SharedNetwork | None = None
        """Where the denoiser calls go: None, the model itself; a
        :class:`~diffinfer.diffusion.batching.SharedNetwork`, batched with other maps' calls
        (:func:`diffinfer.posteriors` sets it)."""
        g = torch.Generator().manual_seed(int(seed))
        self._generator = g
        schedule = model.schedule
        first = 1 if not noise_sigma else self._first_timestep(float(noise_sigma)) + 1
        self._first = first
        self.t_min = self._check_t_min(t_min, terms)
        self._lowest = max(first, self.t_min)  # the lowest timestep summed
        sampled = terms == "vlb" and n_timesteps is not None
        q = timestep_proposal(model, proposal) if sampled else None
        self.proposal = proposal
        self.plan = plan_terms(model, terms, n_timesteps=n_timesteps, generator=g,
                               first=first if terms != "vlb" else self._lowest,
                               proposal=q)  # fmt: skip
        self._q = q
        self.rounds = [len(self.plan.timesteps)]
        """Timesteps drawn per round: the first plan, then each :meth:`add_timesteps`."""
        self._x_star = None
        if noise_sigma:
            # the noisy map as the diffusion state x_t* (topped up to the noise level of t*)
            n = self.y.shape[-1]
            a_star = schedule.alpha_bar[first - 1]
            extra = (1 - a_star) / a_star - float(noise_sigma) ** 2
            top_up = torch.randn(len(self.maps), n, n, generator=g, dtype=torch.float64)
            self._x_star = a_star.sqrt() * (self.maps + extra.clamp_min(0).sqrt() * top_up)
        self.x_t, self.target = self._states(self.plan.timesteps, g)
        self._first_round_state = g.get_state()

    def _states(self, timesteps: torch.Tensor, g: torch.Generator):
        """Noisy states x_t and targets of the terms at ``timesteps``, (K, M n_noise, N, N)
        each (map-major: map i's draws are i n_noise ... (i + 1) n_noise - 1), with noise
        drawn from ``g``."""
        schedule = self.model.schedule
        K, n = len(timesteps), self.y.shape[-1]
        eps = torch.randn(K, self._draws, n, n, generator=g, dtype=torch.float64)
        ab = schedule.alpha_bar[timesteps].reshape(K, 1, 1, 1)
        if self._x_star is None:
            # the term is w_t ||eps_hat - eps||^2
            y = self.maps.repeat_interleave(self.n_noise, dim=0)
            return ab.sqrt() * y + (1 - ab).sqrt() * eps, eps
        first, x_star = self._first, self._x_star.repeat_interleave(self.n_noise, dim=0)
        a_star = schedule.alpha_bar[first - 1]
        rel = ab / a_star  # q(x_t | x_t*) = N(sqrt(rel) x_t*, (1 - rel) I)
        x_t = rel.sqrt() * x_star + (1 - rel).sqrt() * eps
        # target of q(x_{t-1} | x_t, x_t*): the point x_t* for t = t* + 1, else its mean
        t = timesteps.reshape(K, 1, 1, 1)
        beta = schedule.betas[t]
        rel_prev = schedule.alpha_bar[t - 1] / a_star
        mean = (rel_prev.sqrt() * beta / (1 - rel)) * x_star + (
            (1 - beta).sqrt() * (1 - rel_prev) / (1 - rel)
        ) * x_t
        target_mean = torch.where(t == first, x_star.expand_as(mean), mean)
        # the reverse mean c0 x0_hat + ct x_t equals target_mean - k (eps_hat - r): solve for r
        c0, ct = (c[t] for c in schedule.posterior_mean_coefficients())
        k = c0 * (1 - ab).sqrt() / ab.sqrt()
        return x_t, ((c0 / ab.sqrt() + ct) * x_t - target_mean) / k

    @property
    def adaptive(self) -> bool:
        """Whether timesteps can be added (:meth:`add_timesteps`): an importance-sampled
        bound (``terms="vlb"`` with ``n_timesteps`` below the number of terms)."""
        n_terms = self.model.schedule.n_steps - self._lowest + 1
        return self.terms == "vlb" and self.rounds[0] < n_terms

    @property
    def n_timesteps_used(self) -> int:
        """Timesteps in the estimate now (the first plan and every added round)."""
        return len(self.plan.timesteps)

    def add_timesteps(self, n: int) -> None:
        """Add ``n`` timesteps to an importance-sampled bound, reusing every evaluation made.

        The new timesteps are a further stratified sample of the same proposal, with its own
        offset and noise drawn from the likelihood's seed (so a posterior that adds them is
        as reproducible as one that does not). Each round is an unbiased estimate of the sum
        of all terms; the estimate is their average weighted by size, i.e. every term gets
        the weight w_t / (K q(t)) with K the timesteps of all rounds. Cached per-term values
        are kept: a later call evaluates only the new terms at a theta seen before.
        """
        n = check_int("n", n, low=1, what="timesteps to add")
        if not self.adaptive:
            raise InputError(
                f"timesteps can be added only to an importance-sampled bound (terms='vlb' "
                f"with n_timesteps); this likelihood is {self.description!r}"
            )
        extra = plan_terms(self.model, "vlb", n_timesteps=n, generator=self._generator,
                           first=self._lowest, proposal=self._q, sample=True)  # fmt: skip
        x_t, target = self._states(extra.timesteps, self._generator)
        timesteps = torch.cat([self.plan.timesteps, extra.timesteps])
        k_old, k_new = len(self.plan.timesteps), len(timesteps)
        weights = torch.cat([self.plan.weights * (k_old / k_new), extra.weights * (n / k_new)])
        name = self.plan.description.replace(f"from {k_old} timesteps", f"from {k_new} timesteps")
        self.plan = TermPlan(timesteps, weights, name)
        self.x_t, self.target = torch.cat([self.x_t, x_t]), torch.cat([self.target, target])
        self.rounds.append(n)
        self._fourier = None

    def drop_added_timesteps(self) -> None:
        """Return to the first round of timesteps (undo every :meth:`add_timesteps`), keeping
        the cached values of its terms; timesteps added afterwards are those the first
        :meth:`add_timesteps` would have drawn (the seed's generator is rewound)."""
        k = self.rounds[0]
        w = self.plan.weights[:k] * (len(self.plan.timesteps) / k)
        name = self.plan.description.replace(f"from {len(self.plan.timesteps)} timesteps",
                                             f"from {k} timesteps")  # fmt: skip
        self.plan = TermPlan(self.plan.timesteps[:k], w, name)
        self.x_t, self.target = self.x_t[:k], self.target[:k]
        self.rounds = [k]
        self._cache = {key: v[:k] for key, v in self._cache.items()}
        self._fourier = None
        self._generator.set_state(self._first_round_state)

    def cached_terms(self, theta: np.ndarray) -> np.ndarray:
        """The per-term contributions to log L (as :meth:`term_log_l`) already computed at the
        rows of theta, (B, K); NaN for a term not (yet) evaluated at a row."""
        err = self._cached_errors(np.atleast_2d(np.asarray(theta, np.float64)))
        return -(err * self.plan.weights.numpy())

    def _cached_errors(self, rows: np.ndarray) -> np.ndarray:
        """The cached squared errors of every term at float64 rows (B, 2): (B, K), NaN where
        a term was not evaluated at a row."""
        err = np.full((len(rows), len(self.plan.timesteps)), np.nan)
        for i, row in enumerate(rows):
            got = self._cache.get(row.tobytes())
            if got is not None:
                err[i, : len(got)] = got
        return err

    def _check_control_variate(self, option: bool | str, terms, noise_sigma) -> bool:
        """Whether the Wiener-filter control variate is used (``control_variate``)."""
        if option != "auto":
            check_bool("control_variate", option)
        possible = control_variate_applies(self.model, terms, noise_sigma)
        if option is True and not possible:
            raise InputError(
                "control_variate=True needs terms='vlb', a map without noise_sigma and a "
                "network with a spectral branch (architecture 'spectral: true'); use "
                "control_variate='auto' to apply it only where it can be"
            )
        return possible and option is not False

    def gaussian_log_l(self, theta: torch.Tensor, t_min: int | None = None) -> torch.Tensor:
        """The control variate's closed-form part of log L at the rows of theta, (B,):
        -sum_t w_t E_eps ||eps - eps_W||^2 over every timestep t >= ``t_min`` (default the
        likelihood's own), with eps_W the spectral branch's Wiener filter (zero when the
        control variate is off)."""
        if not self.control_variate:
            return torch.zeros(theta.shape[0], dtype=torch.float64)
        unet = self.model.denoiser
        device = self.model.device
        unit = unet.config.prior.to_unit(theta.to(device=device, dtype=torch.float32))
        err = sum(unet.spectral.expected_error(y.to(device), unit).cpu() for y in self.maps)
        w = term_weights(self.model).clone()
        w[: max(self._lowest, t_min or 1) - 1] = 0.0
        return -(err * w).sum(dim=-1)

    def _check_t_min(self, t_min: object, terms: object) -> int:
        """The scale cut ``t_min``, checked against the schedule and the term set."""
        T = self.model.schedule.n_steps
        value = check_int("t_min", t_min, low=1, high=T,
                          what=f"lowest timestep summed (1 ... {T})")  # fmt: skip
        if value > 1 and terms != "vlb":
            raise InputError(
                f"t_min applies to the full bound (terms='vlb'), not to terms={terms!r}: a "
                "term list chooses its timesteps itself, and 'l0' is one term"
            )
        return value

    def _first_timestep(self, sigma: float) -> int:
        """t*: the first timestep whose noise-to-signal ratio reaches sigma^2."""
        ab = self.model.schedule.alpha_bar.numpy()
        ratio = (1 - ab[1:]) / ab[1:]
        if not np.isfinite(sigma) or sigma < 0:
            raise InputError(f"noise_sigma must be a finite number >= 0, got {sigma}")
        above = np.nonzero(ratio >= sigma**2 * (1 - 1e-12))[0]
        if above.size == 0 or above[0] + 1 >= self.model.schedule.n_steps:
            raise InputError(
                f"noise_sigma = {sigma} exceeds the noise level of the schedule's last steps"
            )
        return int(above[0]) + 1

    @property
    def description(self) -> str:
        """The estimator in words: the term plan, and the control variate when it is used
        (the key under which a model card stores a fitted temperature)."""
        name = self.plan.description
        if self.t_min > 1:
            name += f", scale cut t >= {self.t_min}"
        if self.control_variate:
            return name + ", Wiener-filter control variate"
        return name

    @property
    def n_evaluations_per_theta(self) -> int:
        """Denoiser evaluations per theta: terms x noise draws."""
        return self.target.shape[0] * self.target.shape[1]

    def __call__(self, theta: np.ndarray | torch.Tensor) -> torch.Tensor:
        """log L at each row of theta (B, 2) or at one theta (2,) -> (B,) float64 tensor.

        Differentiable when ``theta`` is a tensor that requires gradients (as the gradient
        samplers' is); otherwise evaluated without an autograd graph, so that memory does not
        grow with the number of theta rows (the graph of the network costs about 1 GB per row).
        """
        grad = isinstance(theta, torch.Tensor) and theta.requires_grad
        theta = as_theta(theta).cpu()  # bookkeeping on the CPU; the network runs on its device
        prior = self.model.field.prior
        inside = prior.contains(theta.detach())
        out = torch.full((theta.shape[0],), -math.inf, dtype=torch.float64)
        if not bool(inside.any()):
            return out
        th = theta[inside]
        own_bar = (self.on_chunk is None and self.progress and not self._fast_path
                   and th.shape[0] * self.n_evaluations_per_theta > PROGRESS_MIN_CALLS)  # fmt: skip
        if own_bar:
            from diffinfer.progress import EvaluationBar

            bar = EvaluationBar(True, "likelihood", th.shape[0], unit="theta points")
            self.on_chunk = bar.advance
        try:
            with contextlib.nullcontext() if grad else torch.no_grad():
                log_l = self.term_log_l(th).sum(dim=-1) + self.gaussian_log_l(th)
        finally:
            if own_bar:
                self.on_chunk = None
                bar.close()
        return out.index_put((torch.nonzero(inside)[:, 0],), log_l)

    @property
    def _fast_path(self) -> bool:
        return self.model.is_oracle and self.fast_oracle

    def term_log_l(self, theta: torch.Tensor, columns: slice | None = None) -> torch.Tensor:
        """Each sampled term's contribution to log L at the rows of theta (inside the prior
        box), shape (B, K): -weight_k mean_m ||eps_hat - target||^2, or with the control
        variate -weight_k mean_m (||eps_hat - target||^2 - ||eps_W - target||^2). log L is
        their sum plus :meth:`gaussian_log_l`. ``columns``: only these terms (B, K').

        Without gradients, the values are cached per theta row and term: a row seen before
        costs only the terms added since (:meth:`add_timesteps`)."""
        cols = slice(None) if columns is None else columns
        if theta.requires_grad:
            return -(self._term_errors(theta) * self.plan.weights)[:, cols]
        th = theta.detach().to(torch.float64)
        rows = th.numpy()
        K = len(self.plan.timesteps)
        err = self._cached_errors(rows)
        wanted = np.zeros(K, bool)
        wanted[cols] = True
        missing = np.isnan(err) & wanted
        if missing.any():
            if self._fast_path:  # the oracle's Fourier-space sums: whole rows, cheaply
                need = np.nonzero(missing.any(axis=1))[0]
                err[need] = self._term_errors(th[need]).numpy()
            else:
                b_idx, k_idx = np.nonzero(missing)
                err[b_idx, k_idx] = self._term_errors(th, (b_idx, k_idx)).numpy()
            for i, row in enumerate(rows):
                self._cache[row.tobytes()] = err[i].copy()
        return -(torch.as_tensor(err) * self.plan.weights)[:, cols]

    def _term_errors(self, th: torch.Tensor, pairs: tuple[np.ndarray, np.ndarray] | None = None,
                     ) -> torch.Tensor:  # fmt: skip
        """mean_m ||eps_hat - target||^2 (minus the Wiener filter's with the control variate)
        for every (theta row, term): (B, K); or, given ``pairs`` (row indices, term indices),
        for those pairs only: (P,)."""
        if self._fast_path:
            return self._oracle_log_l(th) / -self.plan.weights
        m = self._draws
        if pairs is None:
            b_idx = np.repeat(np.arange(th.shape[0]), len(self.plan.timesteps))
            k_idx = np.tile(np.arange(len(self.plan.timesteps)), th.shape[0])
        else:
            b_idx, k_idx = pairs
        units = (np.repeat(b_idx, m), (k_idx[:, None] * m + np.arange(m)).ravel())
        if self.control_variate:
            errors = [(d.pow(2) - dw.pow(2)).sum(dim=(1, 2, 3))
                      for d, dw in self._differences(th, wiener=True, units=units)]  # fmt: skip
        else:
            errors = [d.pow(2).sum(dim=(1, 2, 3)) for d in self._differences(th, units=units)]
        # mean over each map's draws, summed over the maps
        err = torch.cat(errors).reshape(-1, m).mean(dim=-1) * len(self.maps)
        return err if pairs is not None else err.reshape(th.shape[0], -1)

    def _differences(self, th: torch.Tensor, precision: str | None = None, wiener: bool = False,
                     units: tuple[np.ndarray, np.ndarray] | None = None):  # fmt: skip
        """eps_hat - target for every (theta row, term, draw), in chunks of ``max_batch``
        denoiser calls, in the order theta-major: yields (chunk, 1, N, N) float64 tensors;
        with ``wiener``, pairs (eps_hat - target, eps_W - target), eps_W the output of the
        network's spectral branch alone on the same inputs. ``units``: (theta row, unit j =
        term x n_noise + draw) index arrays of the evaluations wanted (default: all)."""
        B, J = th.shape[0], self.n_evaluations_per_theta
        n = self.y.shape[-1]
        x_t = self.x_t.reshape(J, 1, n, n)
        eps = self.target.reshape(J, 1, n, n)
        t = self.plan.timesteps.repeat_interleave(self._draws)
        device = self.model.device
        if units is None:
            b_idx, j_idx = torch.arange(B).repeat_interleave(J), torch.arange(J).repeat(B)
        else:
            b_idx, j_idx = (torch.as_tensor(u, dtype=torch.int64) for u in units)
        net_dtype = torch.float64 if self.model.is_oracle else torch.float32
        for lo in range(0, len(b_idx), self.max_batch):
            bi, ji = b_idx[lo : lo + self.max_batch], j_idx[lo : lo + self.max_batch]
            inputs = (x_t[ji].to(device=device, dtype=net_dtype), t[ji].to(device),
                      th[bi].to(device=device, dtype=net_dtype))  # fmt: skip
            prec = precision or self.precision
            eps_hat, eps_w = (denoise(self.model, inputs, wiener, prec) if self.network is None
                              else self.network(inputs, wiener, prec))  # fmt: skip
            self.n_denoiser_calls += len(bi)
            d = eps_hat.to(torch.float64).cpu() - eps[ji]
            if wiener:
                yield d, eps_w.to(torch.float64).cpu() - eps[ji]
            else:
                yield d
            if self.on_chunk is not None:
                self.on_chunk(len(bi) / J)

    def _oracle_log_l(self, th: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """Per-term log L (B, K) with the oracle, in Fourier space.

        The oracle is a Wiener filter: with X and E the transforms of x_t and of the target
        (computed once), ||eps_hat - target||^2 = sum_k |A_k keep_k / sqrt(1 - a) - E_k|^2 /
        N^2 (Parseval), A = X - sqrt(a) m N^2 at k = 0. The filter ``keep`` depends on the
        mode only through |k| (the spectrum is isotropic), so the sum runs over the 457
        shells of equal |k|^2 of a 64^2 map (not its 4,096 modes) with per-shell sums of
        |X|^2, Re(X E*) and |E|^2. The same numbers as calling the denoiser (tested), 10x
        faster.
        """
        n = self.y.shape[-1]
        J = self.n_evaluations_per_theta
        if self._fourier is None:
            x = torch.fft.fft2(self.x_t.reshape(J, n, n)).reshape(J, -1)
            e = torch.fft.fft2(self.target.reshape(J, n, n)).reshape(J, -1)
            f = np.fft.fftfreq(n) * n
            k2 = np.rint(f[:, None] ** 2 + f[None, :] ** 2).astype(np.int64).ravel()
            keys, shell = np.unique(k2, return_inverse=True)  # shell 0 is k = 0 alone
            shell = torch.as_tensor(shell)
            first = torch.as_tensor(np.unique(shell.numpy(), return_index=True)[1])

            def per_shell(v: torch.Tensor) -> torch.Tensor:
                out = torch.zeros(J, len(keys), dtype=torch.float64)
                return out.index_add_(1, shell, v)

            t = self.plan.timesteps.repeat_interleave(self._draws)
            a = self.model.schedule.alpha_bar[t].to(torch.float64)
            self._fourier = {
                "a": a, "first": first, "shell": shell, "x0": x[:, 0], "e0": e[:, 0],
                "xx": per_shell(x.abs().pow(2)), "xe": per_shell((x * e.conj()).real),
                "ee": per_shell(e.abs().pow(2)),
            }  # fmt: skip
        fo = self._fourier
        a = fo["a"]
        log_snr = (torch.log(a) - torch.log1p(-a)).reshape(1, J, 1)
        scale = (1 - a).rsqrt().reshape(1, J)
        mean, lam = self.model.denoiser.moments(th.to(torch.float64))
        lam = lam.reshape(lam.shape[0], -1)
        if not fo.get("isotropic_checked"):
            # the shell sums need a spectrum that depends on |k| only
            ref = lam[:1].detach()
            spread = (ref - ref[:, fo["first"]][:, fo["shell"]]).abs().max()
            if float(spread) > 1e-9 * float(ref.abs().max()):
                raise InputError("the oracle's spectrum is not isotropic; set "
                                 "DiffusionLikelihood.fast_oracle = False")  # fmt: skip
            fo["isotropic_checked"] = True
        log_lam = torch.log(lam)[:, fo["first"]]  # (B, shells)
        out = []
        for lo in range(0, th.shape[0], chunk):
            keep = torch.sigmoid(-(log_snr + log_lam[lo : lo + chunk, None]))  # (c, J, S)
            k, s1 = keep[..., 1:], scale[..., None]
            err = ((k * s1) ** 2 * fo["xx"][None, :, 1:]).sum(-1)
            err = err - 2 * (k * s1 * fo["xe"][None, :, 1:]).sum(-1) + fo["ee"][None, :, 1:].sum(-1)
            # the k = 0 mode carries the mean
            a0 = fo["x0"][None] - (a.sqrt()[None] * mean[lo : lo + chunk, None]) * (n * n)
            r0 = a0 * keep[..., 0] * scale - fo["e0"][None]
            err = (err + r0.abs().pow(2)) / (n * n)  # (c, J)
            err = err.reshape(err.shape[0], -1, self._draws).mean(dim=-1) * len(self.maps)
            out.append(-(err * self.plan.weights))
            if self.on_chunk is not None:
                self.on_chunk(float(err.shape[0]))
        return torch.cat(out)

    def seed_spread(
        self,
        theta: np.ndarray | torch.Tensor,
        *,
        reference: np.ndarray | torch.Tensor | None = None,
        n_seeds: int = 8,
    ) -> np.ndarray:
        """Monte Carlo noise of log L differences: their standard deviation across seeds.

        For each of ``n_seeds`` seeds (``seed + 1``, ...), evaluates log L(theta) -
        log L(reference) (reference: the first row of theta) and returns the standard deviation
        over seeds per row of theta, in nats. If it is small against the log L differences
        that matter (about 1 nat across a posterior), ``n_noise`` is enough.
        """
        theta = as_theta(theta)
        ref = theta[:1] if reference is None else as_theta(reference)
        diffs = []
        for k in range(1, n_seeds + 1):
            other = DiffusionLikelihood(
                self.model, self.y, terms=self.terms, n_noise=self.n_noise, seed=self.seed + k,
                n_timesteps=self.n_timesteps, max_batch=self.max_batch,
                precision=self.precision, space="model", noise_sigma=self.noise_sigma,
                proposal=self.proposal, control_variate=self.control_variate,
                t_min=self.t_min,
            )  # fmt: skip
            with torch.no_grad():
                values = other(torch.cat([ref, theta]))
            diffs.append((values[1:] - values[0]).numpy())
        return np.std(np.stack(diffs), axis=0, ddof=1)


def diffusion_likelihood(model: DiffusionModel, field: np.ndarray | torch.Tensor,
                         terms: str | list[int], seed: int = 0, progress: bool = True,
                         **options) -> BuiltLikelihood:  # fmt: skip
    """The diffusion likelihood of one map (N, N), or the product over a stack (M, N, N), as
    :func:`diffinfer.posterior` uses it: with its Gauss-Newton locator, the temperature the
    model card records for the term set, and the likelihood itself as the stochastic part
    whose Monte Carlo error the posterior controls. ``options``: those of
    :class:`DiffusionLikelihood`."""
    from diffinfer.likelihoods.temperature import card_temperature

    like = DiffusionLikelihood(model, field, terms=terms, seed=seed, progress=progress, **options)

    def locator() -> tuple[np.ndarray, np.ndarray, int]:
        loc = like.locate()
        return loc.theta, loc.cov, loc.n_evaluations

    description = f"diffusion likelihood ({like.description}, {like.n_noise} noise draws)"
    settings = {"terms": terms, "n_timesteps": like.n_timesteps_used, "n_noise": like.n_noise,
                "precision": like.precision, "control_variate": bool(like.control_variate),
                "proposal": like.proposal if isinstance(like.proposal, str) else "given",
                "noise_sigma": float(like.noise_sigma or 0.0), "max_batch": like.max_batch,
                "t_min": like.t_min, "likelihood_seed": int(seed)}  # fmt: skip
    temperature = card_temperature(model.card or {}, like.description, like.n_noise,
                                   float(like.noise_sigma or 0.0))  # fmt: skip
    info = {"terms": like.description, "n_noise": like.n_noise,
            "expensive": not model.is_oracle}  # fmt: skip
    return BuiltLikelihood(like, model.field.prior, locator, description, settings,
                           temperature, info, like)  # fmt: skip
