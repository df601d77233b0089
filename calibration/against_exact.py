"""A diffusion study against the exact posterior, map by map (docs/results.md).

    python calibration/against_exact.py calibration/lognormal64-fast-test

For every map with both a diffusion and an exact result: the shift of the posterior mean
(mu_diff - mu_exact) / sigma_exact, the width ratio sigma_diff / sigma_exact, the z-scores of
the truth, and the HPD coverage of the truth at 68 and 95 % — overall (with standard errors)
and in bands of the true Omega_m and sigma_8, the layout of the held-out measurements in
shared/measurements.md. The C2ST accuracy against the exact posterior comes from the
study's report (``vs_exact``).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from diffinfer.calibration.study import load_results


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
    vs = {}
    if report_file.exists():  # written when the study finishes
        vs = json.loads(report_file.read_text())["analyses"]["diffusion"].get("vs_exact", {})

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
    if vs:
        print(f"C2ST vs exact: mean {vs['c2st_mean']:.2f} ({vs['c2st_maps']} maps)")
    print("\n| maps | n | shift Ω_m | shift σ_8 | width ratio Ω_m / σ_8 |")
    print("|---|---|---|---|---|")
    print(f"| all | {n} | {m[0]:+.2f} ± {s[0]:.2f} | {m[1]:+.2f} ± {s[1]:.2f} | "
          f"{width.mean(0)[0]:.2f} / {width.mean(0)[1]:.2f} |")  # fmt: skip
    for j, name, edges in ((0, "Ω_m", (0.1, 0.2, 0.3, 0.4, 0.5)), (1, "σ_8", (0.6, 0.7, 0.9, 1.0))):
        for lo, hi in itertools.pairwise(edges):
            if name == "σ_8" and (lo, hi) == (0.7, 0.9):
                continue
            sel = (truth[:, j] >= lo) & (truth[:, j] < hi)
            if sel.sum() < 2:
                continue
            mm, ww = shift[sel].mean(0), width[sel].mean(0)
            print(f"| {name} {lo:g}–{hi:g} | {sel.sum()} | {mm[0]:+.2f} | {mm[1]:+.2f} | "
                  f"{ww[0]:.2f} / {ww[1]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
