"""The present default posterior against the new one, on held-out maps, in one run.

    .venv/bin/python benchmarks/bench_fast_posterior.py [--n-maps 5] [--dense-cells 12]

For ``--n-maps`` maps simulated at cosmologies uniform in the prior (seed 31337: not training,
pilot or calibration maps), network ``lognormal64``:

- *present default* (before the fast posterior): VLB from 64 timesteps under the default
  proposal q(t) ~ w_t alpha_bar_t, the adaptive grid (8^2 coarse + 12^2 refinements),
  temperature 1.15 (the card's former value), fp32 (the API default; bf16 is emulated on CPUs
  without AVX-512 and 5x slower there);
- *new default*: ``diffinfer.posterior(field)`` as it stands (Gauss-Newton locator, aligned
  grid, the card's timestep proposal and temperature, ``precision="auto"``).

For each, the wall time, likelihood evaluations (theta points, the locator's included), and
the C2ST accuracy (:func:`diffinfer.calibration.compare.two_sample_accuracy`, 4,000 draws each)
against
a dense grid of the *same* likelihood and seed: ``--dense-cells``^2 cells aligned with the
posterior over 5 standard deviations (the grid of the new method, twice as fine per axis and
wider). The summary gives the median wall-time ratio.
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
from diffinfer.simulators import LognormalSimulator

PRESENT = {"n_timesteps": 64, "proposal": "default", "aligned": False, "temperature": 1.15,
           "precision": "fp32"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--n-maps", type=int, default=5)
    parser.add_argument("--dense-cells", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", help="comma-separated map indices to run (default: all)")
    parser.add_argument("--methods", default="present,new", help="present, new or both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    net = load_model(args.model)
    sim = LognormalSimulator(net.field, net.transform)
    rng = np.random.default_rng(31337)
    thetas = sim.config.prior.low + sim.config.prior.width * rng.random((args.n_maps, 2))
    print("| map | theta | method | wall s | evaluations | grid | C2ST vs dense |")
    print("|---|---|---|---|---|---|---|")
    ratios, stats = [], {"present": [], "new": []}
    only = None if args.only is None else {int(i) for i in args.only.split(",")}
    for i, theta in enumerate(thetas):
        if only is not None and i not in only:
            continue
        density = sim.simulate(theta, 1, seed=31337, row_offset=i)[0]
        walls = {}
        for name, opts in (("present", PRESENT), ("new", {})):
            if name not in args.methods.split(","):
                continue
            t0 = time.perf_counter()
            post = posterior(density, model=net, seed=i, **opts)
            draws = post.sample(4000).flat
            walls[name] = time.perf_counter() - t0
            g = post.grid()
            dense_opts = {**opts, "aligned": True, "n_aligned": args.dense_cells, "radius": 5.0}
            dense = posterior(density, model=net, seed=i, **dense_opts).grid()
            acc = two_sample_accuracy(draws, dense.sample(4000, seed=i + 1))
            stats[name].append((walls[name], g.n_evaluations, acc))
            print(f"| {i} | ({theta[0]:.3f}, {theta[1]:.3f}) | {name} | {walls[name]:.1f} | "
                  f"{g.n_evaluations} | {g.strategy} | {acc:.3f} |", flush=True)  # fmt: skip
        if len(walls) == 2:
            ratios.append(walls["present"] / walls["new"])
    print()
    for name, rows in stats.items():
        if not rows:
            continue
        a = np.array(rows)
        print(f"{name}: median wall {np.median(a[:, 0]):.1f} s, mean evaluations "
              f"{a[:, 1].mean():.0f} (max {a[:, 1].max():.0f}), mean C2ST {a[:, 2].mean():.3f} "
              f"(max {a[:, 2].max():.3f})")  # fmt: skip
    if ratios:
        print(
            f"wall-time ratio present / new: median {np.median(ratios):.1f} "
            f"(min {np.min(ratios):.1f}, max {np.max(ratios):.1f}) over {len(ratios)} maps"
        )


if __name__ == "__main__":
    main()
