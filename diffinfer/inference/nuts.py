"""The NUTS back end: Pyro's No-U-Turn sampler on the prior's unconstrained space.

:func:`run_nuts` gets a differentiable log-density of physical parameters, the prior (for its
unconstraining map) and starting points; its options and their defaults are in its signature
(``num_chains``, ``warmup_steps``, ``max_tree_depth``: the names :func:`diffinfer.posterior`
takes for ``method="nuts"``). Chains run one after another, so no process pool is needed on
any machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from diffinfer.prior import Prior


def run_nuts(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    prior: Prior,
    n: int,
    start: Callable[[int], np.ndarray],
    *,
    seed: int = 0,
    progress: bool = True,
    num_chains: int = 4,
    warmup_steps: int = 500,
    max_tree_depth: int = 8,
) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Run ``num_chains`` NUTS chains of about ``n / num_chains`` draws each.

    Parameters
    ----------
    log_prob
        Differentiable log-density of a batch of physical parameters (B, 2) -> (B,).
    prior
        The prior: its box and the unconstraining map the sampler works in.
    n
        Draws wanted over all chains.
    start
        Starting points: ``start(num_chains)`` -> (num_chains, 2) inside the prior.
    seed, progress
        Seed of chain c: ``seed * 1000 + c``; Pyro's progress bar.
    num_chains, warmup_steps, max_tree_depth
        Chains, warm-up (adaptation) steps per chain, and NUTS's maximum tree depth.

    Returns
    -------
    runs, theta, lp, divergent, diagnostics
        Pyro's ``MCMC`` per chain; the draws (chains, draws, 2), their log-density and
        divergence flags (chains, draws); divergences, chains, warm-up and acceptance rates.
    """
    import math

    from pyro.infer import MCMC, NUTS

    chains, warmup = int(num_chains), int(warmup_steps)
    per_chain = max(1, math.ceil(n / chains))

    def potential(params: dict) -> torch.Tensor:
        z = params["z"]
        theta = prior.from_unconstrained(z[None])
        return -(log_prob(theta)[0] + prior.log_abs_det_jacobian(z[None])[0])

    draws, lps, divergent, accept, runs = [], [], [], [], []
    first = start(chains)
    for c in range(chains):
        torch.manual_seed(seed * 1000 + c)
        kernel = NUTS(potential_fn=potential, max_tree_depth=int(max_tree_depth))
        z0 = prior.to_unconstrained(torch.as_tensor(first[c : c + 1]))[0]
        mcmc = MCMC(kernel, num_samples=per_chain, warmup_steps=warmup,
                    initial_params={"z": z0}, disable_progbar=not progress)  # fmt: skip
        mcmc.run()
        runs.append(mcmc)
        theta = prior.from_unconstrained(mcmc.get_samples()["z"])
        draws.append(theta.numpy())
        with torch.no_grad():
            lps.append(log_prob(theta).numpy())
        report = mcmc.diagnostics()
        div = np.zeros(per_chain, bool)
        div[np.asarray(report.get("divergences", {}).get("chain 0", []), int)] = True
        divergent.append(div)
        accept.append(float(report.get("acceptance rate", {}).get("chain 0", np.nan)))
    diag = {"divergences": int(np.sum(divergent)), "chains": chains, "warmup_steps": warmup,
            "acceptance_rate": [float(a) for a in accept]}  # fmt: skip
    return runs, np.stack(draws), np.stack(lps), np.stack(divergent), diag
