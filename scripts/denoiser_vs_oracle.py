"""Held-out epsilon-MSE of trained models per timestep, against the oracle denoiser.

Uses the validation split of the data set the first model was trained on, the same maps,
timesteps and noise for every model, and reports the excess over the oracle's MSE with its
standard error (paired over maps).

    python scripts/denoiser_vs_oracle.py runs/compare-unet/model runs/compare-spectral/model
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffinfer.data import CamelsMaps
from diffinfer.diffusion import OracleDenoiser, load_model
from diffinfer.simulators import LognormalSimulator

TIMESTEPS = (1, 10, 50, 100, 200, 400, 600, 800, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model directories or names")
    parser.add_argument("--maps", type=int, default=256, help="validation maps")
    args = parser.parse_args()
    models = [load_model(m) for m in args.models]
    first = models[0]
    data_info = first.card["data"]
    data = CamelsMaps.open(data_info["root"], suite="Lognormal",
                           maps_per_cosmology=data_info["maps_per_cosmology"])  # fmt: skip
    split = first.card["data"]["split"]
    idx = data.split_maps("validation", tuple(split["fractions"]), split["seed"])
    idx = np.random.default_rng(0).choice(idx, size=min(args.maps, len(idx)), replace=False)
    density, theta = data.load(np.sort(idx))
    y = first.transform.forward(density).unsqueeze(1)
    theta = torch.as_tensor(theta)
    oracle = OracleDenoiser(LognormalSimulator(first.field, first.transform), first.schedule)
    g = torch.Generator().manual_seed(1)
    header = "| t | oracle MSE | " + " | ".join(f"excess: {m}" for m in args.models) + " |"
    print(header)
    print("|---" * (2 + len(models)) + "|")
    for t in TIMESTEPS:
        tt = torch.full((len(y),), t)
        noise = torch.randn(y.shape, generator=g, dtype=torch.float64)
        x_t = first.schedule.q_sample(y, tt, noise)
        with torch.no_grad():
            ref = (oracle(x_t, tt, theta) - noise).pow(2).mean(dim=(1, 2, 3))
            cells = []
            for m in models:
                errs = []
                for i in range(0, len(y), 64):
                    eps = m(x_t[i : i + 64].float(), tt[i : i + 64], theta[i : i + 64].float())
                    errs.append((eps.double() - noise[i : i + 64]).pow(2).mean(dim=(1, 2, 3)))
                excess = torch.cat(errs) - ref
                se = excess.std() / np.sqrt(len(excess))
                cells.append(f"{excess.mean().item():.2e} ± {se.item():.1e}")
        print(f"| {t} | {ref.mean().item():.5f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
