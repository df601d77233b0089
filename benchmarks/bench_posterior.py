"""Cost of a posterior at 64^2: wall time and likelihood evaluations per effective sample.

    .venv/bin/python benchmarks/bench_posterior.py [--setups exact,oracle,network]

One map at (0.3, 0.8); for the exact likelihood, the oracle's VLB (64 importance-sampled
timesteps) and the network's (the same estimator; bf16), runs the grid, emcee and NUTS, and
reports wall time, likelihood evaluations (theta points; NUTS counts one per gradient), the
bulk effective sample size (ArviZ; grid draws are independent, so their ESS is the number of
draws) and evaluations per effective sample; tests/test_agreement.py checks each method
against a dense 201^2 grid (40,401 evaluations). NUTS on the oracle runs 2 chains of 300
warm-up and 1,000 draws (others: 4 chains, 500, 4,000 draws in all). The network runs the
grid only (with temperature 1): emcee and NUTS
need the evaluations the oracle rows show (the same likelihood estimator, so the same
geometry), at the network's time per evaluation, which its grid row gives (hours on 2 CPU
cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import machine

from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.inference.posterior import posterior
from diffinfer.simulators import LognormalSimulator


def ess_bulk(samples) -> float:
    if samples.method == "grid":
        return float(samples.flat.shape[0])
    import arviz as az

    ess = az.ess(samples.to_arviz(), method="bulk")
    return float(min(float(ess[v]) for v in ess.data_vars))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--setups", default="exact,oracle,network",
                        help="comma-separated: exact, oracle, network")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    net = load_model(args.model)
    sim = LognormalSimulator(net.field, net.transform)
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0]
    wanted = args.setups.split(",")
    setups = [s for s in [
        ("exact", None, {"likelihood": "exact"}),
        ("oracle VLB-64", DiffusionModel.oracle(sim, net.schedule), {"likelihood": "vlb"}),
        ("network VLB-64 bf16", net, {"likelihood": "vlb", "precision": "bf16",
                                      "temperature": 1.0}),
    ] if s[0].split()[0] in wanted]  # fmt: skip
    print("| likelihood | method | wall s | evaluations | ESS (bulk) | evaluations / ESS "
          "| ms / evaluation |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, model, opts in setups:
        methods = ("grid",) if name.startswith("network") else ("grid", "emcee", "nuts")
        for method in methods:
            # NUTS through the oracle's spectra: 2 chains of 300 warm-up + 1,000 draws
            extra = ({"num_chains": 2, "warmup_steps": 300}
                     if method == "nuts" and name.startswith("oracle") else {})  # fmt: skip
            torch.manual_seed(0)
            start = time.perf_counter()
            post = posterior(density, model=model, method=method, seed=0, **opts, **extra)
            s = post.sample(2000 if extra else 4000)
            wall = time.perf_counter() - start
            evals = int(post.n_evaluations)
            ess = ess_bulk(s)
            print(f"| {name} | {method} | {wall:.1f} | {evals:,} | {ess:.0f} | "
                  f"{evals / ess:.2f} | {1000 * wall / evals:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
