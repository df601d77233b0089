"""What the refinement of the located Gaussian changes: cost and posteriors of the default
diffusion posterior with and without it, map by map on the same test maps.

    python scripts/refine_cost.py calibration/lognormal64-refine calibration/lognormal64-norefine \
        --out docs/data/refine_cost.json

Both studies are ``diffinfer calibrate --model lognormal64 --analyses diffusion,exact`` runs
of the same maps, the second with ``--set refine=false``. Printed and written: likelihood
evaluations and network calls per map (median, mean, max) on each study's maps and on the
maps both finished; the posterior mean's shift from the exact posterior (in exact sd) for
each; and the difference between the two diffusion posteriors' means (rms and max, in exact
sd). Seconds are not compared: the two studies ran side by side on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffinfer.calibration.results import load_results
from diffinfer.io import write_json_atomic


def _by_index(study: Path, analysis: str) -> dict[int, dict]:
    return {int(r["index"]): r for r in load_results(study, analysis)}


def _cost(results: list[dict]) -> dict:
    out = {"n_maps": len(results)}
    for key in ("n_evaluations", "network_calls"):
        v = np.array([float(r[key]) for r in results])
        out[key] = {"median": float(np.median(v)), "mean": round(float(v.mean()), 1),
                    "max": float(v.max())}  # fmt: skip
    return out


def _shift(diff: dict[int, dict], exact: dict[int, dict], keys: list[int]) -> np.ndarray:
    return np.array([(diff[i]["mean"] - exact[i]["mean"]) / np.sqrt(np.diag(exact[i]["cov"]))
                     for i in keys])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("refined", type=Path)
    p.add_argument("plain", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    studies = {"refined": args.refined, "plain": args.plain}
    diff = {k: _by_index(v, "diffusion") for k, v in studies.items()}
    exact = {k: _by_index(v, "exact") for k, v in studies.items()}
    common = sorted(set(diff["refined"]) & set(diff["plain"]) & set(exact["plain"]))
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
    d = np.array([(diff["refined"][i]["mean"] - diff["plain"][i]["mean"])
                  / np.sqrt(np.diag(exact["plain"][i]["cov"])) for i in common])  # fmt: skip
    out["refined_minus_plain"] = {"rms": np.sqrt((d**2).mean(0)).round(3).tolist(),
                                  "max_abs": np.abs(d).max(0).round(3).tolist()}  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.out:
        write_json_atomic(args.out, out)


if __name__ == "__main__":
    main()
