"""Posteriors of many maps: ``diffinfer.posteriors`` (network calls batched across maps)
against ``diffinfer.posterior`` map by map, on the same maps in one process.

    .venv/bin/python benchmarks/bench_posteriors.py [--maps 32] [--device cuda] [--threads 2]

The maps are log-normal maps of the model's geometry at cosmologies drawn uniformly from the
prior (seed 0). Each map's default posterior (``lognormal64``, the grid) is computed once
alone, one after another, and once inside a batch of all the maps (``batch=--maps``); the
per-map cost in the batch is reported as a ratio to the one-map cost, with the network
calls of each path (the same, map by map), the largest difference of the posterior means
in posterior sd, and the classifier two-sample accuracy (C2ST, k-NN) between 4,000 draws of
each map's two posteriors (0.5: indistinguishable), the mean and the largest over the maps.
On a CPU the network's fastest call is one map's own (16 evaluations, docs/performance.md),
so the ratio is about 1; the batch pays on a GPU.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _timing import machine

import diffinfer as di
from diffinfer.calibration.compare import two_sample_accuracy
from diffinfer.likelihoods.terms import default_max_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lognormal64")
    p.add_argument("--maps", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = di.load_model(args.model, device=args.device)
    print(machine(), f"| device {model.device} | network call of at most "
          f"{default_max_batch(model)} evaluations")  # fmt: skip
    sim = di.LognormalSimulator.for_model(model)
    rng = np.random.default_rng(0)
    box = sim.config.prior
    thetas = np.asarray(box.low) + np.asarray(box.width) * rng.random((args.maps, 2))
    maps = np.stack([sim.simulate(t, 1, seed=1000 + i)[0] for i, t in enumerate(thetas)])
    warnings.simplefilter("ignore")  # Monte Carlo warnings are the posteriors' own business
    t0 = time.perf_counter()
    alone = []
    for m in maps:
        post = di.posterior(m, model=model, progress=False)
        post.grid()
        alone.append(post)
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = di.posteriors(maps, model=model, batch=args.maps, progress=False)
    t_together = time.perf_counter() - t0
    calls = [[q.stochastic.n_denoiser_calls for q in path] for path in (alone, together)]
    shift = max(
        float(np.max(np.abs(b.grid().mean() - a.grid().mean()) / np.sqrt(np.diag(a.grid().cov()))))
        for a, b in zip(alone, together, strict=True)
    )
    same = sum(x == y for x, y in zip(*calls, strict=True))
    c2st = [two_sample_accuracy(a.grid().sample(4000, seed=1), b.grid().sample(4000, seed=2))
            for a, b in zip(alone, together, strict=True)]  # fmt: skip
    print(f"{args.maps} maps: one at a time {t_alone:.1f} s ({t_alone / args.maps:.2f} s per map), "
          f"batched {t_together:.1f} s ({t_together / args.maps:.2f} s per map)")  # fmt: skip
    print(f"per-map cost in the batch / alone: {t_together / t_alone:.3f}")
    print(f"network calls: {sum(calls[0])} alone, {sum(calls[1])} batched; the same on "
          f"{same} of {args.maps} maps; median per map {np.median(calls[0]):.0f}")  # fmt: skip
    print(f"largest difference of a posterior mean: {shift:.2g} posterior sd")
    print(f"C2ST alone vs batched: mean {np.mean(c2st):.3f}, max {np.max(c2st):.3f}")


if __name__ == "__main__":
    main()
