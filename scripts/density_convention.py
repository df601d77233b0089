"""The ranges behind the map-convention check (diffinfer.fields.grid.as_density).

Simulates log-normal maps at the corners and the centre of the prior box and prints, per
point, the range of the per-map mean density contrast and of the per-map standard deviation
of ln rho::

    .venv/bin/python scripts/density_convention.py --n 3000
"""

from __future__ import annotations

import argparse

import numpy as np

from diffinfer.simulators import LognormalSimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="maps per point (default 3000)")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    sim = LognormalSimulator()
    points = [(0.1, 0.6), (0.1, 1.0), (0.5, 0.6), (0.5, 1.0), (0.3, 0.8)]
    print(f"{args.n} maps per point, 64^2, L = 500 Mpc/h, seed {args.seed}")
    print("| Omega_m | sigma_8 | map mean: min | max | std of ln rho: min | max |")
    print("|---|---|---|---|---|---|")
    lows, highs = [], []
    for om, s8 in points:
        maps = np.asarray(sim.simulate(np.array([om, s8]), args.n, seed=args.seed))
        mean = maps.mean(axis=(1, 2))
        spread = np.log(maps).std(axis=(1, 2))
        lows.append((mean.min(), spread.min()))
        highs.append((mean.max(), spread.max()))
        print(f"| {om} | {s8} | {mean.min():.3f} | {mean.max():.3f} | {spread.min():.3f} | "
              f"{spread.max():.3f} |")  # fmt: skip
    lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
    print(f"all: map mean {lo[0]:.3f}-{hi[0]:.3f}, std of ln rho {lo[1]:.3f}-{hi[1]:.3f}")


if __name__ == "__main__":
    main()
