"""Exact MCMC on an expensive likelihood, with the grid posterior as a cheap first stage.

A diffusion likelihood costs K network calls per theta; MCMC needs thousands of theta. The
grid posterior (:mod:`diffinfer.inference.grid`, about 80 evaluations) is an accurate, cheap
surrogate
s(theta) of the target pi(theta), and two samplers here use it without changing the target:

- :func:`delayed_acceptance_nuts`: each transition is a NUTS transition on the surrogate
  (reversible with respect to s, its step size and mass matrix adapted on s alone during
  warm-up), followed by a second accept/reject step with probability
  min(1, pi(y) s(x) / (pi(x) s(y))) (Christen & Fox 2005). The chain leaves pi invariant:
  one network evaluation per draw, no network gradients.
- :func:`independence_move`: an emcee move that proposes from the tabulated grid posterior
  (mixed with a wide Gaussian, so the proposal covers every region the target does) and
  accepts with the Metropolis-Hastings ratio of an independence sampler; exact for pi.

:class:`GridSurrogate` holds both densities: a smooth, differentiable one (bicubic
interpolation of the grid's log density, in torch) for NUTS, and the exact density of its
own draws for the independence proposal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from diffinfer.inference.grid import GridPosterior
from diffinfer.prior import Prior

DEFENSIVE_WEIGHT = 0.05
"""Mass of the wide Gaussian (the grid's covariance times 9, i.e. 3x wider) in the mixture."""


class GridSurrogate:
    """Surrogate densities of a posterior tabulated on a grid.

    Parameters
    ----------
    grid
        The grid posterior (its cells tabulate the normalised log density).
    defensive
        Weight of the wide Gaussian component (mean and 3x the standard deviations of the
        grid posterior), which keeps the surrogate positive wherever the target is.
    """

    def __init__(self, grid: GridPosterior, defensive: float = DEFENSIVE_WEIGHT) -> None:
        self.grid = grid
        self.defensive = float(defensive)
        self.mean = grid.mean()
        self.cov = 9.0 * grid.cov()
        self._chol = np.linalg.cholesky(self.cov)
        cell_lp = grid.cell_log_pdf()
        finite = np.isfinite(cell_lp)
        floor = cell_lp[finite].min() - 30.0
        image = np.where(finite, cell_lp, floor)
        self._image = torch.as_tensor(image, dtype=torch.float64)[None, None]
        self._axes = [torch.as_tensor(a, dtype=torch.float64) for a in grid.axes]
        self._cell_lp = cell_lp
        basis = np.eye(2) if grid.basis is None else grid.basis
        origin = np.zeros(2) if grid.origin is None else grid.origin
        self._inv_basis = torch.as_tensor(np.linalg.inv(basis), dtype=torch.float64)
        self._origin = torch.as_tensor(origin, dtype=torch.float64)

    # ---------------------------------------------------------------- densities
    def _log_gauss(self, theta: torch.Tensor) -> torch.Tensor:
        chol = torch.as_tensor(self._chol, dtype=theta.dtype)
        diff = (theta - torch.as_tensor(self.mean, dtype=theta.dtype)).unsqueeze(-1)
        z = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
        log_det = torch.log(torch.diagonal(chol)).sum()
        return -0.5 * (z**2).sum(-1) - log_det - math.log(2 * math.pi)

    def log_prob(self, theta: torch.Tensor) -> torch.Tensor:
        """Smooth surrogate log density at theta (B, 2) (differentiable in theta): the
        bicubic interpolation of the grid's log density, mixed with the wide Gaussian."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        u = (theta - self._origin) @ self._inv_basis.T
        coords = []
        for j in (1, 0):  # grid_sample's x indexes the last axis (parameter 1)
            a = self._axes[j]
            coords.append(2 * (u[:, j] - a[0]) / (a[-1] - a[0]) - 1)
        xy = torch.stack(coords, -1).reshape(1, -1, 1, 2)
        interp = F.grid_sample(self._image, xy, mode="bicubic", padding_mode="border",
                               align_corners=True).reshape(-1)  # fmt: skip
        inside = (xy.reshape(-1, 2).abs() <= 1).all(-1)
        interp = torch.where(inside, interp, torch.full_like(interp, -math.inf))
        return torch.logaddexp(interp + math.log1p(-self.defensive),
                               self._log_gauss(theta) + math.log(self.defensive))  # fmt: skip

    def proposal_log_prob(self, theta: np.ndarray) -> np.ndarray:
        """Exact log density of :meth:`sample`'s draws at theta (B, 2): cell mass over cell
        area (piecewise constant) mixed with the wide Gaussian."""
        theta = np.atleast_2d(np.asarray(theta, float))
        g = self.grid
        u = g.to_u(theta)
        idx, ok = [], g.inside(theta) & g.in_support(theta)
        for j in range(2):
            a, h = g.axes[j], g.steps[j]
            i = np.clip(np.floor((u[:, j] - (a[0] - h / 2)) / h).astype(int), 0, len(a) - 1)
            idx.append(i)
        cell = np.where(ok, self._cell_lp[idx[0], idx[1]], -np.inf)
        with torch.no_grad():
            gauss = self._log_gauss(torch.as_tensor(theta)).numpy()
        return np.logaddexp(cell + math.log1p(-self.defensive), gauss + math.log(self.defensive))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws from the mixture: grid cells by mass (uniform within a cell) or, with
        probability ``defensive``, the wide Gaussian."""
        g = self.grid
        wide = rng.random(n) < self.defensive
        w = g.weights.ravel()
        i, j = np.unravel_index(rng.choice(w.size, size=n, p=w), g.log_density.shape)
        u = np.stack([g.axes[0][i], g.axes[1][j]], -1) + (rng.random((n, 2)) - 0.5) * g.steps
        out = g.to_theta(u)  # not clipped to the prior: the density stays w / area
        k = int(wide.sum())
        if k:
            out[wide] = self.mean + rng.standard_normal((k, 2)) @ self._chol.T
        return out


def independence_move(surrogate: GridSurrogate):
    """The emcee ``MHMove`` whose proposals are independent draws from the surrogate."""
    import emcee

    def propose(coords: np.ndarray, random) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(random.randint(2**31))
        new = surrogate.sample(len(coords), rng)
        factors = surrogate.proposal_log_prob(coords) - surrogate.proposal_log_prob(new)
        return new, factors

    return emcee.moves.MHMove(propose, ndim=2)


def delayed_acceptance_nuts(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    surrogate: GridSurrogate,
    prior: Prior,
    *,
    chains: int,
    warmup: int,
    draws: int,
    max_tree_depth: int,
    seed: int,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """NUTS on the surrogate with a delayed-acceptance second stage on ``log_prob``.

    Chains run in the unconstrained z of the prior box (the log-Jacobian cancels in the
    second-stage ratio). Warm-up adapts step size and mass matrix on the surrogate only.
    ``progress`` shows a bar over the NUTS iterations of all chains (warm-up and draws).

    Returns
    -------
    theta
        (chains, draws, 2) draws of the target.
    lp
        (chains, draws) log target at the draws.
    diagnostics
        Target evaluations, second-stage acceptance per chain, divergences of the first
        stage, first-stage acceptance per chain.
    """
    from pyro.infer import NUTS

    from diffinfer.progress import EvaluationBar

    def surrogate_potential(params: dict) -> torch.Tensor:
        z = params["z"]
        theta = prior.from_unconstrained(z[None])
        return -(surrogate.log_prob(theta)[0] + prior.log_abs_det_jacobian(z[None])[0])

    rng = np.random.default_rng(seed)
    start = surrogate.grid.sample(chains, seed=seed)
    out, lps, second, first, divergent = [], [], [], [], 0
    n_eval = 0
    bar = EvaluationBar(progress, "posterior (NUTS, delayed acceptance)",
                        chains * (warmup + draws), unit="steps")  # fmt: skip
    for c in range(chains):
        torch.manual_seed(seed * 1000 + c)
        kernel = NUTS(
            potential_fn=surrogate_potential, max_tree_depth=max_tree_depth, full_mass=True
        )
        z = prior.to_unconstrained(torch.as_tensor(start[c : c + 1]))[0]
        kernel.initial_params = {"z": z}
        kernel.setup(warmup)
        params = {"z": z}
        bar.stage(f"chain {c + 1}/{chains}: warm-up on the surrogate")
        for _ in range(warmup):
            params = kernel.sample(params)
            bar.advance(1)
        bar.stage(f"chain {c + 1}/{chains}: draws")
        theta = prior.from_unconstrained(params["z"][None])
        with torch.no_grad():
            lp_x = float(log_prob(theta)[0])
            s_x = float(surrogate.log_prob(theta)[0])
        n_eval += 1
        chain, chain_lp, accepted = [], [], 0
        for _ in range(draws):
            proposal = kernel.sample(params)
            y = prior.from_unconstrained(proposal["z"][None])
            if torch.equal(proposal["z"], params["z"]):
                accept = True  # NUTS stayed put: the second-stage ratio is 1
                lp_y, s_y = lp_x, s_x
            else:
                with torch.no_grad():
                    lp_y = float(log_prob(y)[0])
                    s_y = float(surrogate.log_prob(y)[0])
                n_eval += 1
                log_ratio = (lp_y - lp_x) - (s_y - s_x)
                accept = math.isfinite(lp_y) and math.log(rng.random()) < log_ratio
            if accept:
                params, lp_x, s_x, theta = proposal, lp_y, s_y, y
                accepted += 1
            else:
                kernel.clear_cache()  # the kernel cached the rejected point
            chain.append(theta.detach().numpy()[0])
            chain_lp.append(lp_x)
            bar.advance(1)
        report = kernel.diagnostics()
        divergent += len(report.get("divergences", []))
        first.append(float(report.get("acceptance rate", np.nan)))
        kernel.cleanup()
        out.append(np.array(chain))
        lps.append(np.array(chain_lp))
        second.append(accepted / draws)
    bar.close()
    diag = {"n_evaluations": n_eval, "second_stage_acceptance": second,
            "first_stage_acceptance": first, "divergences": divergent,
            "chains": chains, "warmup_steps": warmup}  # fmt: skip
    return np.stack(out), np.stack(lps), diag
