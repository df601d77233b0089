"""How far the samplers with the exact (oracle) denoiser are from the true spectrum.

For each sampler (at its default spacing) and number of denoiser calls, the closed-form
variance ratio of every Fourier mode (``sampler_variance_ratio``) is averaged over the default
|k| bins at theta = (0.3, 0.8), and checked against the binned spectra of maps actually
emulated with the oracle.

    python scripts/sampler_accuracy.py [--maps 64]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffinfer.diffusion import DiffusionModel
from diffinfer.diffusion.oracle import sampler_variance_ratio
from diffinfer.fields import LognormalSimulator
from diffinfer.fields.stats import bin_modes, default_bins

THETA = np.array([0.3, 0.8])
SETTINGS = [("ddpm", 1000), ("ddpm", 250), ("ddim", 200), ("ddim", 50), ("ddim", 10),
            ("heun", 49), ("heun", 19), ("dpmpp-2m", 50), ("dpmpp-2m", 20), ("dpmpp-2m", 10),
            ("unipc", 50), ("unipc", 20), ("unipc", 10)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=64, help="emulated maps per setting")
    args = parser.parse_args()
    sim = LognormalSimulator()
    model = DiffusionModel.oracle(sim)
    n, box = sim.config.n_pix, sim.config.box_size
    edges = default_bins(n, box)
    _, lam = sim.model_moments(torch.as_tensor(THETA)[None])
    lam = lam[0].numpy()
    exact = bin_modes(lam, box, edges)
    print(f"theta = {THETA}, {len(exact.k)} k bins, {args.maps} emulated maps per row")
    print("| sampler | calls | predicted mean abs(P/P_true - 1) | predicted max | "
          "emulated mean abs(P/P_true - 1) | emulated mean z |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for sampler, steps in SETTINGS:
        pred = bin_modes(lam * sampler_variance_ratio(lam, model.schedule, steps, sampler), box,
                         edges)  # fmt: skip
        dev = pred.power / exact.power - 1
        y = model.sample(THETA, args.maps, steps=steps, sampler=sampler, seed=11, density=False)
        power = bin_modes(np.abs(np.fft.fft2(y)) ** 2 / n**2, box, edges).power
        emulated = power.mean(0) / exact.power - 1
        sigma = exact.power / np.sqrt(args.maps * exact.n_modes / 2)
        z = (power.mean(0) - exact.power) / sigma
        print(f"| {sampler} | {steps} | {np.mean(np.abs(dev)):.4f} | {np.max(np.abs(dev)):.4f} | "
              f"{np.mean(np.abs(emulated)):.4f} | {z.mean():+.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
