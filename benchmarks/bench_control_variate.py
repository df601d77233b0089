"""Cost of the Wiener-filter control variate against the sampled terms it accompanies.

    .venv/bin/python benchmarks/bench_control_variate.py [--threads 1] [--points 16]

For ``lognormal64`` and one simulated map: the time per theta point of the closed-form part
(:meth:`~diffinfer.likelihoods.diffusion.DiffusionLikelihood.gaussian_log_l`, every timestep) and
of the
sampled terms of the default likelihood (8 timesteps of the fitted proposal), with and without
the control variate, and their ratio. Best of three; the first line names the machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import best_of, machine

from diffinfer.diffusion import load_model
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--points", type=int, default=16, help="theta points per call")
    parser.add_argument("--timesteps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    net = load_model("lognormal64")
    sim = LognormalSimulator(net.field, net.transform)
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=5)[0]
    rng = np.random.default_rng(0)
    theta = torch.as_tensor(np.array([0.28, 0.78]) + 0.04 * rng.random((args.points, 2)))
    rows = {}
    for cv in (True, False):
        like = DiffusionLikelihood(
            net,
            density,
            terms="vlb",
            n_timesteps=args.timesteps,
            precision="fp32",
            progress=False,
            control_variate=cv,
        )
        with torch.no_grad():
            like.term_log_l(theta[:2])  # warm-up
            rows[cv] = best_of(lambda like=like: like.term_log_l(theta)) / args.points
            if cv:
                closed = best_of(lambda like=like: like.gaussian_log_l(theta)) / args.points
    print(f"per theta point, {args.timesteps} timesteps, {args.threads} thread(s):")
    print(f"  sampled terms without the control variate: {rows[False] * 1e3:.1f} ms")
    print(f"  sampled terms with it (U-Net share):        {rows[True] * 1e3:.1f} ms")
    print(f"  closed-form Wiener part, all 1,000 t:       {closed * 1e3:.1f} ms")
    total = rows[True] + closed
    print(f"  with the control variate in all: {total * 1e3:.1f} ms "
          f"({total / rows[False]:.2f}x the plain estimate's cost)")  # fmt: skip


if __name__ == "__main__":
    main()
