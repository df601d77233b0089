"""Is the refined posterior's shift at low Omega_m the fitted quadratics' or the network's?

    .venv/bin/python scripts/mc_fit_vs_direct.py --maps 0-19 [--out docs/data/mc_error/direct]

For held-out corner maps of ``scripts/mc_error_study.py`` (Omega_m < 0.2, the same maps and
simulator seed), the default posterior is recomputed with its added timesteps *evaluated on
the grid itself* at every round (no quadratic fits: ``mc_control.GROSS_NARROWING`` set so
that no fit is trusted, as ``tests/test_mc_error.py`` does), up to 128 timesteps. Its shift
from the exact posterior is then compared with the fitted path's (the corner results of
``mc_error_study.py`` before lack of fit sent maps to the grid, tag ``corner-fits``, same
maps and likelihood seed 0). One JSON file per map, written
atomically; a rerun skips what is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", default="0-19", help="first-last map index")
    parser.add_argument("--out", default="docs/data/mc_error/direct")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if args.summary:
        return summary(out)
    import diffinfer as di
    from diffinfer.inference import mc_control
    from diffinfer.io import write_json_atomic

    sys.path.insert(0, str(Path(__file__).parent))
    from mc_error_study import held_out

    first, last = (int(x) for x in args.maps.split("-"))
    out.mkdir(parents=True, exist_ok=True)
    mc_control.GROSS_NARROWING = 10.0  # no fitted round is trusted: evaluate on the grid
    model = di.load_model("lognormal64")
    for i, truth, density in held_out(last + 1, 0.2, model):
        path = out / f"map{i:03d}.json"
        if i < first or path.exists():
            continue
        start = time.perf_counter()
        post = di.posterior(density, model=model, seed=0, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = post.grid()
        mc = g.mc_error
        write_json_atomic(path, {"truth": truth.tolist(), "mean": g.mean().tolist(),
                                 "cov": g.cov().tolist(), "mc_error": mc,
                                 "seconds": time.perf_counter() - start})  # fmt: skip
        print(
            f"map {i}: {mc['n_timesteps']} timesteps, direct {mc.get('direct')}, error "
            f"{max(mc['mean']):.2f} sd, {time.perf_counter() - start:.0f} s",
            flush=True,
        )


def summary(out: Path) -> None:
    """Shift from the exact posterior (units of its sd), direct against fitted, same maps."""
    from diffinfer.io import write_json_atomic

    corner = Path("docs/data/mc_error/corner-fits")  # the fitted path, former default
    direct, fitted, errors, residual, calls = [], [], [], [], []
    for f in sorted(out.glob("map*.json")):
        i = int(f.stem[3:])
        d = json.loads(f.read_text())
        e = json.loads((corner / f"map{i:03d}-exact.json").read_text())
        r = json.loads((corner / f"map{i:03d}-seed0.json").read_text())
        sd = np.sqrt(np.diag(e["cov"]))
        direct.append((np.array(d["mean"]) - e["mean"]) / sd)
        fitted.append((np.array(r["mc_error"]["stages"][-1]["posterior_mean"]) - e["mean"]) / sd)
        errors.append(np.array(d["mc_error"]["mean"]))
        calls.append((d["mc_error"]["n_denoiser_calls"], r["mc_error"]["n_denoiser_calls"]))
        fits = [s["fit_residual_nats"] for s in r["mc_error"]["stages"] if "fit_residual_nats" in s]
        residual.append(fits[-1] if fits else np.nan)
    direct, fitted, n = np.array(direct), np.array(fitted), len(direct)

    def mean_se(x: np.ndarray) -> dict:
        return {"mean": x.mean(0).round(3).tolist(),
                "se": (x.std(0, ddof=1) / np.sqrt(n)).round(3).tolist()}  # fmt: skip

    report = {"n_maps": n, "direct_shift": mean_se(direct), "fitted_shift": mean_se(fitted),
              "fitted_minus_direct": mean_se(fitted - direct),
              "direct_abs_shift": np.abs(direct).mean(0).round(3).tolist(),
              "fitted_abs_shift": np.abs(fitted).mean(0).round(3).tolist(),
              "direct_error_rms": np.sqrt(np.mean(np.square(errors), 0)).round(3).tolist(),
              }  # fmt: skip
    # does the fits' own lack of fit (rms residual at the design points, nats) tell where
    # they are biased? Rank correlation with the Omega_m bias, and the bias either side of
    # 0.3 nats
    from scipy import stats

    residual, bias = np.array(residual), (fitted - direct)[:, 0]
    rho = stats.spearmanr(residual, bias)
    high = residual > 0.3
    report["fit_residual"] = {
        "nats": np.round(residual, 3).tolist(),
        "spearman_vs_omega_m_bias": round(float(rho.statistic), 3),
        "p_value": float(rho.pvalue),
        "maps_above_0.3": int(high.sum()),
        "omega_m_bias_above_0.3": round(float(bias[high].mean()), 3),
        "omega_m_bias_below_0.3": round(float(bias[~high].mean()), 3),
    }
    calls = np.array(calls, dtype=float)
    report["network_calls_median"] = {"direct": float(np.median(calls[:, 0])),
                                      "fitted": float(np.median(calls[:, 1]))}  # fmt: skip
    write_json_atomic(out / "summary.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
