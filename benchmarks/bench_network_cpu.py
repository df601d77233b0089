"""Ways to run the denoiser on a CPU, side by side: what one likelihood evaluation costs.

    .venv/bin/python benchmarks/bench_network_cpu.py [--model lognormal64] [--compile]

The workload is the diffusion likelihood's: one 64^2 map, a fixed set of (x_t, t, theta)
inputs, evaluated in chunks of ``max_batch`` denoiser calls. Every option is timed in the same
process (best of 3 after a warm-up call) and reported as network evaluations per second and as
a ratio to the present default (fp32 is the baseline of the precision column; bf16 autocast at
``max_batch=16`` was the posterior default). Options: ``torch.no_grad`` against
``torch.inference_mode``, bf16 autocast (oneDNN; AMX where the CPU has it), channels-last
memory layout, batch size, 1 or 2 threads, and ``torch.compile`` (inductor; needs a C++
compiler; off unless ``--compile``, as its compilation takes minutes). The largest difference of
log L against the fp32 reference is printed beside each, in nats.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import machine

from diffinfer.diffusion import load_model
from diffinfer.diffusion.model import autocast
from diffinfer.simulators import LognormalSimulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lognormal64")
    parser.add_argument("--n-eval", type=int, default=512, help="denoiser calls per timing")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    model.eval()
    sim = LognormalSimulator(model.field, model.transform)
    y = sim.transform.forward(sim.simulate(np.array([0.3, 0.8]), 1, seed=0))[0]
    g = torch.Generator().manual_seed(0)
    n = args.n_eval
    t = torch.randint(1, 1000, (n,), generator=g)
    ab = model.schedule.alpha_bar[t].reshape(n, 1, 1, 1)
    eps = torch.randn(n, 1, 64, 64, generator=g, dtype=torch.float64)
    x = (ab.sqrt() * y + (1 - ab).sqrt() * eps).float()
    theta = (torch.tensor([0.3, 0.8]) + 0.05 * torch.randn(n, 2, generator=g)).float()
    print(machine(), flush=True)

    def run(net, batch: int, precision: str, mode: str, channels_last: bool) -> np.ndarray:
        ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
        out = []
        with ctx:
            for lo in range(0, n, batch):
                xb = x[lo : lo + batch]
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast("cpu", precision):
                    e = net(xb, t[lo : lo + batch], theta[lo : lo + batch])
                out.append((e.double() - eps[lo : lo + batch]).pow(2).sum(dim=(1, 2, 3)))
        return torch.cat(out).numpy()

    def timed(net, batch, precision, mode="no_grad", channels_last=False, threads=2):
        torch.set_num_threads(threads)
        run(net, batch, precision, mode, channels_last)  # warm-up
        best, err = np.inf, None
        for _ in range(3):
            t0 = time.perf_counter()
            err = run(net, batch, precision, mode, channels_last)
            best = min(best, time.perf_counter() - t0)
        torch.set_num_threads(2)
        return n / best, err

    # weights of the likelihood: errors per call of 1 (a nat scale of one call per term)
    base_rate, base_err = timed(model.denoiser, 16, "fp32")
    ref_rate = None
    rows = []
    cl_net = model.denoiser.to(memory_format=torch.channels_last)
    configs = [
        ("fp32, no_grad, batch 16", model.denoiser, 16, "fp32", "no_grad", False, 2),
        ("bf16, no_grad, batch 16 (present default)", model.denoiser, 16, "bf16", "no_grad",
         False, 2),
        ("bf16, inference_mode, batch 16", model.denoiser, 16, "bf16", "inference_mode", False, 2),
        ("fp32, inference_mode, batch 16", model.denoiser, 16, "fp32", "inference_mode", False, 2),
        ("bf16, batch 8", model.denoiser, 8, "bf16", "inference_mode", False, 2),
        ("bf16, batch 32", model.denoiser, 32, "bf16", "inference_mode", False, 2),
        ("bf16, batch 64", model.denoiser, 64, "bf16", "inference_mode", False, 2),
        ("bf16, batch 128", model.denoiser, 128, "bf16", "inference_mode", False, 2),
        ("fp32, batch 64", model.denoiser, 64, "fp32", "inference_mode", False, 2),
        ("bf16, channels-last, batch 16", cl_net, 16, "bf16", "inference_mode", True, 2),
        ("fp32, channels-last, batch 16", cl_net, 16, "fp32", "inference_mode", True, 2),
        ("bf16, batch 16, 1 thread", model.denoiser, 16, "bf16", "inference_mode", False, 1),
    ]  # fmt: skip
    for name, net, batch, precision, mode, cl, threads in configs:
        rate, err = timed(net, batch, precision, mode, cl, threads)
        rows.append((name, rate, float(np.max(np.abs(err - base_err)))))
        if name.endswith("(present default)"):
            ref_rate = rate
        print(f"  {name}: {rate:.0f}/s", flush=True)
    model.denoiser.to(memory_format=torch.contiguous_format)
    if args.compile:
        try:
            compiled = torch.compile(model.denoiser, dynamic=False)
            t0 = time.perf_counter()
            for batch in (16, 64):
                rate, err = timed(compiled, batch, "bf16", "no_grad")
                rows.append((f"bf16, torch.compile, batch {batch}", rate,
                             float(np.max(np.abs(err - base_err)))))  # fmt: skip
            print(f"  compile + timing took {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as exc:  # report why compile is unavailable, whatever it is
            print(f"  torch.compile unavailable: {type(exc).__name__}: {exc}"[:300])
    print(f"\nfp32 at batch 16: {base_rate:.0f} evaluations/s\n")
    print("| option | evaluations/s | vs present default | max |err diff| per call |")
    print("|---|---|---|---|")
    for name, rate, d in rows:
        print(f"| {name} | {rate:.0f} | {rate / ref_rate:.2f} | {d:.2g} |")


if __name__ == "__main__":
    main()
