"""Cost of a posterior at 64^2: wall time and likelihood evaluations per effective sample.

    .venv/bin/python benchmarks/bench_posterior.py [--model lognormal64] [--quick]

One map at (0.3, 0.8); for the exact likelihood, the oracle's VLB (64 importance-sampled
timesteps) and the network's (the same estimator; bf16), runs the grid, emcee and NUTS, and
reports wall time, likelihood evaluations (theta points; NUTS counts one per gradient), the
bulk effective sample size (ArviZ; grid draws are independent, so their ESS is the number of
draws) and evaluations per effective sample. The grid's reference is a dense 201^2 grid of
the exact likelihood (40,401 evaluations). NUTS on the network uses 2 chains of 300 warm-up
and 300 draws (the default 4 x 500 + 1000 takes about an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import machine

from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.fields import LognormalSimulator
from diffinfer.posterior import posterior


def ess_bulk(samples) -> float:
    if samples.method == "grid":
        return float(samples.flat.shape[0])
    import arviz as az

    ess = az.ess(samples.to_arviz(), method="bulk")
    return float(min(float(ess[v]) for v in ess.data_vars))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--quick", action="store_true", help="exact likelihood only")
    args = parser.parse_args()
    print(machine())
    net = load_model(args.model)
    sim = LognormalSimulator(net.field, net.transform)
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0]
    setups = [("exact", None, {"likelihood": "exact"})]
    if not args.quick:
        setups += [
            ("oracle VLB-64", DiffusionModel.oracle(sim, net.schedule), {"likelihood": "vlb"}),
            ("network VLB-64 bf16", net, {"likelihood": "vlb", "precision": "bf16"}),
        ]
    print("| likelihood | method | wall s | evaluations | ESS (bulk) | evaluations / ESS |")
    print("|---|---|---|---|---|---|")
    for name, model, opts in setups:
        for method in ("grid", "emcee", "nuts"):
            extra = {}
            if method == "nuts" and name.startswith("network"):
                extra = {"num_chains": 2, "warmup_steps": 300}
            torch.manual_seed(0)
            start = time.perf_counter()
            post = posterior(density, model=model, method=method, seed=0, **opts, **extra)
            n = 600 if extra else 4000
            s = post.sample(n)
            wall = time.perf_counter() - start
            evals = int(post.n_evaluations)
            ess = ess_bulk(s)
            print(f"| {name} | {method} | {wall:.1f} | {evals:,} | {ess:.0f} | "
                  f"{evals / ess:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
