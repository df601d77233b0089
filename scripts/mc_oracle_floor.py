"""What the network adds to the corner's shift: the oracle's full bound on the same maps.

    .venv/bin/python scripts/mc_oracle_floor.py --n-maps 20  # docs/data/mc_error/oracle-floor.json
    .venv/bin/python scripts/mc_oracle_floor.py --summary    # oracle-floor-summary.json

The held-out corner maps of ``mc_error_study.py`` (Omega_m < 0.2, the first ``--n-maps``)
get the posterior of the oracle denoiser (the exact score of the log-normal field) with every
term of the bound (``n_timesteps=None``: all 1,000 timesteps, one noise draw each) for the
likelihood seeds 0 and 1. Its shift from the exact posterior is what the bound and the grid
contribute with no network error and nearly no Monte Carlo error (what is left, one noise
draw per term, shows as the difference between the two seeds). Compared with the
seed-independent shift of the ``lognormal64`` default on the same maps (the mean over its
seeds 0-2 in docs/data/mc_error/corner), it tells the network's share apart. Results per map
are written as they finish (atomically; a rerun skips them); ``--summary`` prints the
comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def run(args: argparse.Namespace) -> None:
    import diffinfer as di
    from diffinfer.io import write_json_atomic

    sys.path.insert(0, str(Path(__file__).parent))
    from mc_error_study import held_out

    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {}
    model = di.load_model("lognormal64")
    for i, truth, density in held_out(args.n_maps, 0.2, model):
        if f"map{i:03d}" in state:
            continue
        exact = json.loads((Path(args.results) / f"map{i:03d}-exact.json").read_text())
        sd = np.sqrt(np.diag(exact["cov"]))
        start = time.perf_counter()
        row: dict = {"truth": truth.tolist()}
        for seed in (0, 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = di.posterior(density, model="oracle", n_timesteps=None, seed=seed,
                                 progress=False).grid()  # fmt: skip
            row[f"shift_seed{seed}"] = ((g.mean() - exact["mean"]) / sd).tolist()
            row[f"width_seed{seed}"] = (np.sqrt(np.diag(g.cov())) / sd).tolist()
        row["seconds"] = time.perf_counter() - start
        state[f"map{i:03d}"] = row
        write_json_atomic(out, state)
        print(i, json.dumps(row), flush=True)


def summary(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from mc_error_study import final_shift

    state = json.loads(Path(args.out).read_text())
    oracle, network = [], []
    for key, row in sorted(state.items()):
        oracle.append(np.mean([row["shift_seed0"], row["shift_seed1"]], axis=0))
        exact = json.loads((Path(args.results) / f"{key}-exact.json").read_text())
        runs = sorted(Path(args.results).glob(f"{key}-seed*.json"))
        network.append(np.mean([final_shift(json.loads(p.read_text()), exact) for p in runs],
                               axis=0))  # fmt: skip
    o, n = np.array(oracle), np.array(network)
    k = len(o)

    def stats(x: np.ndarray) -> dict:
        return {"mean": x.mean(0).round(3).tolist(),
                "se": (x.std(0, ddof=1) / np.sqrt(k)).round(3).tolist(),
                "abs_mean": np.abs(x).mean(0).round(3).tolist(),
                "rms": np.sqrt(np.mean(x**2, axis=0)).round(3).tolist()}  # fmt: skip

    from diffinfer.io import write_json_atomic

    diff = np.array([np.subtract(r["shift_seed1"], r["shift_seed0"]) for r in state.values()])
    report = {"n_maps": k, "oracle_full_bound_seed_mean_shift": stats(o),
              "oracle_seed1_minus_seed0_rms": np.sqrt(np.mean(diff**2, 0)).round(3).tolist(),
              "lognormal64_default_seed_mean_shift": stats(n),
              "network_minus_oracle": stats(n - o)}  # fmt: skip
    print(json.dumps(report, indent=1))
    write_json_atomic(Path(args.out).with_name("oracle-floor-summary.json"), report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-maps", type=int, default=20)
    parser.add_argument("--results", default="docs/data/mc_error/corner")
    parser.add_argument("--out", default="docs/data/mc_error/oracle-floor.json")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    summary(args) if args.summary else run(args)


if __name__ == "__main__":
    main()
