"""Where one default posterior spends its time: the network against everything else.

    .venv/bin/python benchmarks/bench_posterior_profile.py [--maps 5] [--threads 1]

For the first ``--maps`` test maps of the default log-normal study (cosmologies uniform in the
prior, study seed 0), the default ``lognormal64`` posterior is computed once to warm up and
once under ``cProfile``; the wall time is split into the network's forward passes (the U-Net
and its spectral branch, ``diffinfer.diffusion.batching.denoise``), the control variate's
closed form (``SpectralBranch.expected_error``, which runs the branch's MLP over every
timestep for each theta), and the rest (locator bookkeeping, grids, the Monte Carlo error,
the goodness-of-fit check's simulations). The pieces that do not depend on theta (the map's
FFT and shell powers, the term weights) live in the rest: if it is small, caching them per
likelihood cannot pay. Shares are ratios within one run, so they hold across machines of one
kind; the machine is printed.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import warnings

import torch
from _timing import machine

import diffinfer as di
from diffinfer.calibration.cases import test_case
from diffinfer.calibration.config import StudyConfig

PIECES = {
    "network": ("batching.py", "denoise"),
    "control variate closed form": ("spectral.py", "expected_error"),
}


def _cumulative(stats: pstats.Stats, file: str, function: str) -> float:
    return sum(v[3] for (path, _, name), v in stats.stats.items()  # type: ignore[attr-defined]
               if path.endswith(file) and name == function)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    print(machine())
    config = StudyConfig(model="lognormal64", analyses=["diffusion"], n_maps=args.maps)
    rows = []
    for i in range(args.maps):
        density, _ = test_case(config, i)
        di.posterior(density, model="lognormal64", progress=False).grid()  # warm-up
        prof = cProfile.Profile()
        prof.enable()
        di.posterior(density, model="lognormal64", progress=False).grid()
        prof.disable()
        stats = pstats.Stats(prof)
        total = stats.total_tt  # type: ignore[attr-defined]
        row = {"map": i, "seconds": round(total, 2)}
        for name, (file, function) in PIECES.items():
            row[name] = round(_cumulative(stats, file, function) / total, 3)
        row["rest"] = round(1 - sum(row[name] for name in PIECES), 3)
        rows.append(row)
        print(json.dumps(row))
    shares = {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in (*PIECES, "rest")}
    print(json.dumps({"maps": len(rows), "mean shares": shares}))


if __name__ == "__main__":
    main()
