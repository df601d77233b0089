"""What exactness across batchings would cost the simulator (docs/simulator.md).

Times ``simulate`` of 1,000 Latin-hypercube cosmologies x 1 map (spectra evaluated ``chunk``
at a time) and the evaluation of the same 1,000 spectra one at a time, on one thread::

    .venv/bin/python benchmarks/bench_simulate_batching.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from diffinfer.data.synthetic import latin_hypercube
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    torch.set_num_threads(1)
    sim = LognormalSimulator()
    theta = latin_hypercube(1000, seed=0)
    start = time.perf_counter()
    sim.simulate(theta, 1, seed=0)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(len(theta)):
            sim.eigenvalues(torch.as_tensor(theta[i : i + 1]))
    alone = time.perf_counter() - start
    print(f"simulate 1000 cosmologies x 1 map: {batched:.2f} s; the 1000 spectra one at a "
          f"time: {alone:.2f} s ({alone:.1f} ms each); threads {torch.get_num_threads()}, "
          f"numpy {np.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
