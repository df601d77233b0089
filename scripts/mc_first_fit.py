"""Does the first fitted round's lack of fit tell where the fitted quadratics are biased?

    .venv/bin/python scripts/mc_first_fit.py --tag corner --maps 0-19
    .venv/bin/python scripts/mc_first_fit.py --tag all --maps 0-14
    .venv/bin/python scripts/mc_first_fit.py --summary

For held-out maps of ``scripts/mc_error_study.py`` (the same maps, simulator seed and
likelihood seed 0), the default posterior is stopped after its first round of added
timesteps (``max_timesteps=32``), with every fit trusted (``FIT_RESIDUAL_MAX`` lifted), and
the rms residual of that round's quadratics over their design is recorded: what the
posterior knows before the timesteps pile up. ``--summary`` compares it, on the corner maps,
with the bias of the fitted path against the grid-evaluated one
(``scripts/mc_fit_vs_direct.py``, docs/data/mc_error/direct) and counts, on maps drawn
from the whole prior, how many exceed each threshold (each such map would be refined on the
grid, at about 3 times the cost). One JSON file per map, written atomically; a rerun skips
what is done.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

OUT = Path("docs/data/mc_error/first-fit")
THRESHOLDS = (0.2, 0.3, 0.4, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", choices=["corner", "all"], default="corner")
    parser.add_argument("--maps", default="0-19", help="first-last map index")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        return summary()
    import diffinfer as di
    from diffinfer.inference import mc_control
    from diffinfer.io import write_json_atomic

    sys.path.insert(0, str(Path(__file__).parent))
    from mc_error_study import held_out

    first, last = (int(x) for x in args.maps.split("-"))
    OUT.mkdir(parents=True, exist_ok=True)
    mc_control.FIT_RESIDUAL_MAX = math.inf  # record the residual, trust every fit
    model = di.load_model("lognormal64")
    omega_max = 0.2 if args.tag == "corner" else None
    for i, truth, density in held_out(last + 1, omega_max, model):
        path = OUT / f"{args.tag}-map{i:03d}.json"
        if i < first or path.exists():
            continue
        post = di.posterior(density, model=model, seed=0, progress=False, max_timesteps=32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = post.grid()
        stages = g.mc_error["stages"]
        fitted = [s for s in stages if "fit_residual_nats" in s]
        residual = fitted[0]["fit_residual_nats"] if fitted else None
        lack = fitted[0]["fit_lack_of_fit_nats"] if fitted else None
        write_json_atomic(path, {"truth": truth.tolist(), "first_fit_residual_nats": residual,
                                 "first_fit_lack_of_fit_nats": lack,
                                 "first_error": stages[0]["mean"],
                                 "n_denoiser_calls": g.mc_error["n_denoiser_calls"]})  # fmt: skip
        print(
            f"{args.tag} map {i}: first-round residual {residual}, lack of fit {lack} nats",
            flush=True,
        )


def summary() -> None:
    from scipy import stats

    from diffinfer.io import write_json_atomic

    direct = json.loads(Path("docs/data/mc_error/direct/summary.json").read_text())
    report: dict = {}
    for tag in ("corner", "all"):
        files = sorted(OUT.glob(f"{tag}-map*.json"))
        res = np.array([json.loads(f.read_text())["first_fit_residual_nats"] or 0.0
                        for f in files])  # fmt: skip
        entry = {"n_maps": len(res), "nats": np.round(res, 3).tolist(),
                 "maps_above": {str(t): int((res > t).sum()) for t in THRESHOLDS}}  # fmt: skip
        if tag == "corner":
            # the fitted path's Omega_m bias against the grid-evaluated path, same maps
            fit_dir = Path("docs/data/mc_error")
            bias = []
            for f in files:
                i = int(f.stem.split("map")[1])
                e = json.loads((fit_dir / "corner-fits" / f"map{i:03d}-exact.json").read_text())
                r = json.loads((fit_dir / "corner-fits" / f"map{i:03d}-seed0.json").read_text())
                d = json.loads((fit_dir / "direct" / f"map{i:03d}.json").read_text())
                sd = math.sqrt(e["cov"][0][0])
                bias.append((r["mc_error"]["stages"][-1]["posterior_mean"][0] - d["mean"][0]) / sd)
            bias = np.array(bias)
            rho = stats.spearmanr(res, bias)
            entry["omega_m_bias_fit_minus_grid"] = np.round(bias, 3).tolist()
            entry["spearman"] = round(float(rho.statistic), 3)
            entry["p_value"] = float(rho.pvalue)
            entry["bias_above"] = {str(t): _mean_se(bias[res > t]) for t in THRESHOLDS}
            entry["bias_at_or_below"] = {str(t): _mean_se(bias[res <= t]) for t in THRESHOLDS}
            entry["n_direct_maps"] = direct["n_maps"]
        report[tag] = entry
    write_json_atomic(OUT / "summary.json", report)
    print(json.dumps(report, indent=1))


def _mean_se(x: np.ndarray) -> list:
    if len(x) < 2:
        return [round(float(x.mean()), 3) if len(x) else None, None, len(x)]
    return [round(float(x.mean()), 3), round(float(x.std(ddof=1) / math.sqrt(len(x))), 3), len(x)]


if __name__ == "__main__":
    main()
