"""Markdown tables of the committed coverage studies (docs/calibration.md, docs/results.md).

    python calibration/summarize.py

For every study directory with a report.json: per analysis, the coverage metrics and, against
the exact posterior, bias, width ratio and classifier two-sample accuracy. For the network's
test study, the coverage after recalibration with the temperature fitted on the calibration
split, from the Gaussian form of tempering: a tempered posterior's covariance is tau times
the original, so the truth's HPD level becomes 1 - exp(-d^2 / (2 tau)) in two dimensions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffinfer.calibration import metrics
from diffinfer.calibration.report import agreement, min_detectable_deviation, verdict
from diffinfer.calibration.results import load_results
from diffinfer.likelihoods.temperature import fit_temperature, squared_distances

ROOT = Path("calibration")


def _nan_for_null(obj):
    """Reports write NaN as null (strict JSON): read it back as NaN for formatting."""
    if isinstance(obj, dict):
        return {k: _nan_for_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_for_null(v) for v in obj]
    return float("nan") if obj is None else obj


def study_verdict(rep: dict, seed: int) -> tuple[str, float]:
    """The verdict and minimum detectable deviation of one analysis. Reports written before
    the three-state verdict have neither, and their ``calibrated`` means only that every
    check passed: both follow from it, the number of maps and the study's seed."""
    if "verdict" in rep:
        return rep["verdict"], rep["min_detectable_deviation"]
    return (verdict(rep["calibrated"], rep["n_maps"], seed),
            min_detectable_deviation(rep["n_maps"], seed))  # fmt: skip


def coverage_row(name: str, a: str, rep: dict, seed: int = 0) -> str:
    z = rep["z_score"]
    state, mdd = study_verdict(rep, seed)
    return (
        f"| {name} | {a} | {rep['n_maps']} | {rep['hpd_coverage']['max_deviation']:.3f} | "
        f"{rep['hpd_coverage']['signed_area']:+.3f} | {rep['tarp']['max_deviation']:.3f} | "
        f"{rep['ranks']['Omega_m']['ks_pvalue']:.2f} / "
        f"{rep['ranks']['sigma_8']['ks_pvalue']:.2f} | "
        f"{z['Omega_m']['mean']:+.2f} ± {z['Omega_m']['mean_se']:.2f} / "
        f"{z['sigma_8']['mean']:+.2f} ± {z['sigma_8']['mean_se']:.2f} | "
        f"{z['Omega_m']['std']:.2f} / {z['sigma_8']['std']:.2f} | "
        f"{mdd:.3f} | {state} |"
    )


def agreement_row(name: str, a: str, vs: dict) -> str:
    b, ab, w = vs["bias_mean"], vs["abs_bias_mean"], vs["width_ratio_mean"]
    return (
        f"| {name} | {a} | {vs['n_maps']} | {b['Omega_m']:+.2f} / {b['sigma_8']:+.2f} | "
        f"{ab['Omega_m']:.2f} / {ab['sigma_8']:.2f} | {w['Omega_m']:.2f} / {w['sigma_8']:.2f} | "
        f"{vs['c2st_mean']:.2f} ({vs['c2st_maps']} maps) |"
    )


def main() -> None:
    studies = sorted(p.parent for p in ROOT.glob("*/report.json"))
    print("| study | analysis | maps | HPD max dev | HPD signed area | TARP max dev | "
          "rank KS p (Ω_m / σ_8) | z mean (Ω_m / σ_8) | z std | min detectable dev | "
          "verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    reports = {}
    for s in studies:
        rep = _nan_for_null(json.loads((s / "report.json").read_text()))
        reports[s.name] = rep
        for a, r in rep["analyses"].items():
            print(coverage_row(s.name, a, r, seed=int(rep["study"].get("seed", 0))))
    print()
    print("| study | analysis | maps | mean bias [σ_exact] (Ω_m / σ_8) | mean abs bias | "
          "width ratio | C2ST accuracy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, rep in reports.items():
        for a, r in rep["analyses"].items():
            if r.get("vs_exact"):
                print(agreement_row(name, a, r["vs_exact"]))
    # studies without their own exact analysis, on the maps of lognormal64-test
    exact = load_results(ROOT / "lognormal64-test", "exact")
    for name in ("lognormal64-l0",):
        if (ROOT / name).is_dir() and exact:
            vs = agreement(load_results(ROOT / name, "diffusion"), exact)
            if vs:
                print(agreement_row(name, "diffusion", vs))
    cal, test = ROOT / "lognormal64-calibration", ROOT / "lognormal64-test"
    # the per-map results are not committed (calibration/*/results/): rerun the studies first
    if (cal / "results").is_dir() and (test / "results").is_dir():
        fit = fit_temperature(load_results(cal, "diffusion"))
        res = load_results(test, "diffusion")
        print(f"\nfitted temperature {fit['temperature']:.3f} ± {fit['se']:.3f} "
              f"({fit['n_maps']} calibration maps)")  # fmt: skip
        for tau, label in ((1.0, "before"), (fit["temperature"], "after (Gaussian)")):
            d2 = squared_distances(res)
            levels = 1 - np.exp(-d2 / (2 * tau))
            u = metrics.uniformity_check(levels)
            print(f"{label}: HPD max deviation {u['max_deviation']:.3f}, signed area "
                  f"{u['signed_area']:+.3f}, inside 95 % band {u['inside_band']}, "
                  f"mean d^2/2 {d2.mean() / 2 / tau:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
