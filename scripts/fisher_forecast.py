"""Fisher forecast for one log-normal map: which box size L and slab depth d to simulate.

Prints a Markdown table of the 1-sigma errors on (Omega_m, sigma_8), their correlation and
the pixel standard deviation of ln(rho), for a 64^2 map at several theta.

    .venv/bin/python scripts/fisher_forecast.py
"""

from __future__ import annotations

import numpy as np

from diffinfer.fields import FieldConfig
from diffinfer.simulators import LognormalSimulator

GEOMETRIES = [
    (25.0, 5.0),
    (100.0, 10.0),
    (250.0, 25.0),
    (500.0, 25.0),
    (500.0, 50.0),
    (500.0, 100.0),
    (1000.0, 100.0),
]
THETAS = [(0.3, 0.8), (0.15, 0.65), (0.45, 0.95)]


def main() -> None:
    print("| L [Mpc/h] | d [Mpc/h] | theta | sigma(Omega_m) | sigma(sigma_8) | corr | sigma_g |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for box, depth in GEOMETRIES:
        sim = LognormalSimulator(FieldConfig(n_pix=64, box_size=box, depth=depth))
        for theta in THETAS:
            t = np.array(theta)
            cov = np.linalg.inv(sim.fisher(t)[0].numpy())
            std = np.sqrt(np.diag(cov))
            corr = cov[0, 1] / std.prod()
            sg = float(np.sqrt(sim.log_variance(t).item()))
            print(
                f"| {box:g} | {depth:g} | ({theta[0]}, {theta[1]}) | {std[0]:.4f} | "
                f"{std[1]:.4f} | {corr:+.3f} | {sg:.3f} |"
            )


if __name__ == "__main__":
    main()
