"""Reference posteriors of the shipped N-body example maps from many timesteps, without the
Monte Carlo error control, at the card's temperature (docs/nbody.md).

    .venv/bin/python scripts/nbody_examples_reference.py --timesteps 256 \
        --out docs/data/nbody_examples_k256.json

Each map of examples/nbody64 gets ``di.posterior(rho, model="nbody64", n_timesteps=K,
max_timesteps=K, temperature=<the card's>)``: one stratified plan of K timesteps (the
temperature is given explicitly because the card stores it for the 8-timestep estimator).
Writes the posterior mean and sd, the estimated Monte Carlo error and the time per map; the
posteriors of the default call (scripts/nbody_far_maps.py --examples) are compared with them.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maps", default="map0.npy,map1.npy,map2.npy")
    parser.add_argument("--out", default="docs/data/nbody_examples_k256.json")
    args = parser.parse_args()

    import diffinfer as di
    from diffinfer.io import write_json_atomic

    model = di.load_model("nbody64")
    (entry,) = model.card["calibration"]
    meta = json.loads(Path("examples/nbody64/examples.json").read_text())
    rows = []
    for name in args.maps.split(","):
        rho = np.load(Path("examples/nbody64") / name).astype(np.float64)
        truth = np.array([meta[name]["theta"]["Omega_m"], meta[name]["theta"]["sigma_8"]])
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = di.posterior(rho, model=model, n_timesteps=args.timesteps,
                                max_timesteps=args.timesteps, seed=args.seed,
                                temperature=float(entry["temperature"]),
                                progress=False)  # fmt: skip
            g = post.grid()
        row = {"map": name, "truth": truth.tolist(), "timesteps": args.timesteps,
               "seed": args.seed, "temperature": float(entry["temperature"]),
               "mean": g.mean().tolist(), "sd": np.sqrt(np.diag(g.cov())).tolist(),
               "mc_error": post.mc_error()["mean"], "evaluations": g.n_evaluations,
               "seconds": time.perf_counter() - start}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json_atomic(args.out, rows)


if __name__ == "__main__":
    main()
