"""A diffusion study against the exact posterior, map by map (docs/results.md).

    python calibration/against_exact.py calibration/lognormal64-fast-test

For every map with both a diffusion and an exact result: the shift of the posterior mean
(mu_diff - mu_exact) / sigma_exact, the width ratio sigma_diff / sigma_exact, the z-scores of
the truth, and the HPD coverage of the truth at 68 and 95 % — overall (with standard errors)
and in bands of the true Omega_m and sigma_8; the classifier two-sample accuracy (C2ST,
k-NN) of the diffusion draws against the exact draws of every map; the HPD coverage curve's
maximum deviation and whether it lies inside its 99 % simultaneous band (from the study's
report.json). Ends with the acceptance checks of the network-bias work (shift, |shift|,
width, HPD, C2ST) and writes everything to ``STUDY/against_exact.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from diffinfer.calibration.compare import two_sample_accuracy
from diffinfer.calibration.results import load_results
from diffinfer.io import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study")
    args = parser.parse_args()
    diff = {int(r["index"]): r for r in load_results(args.study, "diffusion")}
    exact = {int(r["index"]): r for r in load_results(args.study, "exact")}
    common = sorted(set(diff) & set(exact))
    truth = np.array([diff[i]["truth"] for i in common])
    sd_e = np.array([np.sqrt(np.diag(exact[i]["cov"])) for i in common])
    sd_d = np.array([np.sqrt(np.diag(diff[i]["cov"])) for i in common])
    mu_e = np.array([exact[i]["mean"] for i in common])
    mu_d = np.array([diff[i]["mean"] for i in common])
    shift = (mu_d - mu_e) / sd_e
    width = sd_d / sd_e
    z_d, z_e = (mu_d - truth) / sd_d, (mu_e - truth) / sd_e
    level = np.array([float(diff[i]["credibility"]) for i in common])
    level_e = np.array([float(exact[i]["credibility"]) for i in common])
    evals = np.array([int(diff[i]["n_evaluations"]) for i in common])
    secs = np.array([float(diff[i]["seconds"]) for i in common])
    n = len(common)
    report_file = Path(args.study) / "report.json"

    def se(x: np.ndarray) -> np.ndarray:
        return x.std(axis=0, ddof=1) / np.sqrt(len(x))

    print(f"{n} maps; temperature {float(diff[common[0]]['temperature']):.3f}; "
          f"{evals.mean():.0f} evaluations per posterior (max {evals.max()}), "
          f"median {np.median(secs):.1f} s per posterior (one worker thread)")  # fmt: skip
    m, s = shift.mean(0), se(shift)
    print(f"mean shift [sigma_exact] Omega_m {m[0]:+.2f} ± {s[0]:.2f}, "
          f"sigma_8 {m[1]:+.2f} ± {s[1]:.2f}")  # fmt: skip
    a = np.abs(shift).mean(0)
    print(f"mean |shift| {a[0]:.2f} / {a[1]:.2f}; width ratio {width.mean(0)[0]:.2f} / "
          f"{width.mean(0)[1]:.2f}")  # fmt: skip
    print(f"z mean, std: diffusion {z_d.mean(0)[0]:+.2f}, {z_d.std(0, ddof=1)[0]:.2f} / "
          f"{z_d.mean(0)[1]:+.2f}, {z_d.std(0, ddof=1)[1]:.2f}; exact {z_e.mean(0)[0]:+.2f}, "
          f"{z_e.std(0, ddof=1)[0]:.2f} / {z_e.mean(0)[1]:+.2f}, "
          f"{z_e.std(0, ddof=1)[1]:.2f}")  # fmt: skip
    for p in (0.68, 0.95):
        c, ce = np.mean(level <= p), np.mean(level_e <= p)
        print(f"HPD coverage at {p:.0%}: diffusion {c:.2f} ± {np.sqrt(c * (1 - c) / n):.2f}, "
              f"exact {ce:.2f} ± {np.sqrt(ce * (1 - ce) / n):.2f}")  # fmt: skip
    c2st = np.array([two_sample_accuracy(np.asarray(diff[i]["draws"]),
                                         np.asarray(exact[i]["draws"]), seed=i)
                     for i in common])  # fmt: skip
    print(f"C2ST vs exact ({n} maps): mean {c2st.mean():.3f}, median {np.median(c2st):.3f}, "
          f"90th percentile {np.quantile(c2st, 0.9):.3f}")  # fmt: skip
    hpd = {}
    if report_file.exists():
        analysis = json.loads(report_file.read_text())["analyses"]["diffusion"]
        hpd = {k: analysis["hpd_coverage"][k] for k in ("max_deviation", "inside_band_99")}
        print(f"HPD coverage curve: max deviation {hpd['max_deviation']:.3f}, inside the 99 % "
              f"simultaneous band: {hpd['inside_band_99']} (report.json, "
              f"{analysis['n_maps']} maps)")  # fmt: skip
    print(
        "\n| maps | n | shift Ω_m | shift σ_8 | mean \\|shift\\| Ω_m / σ_8 "
        "| width ratio Ω_m / σ_8 |"
    )
    print("|---|---|---|---|---|---|")
    bands = {"all": np.ones(n, bool)}
    for j, name, edges in ((0, "Ω_m", (0.1, 0.2, 0.3, 0.4, 0.5)), (1, "σ_8", (0.6, 0.7, 0.9, 1.0))):
        for lo, hi in itertools.pairwise(edges):
            if name == "σ_8" and (lo, hi) == (0.7, 0.9):
                continue
            bands[f"{name} {lo:g}–{hi:g}"] = (truth[:, j] >= lo) & (truth[:, j] < hi)
    table = {}
    for label, sel in bands.items():
        if sel.sum() < 2:
            continue
        mm, ss = shift[sel].mean(0), se(shift[sel])
        aa, ww = np.abs(shift[sel]).mean(0), width[sel].mean(0)
        table[label] = {"n": int(sel.sum()), "shift": mm.tolist(), "shift_se": ss.tolist(),
                        "abs_shift": aa.tolist(), "width_ratio": ww.tolist()}  # fmt: skip
        print(f"| {label} | {sel.sum()} | {mm[0]:+.2f} ± {ss[0]:.2f} | {mm[1]:+.2f} ± "
              f"{ss[1]:.2f} | {aa[0]:.2f} / {aa[1]:.2f} | {ww[0]:.2f} / {ww[1]:.2f} |")  # fmt: skip
    low = table.get("Ω_m 0.1–0.2", {"shift": [np.nan, np.nan]})
    checks = {
        "|mean shift| < 0.1 (all)": bool(np.all(np.abs(m) < 0.1)),
        "|mean shift| < 0.1 (Ω_m < 0.2)": bool(np.all(np.abs(low["shift"]) < 0.1)),
        "mean |shift| < 0.3": bool(np.all(a < 0.3)),
        "width ratio in [0.95, 1.10]": bool(np.all((width.mean(0) >= 0.95)
                                                   & (width.mean(0) <= 1.10))),
        "HPD max deviation < 0.05, inside band": bool(hpd and hpd["max_deviation"] < 0.05
                                                      and hpd["inside_band_99"]),
        "C2ST median < 0.55": bool(np.median(c2st) < 0.55),
    }  # fmt: skip
    print()
    for name, ok in checks.items():
        print(f"{'pass' if ok else 'FAIL'}: {name}")
    write_json_atomic(Path(args.study) / "against_exact.json", {
        "command": f"python calibration/against_exact.py {args.study}", "n_maps": n,
        "mean_shift": m.tolist(), "mean_shift_se": s.tolist(), "mean_abs_shift": a.tolist(),
        "width_ratio": width.mean(0).tolist(),
        "z_diffusion": {"mean": z_d.mean(0).tolist(), "std": z_d.std(0, ddof=1).tolist()},
        "z_exact": {"mean": z_e.mean(0).tolist(), "std": z_e.std(0, ddof=1).tolist()},
        "hpd_coverage_68_95": [float(np.mean(level <= 0.68)), float(np.mean(level <= 0.95))],
        "hpd_coverage_68_95_exact": [float(np.mean(level_e <= 0.68)),
                                     float(np.mean(level_e <= 0.95))],
        "hpd_curve": hpd, "c2st": {"mean": float(c2st.mean()), "median": float(np.median(c2st)),
                                   "per_map": c2st.tolist()},
        "bands": table, "checks": checks,
        "evaluations_mean": float(evals.mean()), "seconds_median": float(np.median(secs)),
    })  # fmt: skip


if __name__ == "__main__":
    main()
