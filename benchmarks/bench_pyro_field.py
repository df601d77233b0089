"""The Pyro field's log probability and gradient, with the shared default simulator against a
fresh simulator per distribution (what a Pyro model built at every step used to cost).

    .venv/bin/python benchmarks/bench_pyro_field.py

One 64^2 map, one theta, ``ExactLognormalField(theta).log_prob(map)`` and its gradient, best of
five after a warm-up; the ratio is what sharing the simulator saves per NUTS gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from _timing import best_of, machine

from diffinfer.likelihoods.distributions import ExactLognormalField
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    print(machine())
    maps = torch.as_tensor(np.load("examples/lognormal64/map1.npy")[None])

    def step(fresh: bool) -> None:
        theta = torch.tensor([0.25, 0.77], dtype=torch.float64, requires_grad=True)
        field = ExactLognormalField(theta, LognormalSimulator() if fresh else None)
        field.log_prob(maps).sum().backward()

    step(False)
    shared = best_of(lambda: step(False), repeats=5)
    fresh = best_of(lambda: step(True), repeats=5)
    print(
        f"log_prob + gradient: shared simulator {shared * 1e3:.1f} ms, fresh simulator "
        f"{fresh * 1e3:.1f} ms ({fresh / shared:.1f}x)"
    )


if __name__ == "__main__":
    main()
