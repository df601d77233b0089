"""The emcee back end: an affine-invariant ensemble run until its draws are converged.

:func:`run_emcee` knows nothing of networks or maps: it gets a vectorised log-density, a
way to draw starting points and its options, whose defaults are in its signature
(``n_walkers``, ``max_steps``, ``min_tau_multiple``: the names :func:`diffinfer.posterior`
takes for ``method="emcee"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from diffinfer.progress import EvaluationBar

RHAT_MAX, ESS_MIN = 1.01, 400
"""emcee's chain counts as converged at R-hat <= 1.01 and bulk ESS >= 400 (over its
walkers, after burn-in), besides being ``min_tau_multiple`` autocorrelation times long."""


def run_emcee(
    log_prob: Callable[[np.ndarray], np.ndarray],
    n: int,
    start: Callable[[int], np.ndarray],
    progress: Callable[[str, float], EvaluationBar],
    *,
    seed: int = 0,
    moves: object = None,
    n_walkers: int = 16,
    max_steps: int = 20000,
    min_tau_multiple: float = 50,
) -> tuple[object, np.ndarray, np.ndarray, dict]:
    """Run emcee until the chain is ``min_tau_multiple`` autocorrelation times long, holds
    at least n draws after a 2 tau burn-in and thinning by tau / 2, and those draws reach
    R-hat <= :data:`RHAT_MAX` and bulk ESS >= :data:`ESS_MIN` (walkers as chains).

    Parameters
    ----------
    log_prob
        Log-density of a batch of points (B, 2) -> (B,).
    n
        Draws wanted after burn-in and thinning.
    start
        Starting points of ``n_walkers`` walkers: ``start(n_walkers)`` -> (n_walkers, 2).
    progress
        A context manager ``progress(description, planned evaluations)`` giving a bar.
    seed
        Seed of emcee's random state.
    moves
        emcee moves (default: the stretch move).
    n_walkers, max_steps, min_tau_multiple
        Walkers (even), the step budget, and the chain length in autocorrelation times.

    Returns
    -------
    sampler, chain, lp, diagnostics
        The ``emcee.EnsembleSampler``; every draw after burn-in and thinning (walkers,
        draws, 2) and its log-density (walkers, draws) -- the draws R-hat and ESS were
        judged on; and the run's diagnostics. Warns where ``max_steps`` ran out first.
    """
    import emcee

    walkers, max_steps, multiple = int(n_walkers), int(max_steps), float(min_tau_multiple)
    rng = np.random.default_rng(seed)
    sampler = emcee.EnsembleSampler(walkers, 2, log_prob, vectorize=True, moves=moves)
    sampler.random_state = np.random.RandomState(int(rng.integers(2**31))).get_state()
    state, tau, converged = start(walkers), np.inf, False
    block = 500 if moves is None else 25  # independence proposals mix in a few steps
    # emcee evaluates each walker about once per step (the stretch move: two halves)
    with progress("posterior (emcee)", walkers * min(block, max_steps)) as bar:
        while sampler.iteration < max_steps:
            state = sampler.run_mcmc(
                state, min(block, max_steps - sampler.iteration), progress=False
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                tau = float(np.max(sampler.get_autocorr_time(tol=0)))
            if not math.isfinite(tau):  # a walker that has not moved yet
                bar.plan(walkers * min(block, max_steps - sampler.iteration))
                continue
            kept = (sampler.iteration - 2 * tau) / max(1, int(tau / 2)) * walkers
            if sampler.iteration >= multiple * tau and kept >= n:
                checks = chain_convergence(sampler, tau)
                if checks["rhat"] <= RHAT_MAX and checks["ess_bulk"] >= ESS_MIN:
                    converged = True
                    break
                # long enough by tau, not yet by R-hat / ESS: another block
                bar.plan(walkers * min(block, max_steps - sampler.iteration))
                bar.stage(
                    f"step {sampler.iteration}, R-hat {checks['rhat']:.3f}, "
                    f"ESS {checks['ess_bulk']:.0f}"
                )
                continue
            # the chain length this tau asks for: multiple * tau, and n draws kept
            need = max(multiple * tau, 2 * tau + n / walkers * max(1, int(tau / 2)))
            steps = min(max_steps, math.ceil(need)) - sampler.iteration
            bar.plan(walkers * max(steps, min(block, max_steps - sampler.iteration)))
            bar.stage(f"step {sampler.iteration}, autocorrelation time {tau:.0f}")
    if not math.isfinite(tau):
        tau = float(sampler.iteration)  # no walker-wise estimate: the most pessimistic
    checks = chain_convergence(sampler, tau)
    if not converged:
        warnings.warn(
            f"emcee stopped at its budget of {max_steps} steps with a chain "
            f"{sampler.iteration / tau:.0f} autocorrelation times long (target {multiple:g}), "
            f"R-hat {checks['rhat']:.3f} (target <= {RHAT_MAX}) and bulk ESS "
            f"{checks['ess_bulk']:.0f} (target >= {ESS_MIN}); raise max_steps",
            stacklevel=4,
        )
    burn = int(min(2 * tau, sampler.iteration // 2))
    thin = max(1, int(tau / 2))
    chain = sampler.get_chain(discard=burn, thin=thin)  # (draws, walkers, 2)
    lp = sampler.get_log_prob(discard=burn, thin=thin)
    diag = {
        "steps": sampler.iteration,
        "autocorrelation_time": tau,
        "converged": converged,
        "convergence": {
            "rhat_max": RHAT_MAX,
            "ess_min": ESS_MIN,
            "min_tau_multiple": multiple,
            **checks,
        },
        "acceptance_fraction": float(np.mean(sampler.acceptance_fraction)),
        "burn_in": burn,
        "thin": thin,
    }
    return sampler, np.swapaxes(chain, 0, 1), lp.T, diag


def chain_convergence(sampler, tau: float) -> dict[str, float]:
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
