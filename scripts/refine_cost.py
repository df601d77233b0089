"""What a change of the default diffusion posterior does to its cost and its posteriors,
map by map on the same test maps: two studies compared.

    python scripts/refine_cost.py calibration/lognormal64-refine calibration/lognormal64-norefine \
        --out docs/data/refine_cost.json
    python scripts/refine_cost.py calibration/lognormal64-refine-edge \
        calibration/lognormal64-refine --names edge,refined --out docs/data/edge_cost.json

Both studies are ``diffinfer calibrate --model lognormal64 --analyses diffusion,exact`` runs
of the same maps (the first pair: with and without ``--set refine=false``; the second: the
refinement near the prior edge and the re-tabulated Monte Carlo rounds, against the code
before them). Printed and written: likelihood evaluations and network calls per map
(median, mean, max, and the maps above 150 evaluations) on each study's maps and on the maps
both finished; the maps whose Monte Carlo tolerance was not met; the posterior mean's shift
from the exact posterior (in exact sd) for each; and the difference between the two
diffusion posteriors' means (rms and max, in exact sd). Seconds are not compared: the
studies ran on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffinfer.calibration.results import load_results
from diffinfer.io import write_json_atomic

EVALUATIONS_MAX = 150
"""The most evaluations a posterior should take (the target of docs/performance.md)."""


def _by_index(study: Path, analysis: str) -> dict[int, dict]:
    return {int(r["index"]): r for r in load_results(study, analysis)}


def _cost(results: list[dict]) -> dict:
    out: dict = {"n_maps": len(results)}
    for key in ("n_evaluations", "network_calls"):
        v = np.array([float(r[key]) for r in results])
        out[key] = {"median": float(np.median(v)), "mean": round(float(v.mean()), 1),
                    "max": float(v.max())}  # fmt: skip
    ev = np.array([float(r["n_evaluations"]) for r in results])
    out[f"maps_above_{EVALUATIONS_MAX}_evaluations"] = int((ev > EVALUATIONS_MAX).sum())
    out["mc_tolerance_not_met"] = int(sum(not bool(r["mc_error_met"]) for r in results))
    return out


def _shift(diff: dict[int, dict], exact: dict[int, dict], keys: list[int]) -> np.ndarray:
    return np.array([(diff[i]["mean"] - exact[i]["mean"]) / np.sqrt(np.diag(exact[i]["cov"]))
                     for i in keys])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path, help="study of the changed posterior")
    p.add_argument("second", type=Path, help="study to compare it with")
    p.add_argument("--names", default="refined,plain",
                   help="the two studies' names in the output (default refined,plain)")  # fmt: skip
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    a, b = (n.strip() for n in args.names.split(","))
    studies = {a: args.first, b: args.second}
    diff = {k: _by_index(v, "diffusion") for k, v in studies.items()}
    exact = {k: _by_index(v, "exact") for k, v in studies.items()}
    common = sorted(set(diff[a]) & set(diff[b]) & set(exact[b]))
    out: dict = {"studies": {k: str(v) for k, v in studies.items()}, "common_maps": len(common)}
    for k in studies:
        out[k] = {"all": _cost(list(diff[k].values())),
                  "common": _cost([diff[k][i] for i in common])}  # fmt: skip
        s = _shift(diff[k], exact[k], [i for i in common if i in exact[k]])
        out[k]["shift_from_exact"] = {
            "mean": s.mean(0).round(3).tolist(),
            "abs_mean": np.abs(s).mean(0).round(3).tolist(),
            "maps_above_1": int((np.abs(s) > 1).any(1).sum()),
        }
    d = np.array([(diff[a][i]["mean"] - diff[b][i]["mean"])
                  / np.sqrt(np.diag(exact[b][i]["cov"])) for i in common])  # fmt: skip
    out[f"{a}_minus_{b}"] = {"rms": np.sqrt((d**2).mean(0)).round(3).tolist(),
                             "max_abs": np.abs(d).max(0).round(3).tolist()}  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.out:
        write_json_atomic(args.out, out)


if __name__ == "__main__":
    main()
