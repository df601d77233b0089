"""The spectral branch's learned spectrum against the log-normal simulator's true one.

    .venv/bin/python scripts/spectral_branch_check.py [--model lognormal64]

For a Gaussian field the optimal linear denoiser is the Wiener filter of the field's true
spectrum and mean, the same at every timestep; the spectral branch learns log lambda(|k|;
theta, t) and mu(theta, t) by the epsilon-MSE alongside the U-Net. Prints, at three
cosmologies and four timesteps, the learned minus the true log lambda at |k| = 1, 2, 4, 8,
16, 32 (cycles per map, along an axis) and at the Nyquist corner, and the learned minus the
true model-space mean (the oracle's moments).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffinfer.diffusion import DiffusionModel, load_model
from diffinfer.simulators import LognormalSimulator

MODES = ((1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (32, 0), (32, 32))
THETAS = ((0.12, 0.90), (0.30, 0.80), (0.45, 0.70))
TIMESTEPS = (5, 50, 150, 400)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    args = parser.parse_args()
    net = load_model(args.model)
    sim = LognormalSimulator(net.field, net.transform)
    oracle = DiffusionModel.oracle(sim, net.schedule)
    branch, prior, n = net.denoiser.spectral, net.field.prior, net.field.n_pix
    header = " | ".join(f"k=({i},{j})" for i, j in MODES)
    print(f"| θ | t | {header} | Δμ |")
    print("|---|---|" + "---|" * (len(MODES) + 1))
    for th in THETAS:
        theta = torch.tensor([th], dtype=torch.float64)
        mean, lam = oracle.denoiser.moments(theta)
        lam = lam[0].numpy()
        for t in TIMESTEPS:
            with torch.no_grad():
                log_lam, mu = branch.spectrum(torch.tensor([t]), prior.to_unit(theta.float()), n)
            diff = [float(log_lam[0, i, j]) - float(np.log(lam[i, j])) for i, j in MODES]
            cells = " | ".join(f"{d:+.3f}" for d in diff)
            print(f"| ({th[0]}, {th[1]}) | {t} | {cells} | {float(mu[0]) - float(mean[0]):+.4f} |")


if __name__ == "__main__":
    main()
