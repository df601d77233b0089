"""emcee and NUTS on the network's diffusion likelihood, to convergence, on one map.

    .venv/bin/python benchmarks/bench_network_mcmc.py [--draws 2000]

Map ``examples/lognormal64/map1.npy`` (a held-out test map), network ``lognormal64`` at the
default likelihood settings. Both samplers use the grid posterior as a cheap first stage and
the network as the exact second stage (:mod:`diffinfer.inference.two_stage`): emcee proposes
independently from the grid (Metropolis-Hastings), NUTS runs on the grid's smooth surrogate
with a delayed-acceptance step. Reports wall time (grid included), network-likelihood
evaluations, R-hat and bulk ESS (ArviZ), and the C2ST accuracy of the draws against the grid
posterior of the same likelihood.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import machine

from diffinfer.calibration.compare import two_sample_accuracy
from diffinfer.diffusion import load_model
from diffinfer.inference.posterior import posterior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--map", default="examples/lognormal64/map1.npy")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--methods", default="emcee,nuts")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(machine(), flush=True)
    net = load_model(args.model)
    density = np.load(args.map, allow_pickle=False)
    print("| method | wall s | network evaluations | R-hat (Omega_m / sigma_8) | "
          "bulk ESS | second-stage acceptance | C2ST vs grid |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        post = posterior(density, model=net, method=method, seed=0)
        s = post.sample(args.draws)
        wall = time.perf_counter() - t0
        d = s.info["diagnostics"]
        acc = d.get("second_stage_acceptance", d.get("acceptance_fraction"))
        acc = float(np.mean(acc))
        grid = post.grid()
        c2st = two_sample_accuracy(s.flat, grid.sample(len(s.flat), seed=7))
        r, e = d["rhat"], d["ess_bulk"]
        print(f"| {method} | {wall:.0f} | {d['n_evaluations']:,} | {r['Omega_m']:.3f} / "
              f"{r['sigma_8']:.3f} | {e['Omega_m']:.0f} / {e['sigma_8']:.0f} | {acc:.2f} | "
              f"{c2st:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
