"""Peak memory of one call of the network's diffusion likelihood, with and without gradients.

Each case runs in a fresh process (peak resident memory, ``ru_maxrss``), on the shipped model
``lognormal64`` and the example map, VLB from 16 timesteps (the default)::

    .venv/bin/python benchmarks/bench_likelihood_memory.py
"""

from __future__ import annotations

import platform
import subprocess
import sys

CHILD = """
import resource, sys, time
import numpy as np, torch
import diffinfer as di
m = np.load("examples/lognormal64/map1.npy")
like = di.DiffusionLikelihood(di.load_model("lognormal64"), m, terms="vlb", n_timesteps=16)
rows, grad = int(sys.argv[1]), sys.argv[2] == "grad"
theta = torch.tensor([[0.25, 0.78]]).repeat(rows, 1) + 0.01 * torch.rand(rows, 2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
theta.requires_grad_(grad)
start = time.perf_counter()
value = like(theta)
if grad:
    value.sum().backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{rows} {sys.argv[2]} {before:.0f} {peak:.0f} {time.perf_counter() - start:.1f}")
"""


def main() -> None:
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print("| theta rows | gradients | before the call (MB) | peak (MB) | seconds |")
    print("|---|---|---|---|---|")
    for rows, grad in ((2, "no"), (64, "no"), (2, "grad"), (8, "grad")):
        out = subprocess.run([sys.executable, "-c", CHILD, str(rows), grad], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        print(
            f"| {out[0]} | {'yes' if grad == 'grad' else 'no'} | {out[2]} | {out[3]} | {out[4]} |"
        )


if __name__ == "__main__":
    main()
