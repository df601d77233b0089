"""Training and emulation speed of diffusion models at 64^2, fp32 against bf16 autocast.

    .venv/bin/python benchmarks/bench_diffusion.py [--quick]

Training: optimiser steps of batch 32 (forward, backward, AdamW) for the default
architecture (``configs/lognormal64.yaml``: U-Net 16 channels + spectral branch) and a wider
U-Net (32 channels), in samples per second. Emulation: maps per second for DDPM (1000 steps),
DDIM (50 steps) and UniPC (50 calls, the default) in batches of 32. Each figure is the best of
three timings; the first line names the machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import best_of, machine

from diffinfer.diffusion import DiffusionModel, NoiseSchedule, UNetConfig
from diffinfer.diffusion.model import autocast
from diffinfer.fields import FieldConfig, Transform

ARCHITECTURES = {
    "U-Net 16 + spectral (default)": UNetConfig(base_channels=16, spectral=True),
    "U-Net 32 + spectral": UNetConfig(base_channels=32, spectral=True),
}


def make_model(config: UNetConfig) -> DiffusionModel:
    torch.manual_seed(0)
    return DiffusionModel.from_config(config, NoiseSchedule(), Transform(), FieldConfig())


def training_rate(model: DiffusionModel, precision: str, steps: int, batch: int = 32) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(batch, 1, 64, 64, generator=g)
    theta = torch.tensor([[0.3, 0.8]]).expand(batch, 2)

    def run() -> None:
        for _ in range(steps):
            t = torch.randint(1, 1001, (batch,), generator=g)
            noise = torch.randn(y.shape, generator=g)
            with autocast("cpu", precision):
                loss = model.loss(y, theta, t, noise).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    run()  # warm-up
    return steps * batch / best_of(run)


def emulation_rate(model: DiffusionModel, sampler: str, steps: int, precision: str) -> float:
    def run() -> None:
        model.sample(np.array([0.3, 0.8]), 32, steps=steps, sampler=sampler,
                     precision=precision, batch_size=32)  # fmt: skip

    return 32 / best_of(run, repeats=1 if steps > 100 else 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (rough numbers)")
    args = parser.parse_args()
    print(machine())
    steps = 3 if args.quick else 10
    print("| architecture | parameters | training fp32 (samples/s) | training bf16 | speed-up |")
    print("|---|---|---|---|---|")
    for name, cfg in ARCHITECTURES.items():
        model = make_model(cfg)
        n_par = sum(p.numel() for p in model.parameters())
        fp32, bf16 = (training_rate(model, p, steps) for p in ("fp32", "bf16"))
        print(f"| {name} | {n_par:,} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f} |")
    model = make_model(ARCHITECTURES["U-Net 16 + spectral (default)"]).eval()
    print("\n| emulation (default architecture) | fp32 (maps/s) | bf16 (maps/s) |")
    print("|---|---|---|")
    for sampler, n_steps in (("ddpm", 1000), ("ddim", 50), ("unipc", 50)):
        if args.quick and n_steps > 100:
            n_steps = 100
        fp32, bf16 = (emulation_rate(model, sampler, n_steps, p) for p in ("fp32", "bf16"))
        print(f"| {sampler.upper()} {n_steps} steps | {fp32:.2f} | {bf16:.2f} |")


if __name__ == "__main__":
    main()
