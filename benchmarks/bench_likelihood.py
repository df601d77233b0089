"""Speed of the diffusion likelihood at 64^2: theta-points x terms per second, and a gradient.

    .venv/bin/python benchmarks/bench_likelihood.py [--model runs/lognormal64/model]

For L_0 and a 10-term set, evaluates one map at 64 theta points with the network (default
architecture; a trained model if given, else fresh weights) and with the oracle, in fp32 and
bf16 autocast, and reports denoiser evaluations (theta-points x terms x noise draws) per second;
for bf16 also the largest error of log L differences against fp32, in nats. Then the time of
log L and its gradient at one theta. Best of three; the first line names the machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import best_of, machine

from diffinfer.diffusion import DiffusionModel, NoiseSchedule, UNetConfig, load_model
from diffinfer.fields import FieldConfig
from diffinfer.likelihoods.diffusion import DiffusionLikelihood
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="trained model (default: fresh default architecture)")
    args = parser.parse_args()
    print(machine())
    if args.model:
        net = load_model(args.model)
    else:
        torch.manual_seed(0)
        sim = LognormalSimulator()
        net = DiffusionModel.from_config(UNetConfig(base_channels=16, spectral=True),
                                         NoiseSchedule(), sim.transform, FieldConfig())  # fmt: skip
    sim = LognormalSimulator(net.field, net.transform)
    density = sim.simulate(np.array([0.3, 0.8]), 1, seed=0)[0]
    rng = np.random.default_rng(0)
    prior = net.field.prior
    theta = torch.as_tensor(rng.uniform(prior.low, prior.high, size=(64, 2)))
    print("| denoiser | terms | precision | evaluations/s | theta/s | "
          "max error vs fp32 (nats) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, model in (("U-Net 16 + spectral", net), ("oracle", DiffusionModel.oracle(sim))):
        for terms in ("l0", list(range(10))):
            ref = None
            for precision in ("fp32", "bf16"):
                if model.is_oracle and precision == "bf16":
                    continue
                like = DiffusionLikelihood(model, density, terms=terms, precision=precision)
                with torch.no_grad():
                    values = like(theta)
                    seconds = best_of(lambda like=like: like(theta))
                n_eval = len(theta) * like.n_evaluations_per_theta
                err = "" if ref is None else f"{(values - values[0] - ref).abs().max():.3f}"
                ref = values - values[0] if ref is None else ref
                label = "L_0" if terms == "l0" else "10 terms (0-9)"
                print(f"| {name} | {label} | {precision} | {n_eval / seconds:,.0f} | "
                      f"{len(theta) / seconds:,.1f} | {err} |")  # fmt: skip
    print("\n| gradient at one theta | time (ms) |\n|---|---|")
    for label, terms in (("L_0", "l0"), ("10 terms", list(range(10)))):
        like = DiffusionLikelihood(net, density, terms=terms)

        def grad(like=like) -> None:
            th = torch.tensor([[0.3, 0.8]], dtype=torch.float64, requires_grad=True)
            like(th).sum().backward()

        with torch.no_grad():
            value_time = best_of(lambda like=like: like(theta[:1]))
        print(f"| {label}: value | {1e3 * value_time:.1f} |")
        print(f"| {label}: value + gradient | {1e3 * best_of(grad):.1f} |")


if __name__ == "__main__":
    main()
