"""How far the samplers with the exact (oracle) denoiser are from the true spectrum.

For each sampler (at its default spacing) and number of denoiser calls, the closed-form
variance ratio of every Fourier mode (``sampler_variance_ratio``) is averaged over the default
|k| bins at theta = (0.3, 0.8), and checked against the binned spectra of maps actually
emulated with the oracle.

    python scripts/sampler_accuracy.py [--maps 64]
    python scripts/sampler_accuracy.py --spacings   # the spacings, over the 5 cosmologies of
                                                    # scripts/sampler_validation.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffinfer.diffusion import DiffusionModel
from diffinfer.diffusion.oracle import sampler_variance_ratio
from diffinfer.diffusion.samplers import SPACINGS
from diffinfer.fields.stats import bin_modes, default_bins
from diffinfer.simulators import LognormalSimulator

THETA = np.array([0.3, 0.8])
SETTINGS = [("ddpm", 1000), ("ddpm", 250), ("ddim", 200), ("ddim", 50), ("ddim", 10),
            ("heun", 49), ("heun", 19), ("dpmpp-2m", 50), ("dpmpp-2m", 20), ("dpmpp-2m", 10),
            ("unipc", 50), ("unipc", 20), ("unipc", 10)]  # fmt: skip


def spacings(sim: LognormalSimulator, model: DiffusionModel) -> None:
    """Worst-bin closed-form error over the validation cosmologies, per spacing."""
    from sampler_validation import COSMOLOGIES

    box = sim.config.box_size
    edges = default_bins(sim.config.n_pix, box)
    lams = [sim.model_moments(torch.as_tensor(t)[None])[1][0].numpy() for t in COSMOLOGIES]
    print(f"worst |P/P_true - 1| over the bins of {len(COSMOLOGIES)} cosmologies")
    print("| sampler | spacing | 10 calls | 20 calls | 50 calls |")
    print("|---|---|---|---|---|")
    for sampler in ("dpmpp-2m", "unipc"):
        for spacing in SPACINGS:
            worst = []
            for calls in (10, 20, 50):
                errors = []
                for lam in lams:
                    r = sampler_variance_ratio(lam, model.schedule, calls, sampler, spacing=spacing)
                    binned = bin_modes(lam * r, box, edges).power
                    errors.append(np.max(np.abs(binned / bin_modes(lam, box, edges).power - 1)))
                worst.append(max(errors))
            print(f"| {sampler} | {spacing} | " + " | ".join(f"{w:.4f}" for w in worst) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=64, help="emulated maps per setting")
    parser.add_argument("--spacings", action="store_true",
                        help="compare the spacings (closed form only)")  # fmt: skip
    args = parser.parse_args()
    sim = LognormalSimulator()
    if args.spacings:
        spacings(sim, DiffusionModel.oracle(sim))
        return
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
