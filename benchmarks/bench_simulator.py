"""Speed of the reference simulator and its exact likelihood at 64^2.

    .venv/bin/python benchmarks/bench_simulator.py

Prints one line per measurement (best of 3 repeats) with the machine's CPU count and torch
thread count, so that numbers from different machines are not confused.
"""

from __future__ import annotations

import numpy as np
import torch
from _timing import best_of, machine

from diffinfer.simulators import LognormalSimulator


def main() -> None:
    print(machine())
    sim = LognormalSimulator()
    rng = np.random.default_rng(0)
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0])
    random_theta = rng.uniform(sim.config.prior.low, sim.config.prior.high, size=(10_000, 2))
    axes = np.linspace(0.1, 0.5, 100), np.linspace(0.6, 1.0, 100)
    grid_theta = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)

    t = best_of(lambda: sim.exact_log_prob(y, random_theta))
    print(f"exact log p, 1 map x 10^4 random theta: {t:.2f} s ({1e4 / t:,.0f} theta/s)")
    t = best_of(lambda: sim.exact_log_prob(y, grid_theta))
    print(f"exact log p, 1 map x 100 x 100 grid:    {t:.2f} s ({1e4 / t:,.0f} theta/s)")
    theta1 = torch.tensor([[0.3, 0.8]], dtype=torch.float64, requires_grad=True)

    def grad():
        sim.exact_log_prob(y, theta1).sum().backward()

    t = best_of(grad)
    print(f"exact log p + gradient, 1 theta:         {1e3 * t:.1f} ms")
    t = best_of(lambda: sim.simulate(random_theta[:100], 15, seed=1))
    print(f"simulate 100 cosmologies x 15 maps:      {t:.2f} s ({1500 / t:,.0f} maps/s)")
    maps = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 200, seed=2))
    t = best_of(lambda: sim.maximum_likelihood(maps), repeats=1)
    print(f"maximum likelihood of 200 maps (joint):  {t:.2f} s")


if __name__ == "__main__":
    main()
