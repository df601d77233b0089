"""The oracle likelihood in Fourier space against calling the oracle denoiser.

    .venv/bin/python benchmarks/bench_oracle_likelihood.py

One 64^2 map, 100 random theta, the VLB from 256 importance-sampled timesteps, one thread:
the time of ``DiffusionLikelihood`` with ``fast_oracle`` on (shell sums in Fourier space) and
off (a denoiser call per theta and term), and the largest difference of the two, in nats.
Best of three.
"""

from __future__ import annotations

import numpy as np
import torch
from _timing import best_of, machine

from diffinfer.diffusion import DiffusionModel
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    torch.set_num_threads(1)
    print(machine())
    sim = LognormalSimulator()
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0]
    rng = np.random.default_rng(0)
    theta = torch.as_tensor(np.c_[rng.uniform(0.2, 0.4, 100), rng.uniform(0.7, 0.9, 100)])
    like = DiffusionLikelihood(DiffusionModel.oracle(sim), density, terms="vlb",
                               n_timesteps=256, seed=1)  # fmt: skip
    with torch.no_grad():
        fast_values = like(theta)
        fast = best_of(lambda: like(theta))
        like.fast_oracle = False
        slow_values = like(theta)
        slow = best_of(lambda: like(theta), repeats=1)
    diff = float((fast_values - slow_values).abs().max())
    print(f"Fourier space: {fast:.3f} s; denoiser calls: {slow:.2f} s; "
          f"speed-up {slow / fast:.0f}x; largest difference {diff:.1e} nats "
          f"({100 * 256 / fast:,.0f} evaluations/s)")  # fmt: skip


if __name__ == "__main__":
    main()
